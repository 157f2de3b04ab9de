"""From flags to what a search runs with: the one place a flagfile becomes a configuration.

``python -m spark_clrs.search`` (absl flags), ``spark_clrs.search(flagfile, **overrides)``
and compare's cells all come through here:

* :func:`config_of` — an absl flagfile (nested ``--flagfile=`` lines resolve from the
  working directory) plus keyword overrides, as one validated ``SearchConfig``;
* :func:`open_search` — that configuration's run directory, new or resumed (rundir.py
  compares it with the run's own ``config.flags``);
* :func:`profile_of`, :func:`llm_config_of`, :func:`seed_program_seeds` — the evaluation
  profile, the LLM client settings and the seed program's training seeds a configuration
  stands for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spark_clrs import config as config_lib
from spark_clrs.search import rundir

ROLES = ("router", "refiner", "rewriter")  # The LLM roles a summary lists models for.


def config_of(flagfile: str | None = None, **overrides: Any) -> config_lib.SearchConfig:
  """A config from an optional absl flagfile plus keyword overrides (flag names)."""
  base = config_lib.parse_flagfile(flagfile) if flagfile else config_lib.SearchConfig()
  return config_lib.from_mapping(overrides, base)


def open_search(flagfile: str | None = None, **overrides: Any) -> rundir.OpenedRun:
  """The run directory of ``config_of(flagfile, **overrides)`` (created or resumed)."""
  return rundir.open_run(config_of(flagfile, **overrides))


def profile_of(config: config_lib.SearchConfig) -> Any:
  """The ``EvalProfile`` named by ``--profile`` with ``--profile_overrides`` applied.

  Raises:
    ConfigError: an unknown profile, field or value (one line naming the fix).
  """
  from spark_clrs.evaluation import profiles

  overrides = {}
  fields = {f.name for f in dataclasses.fields(profiles.EvalProfile)}
  for item in config.profile_overrides:
    name, _, text = item.partition("=")
    if name not in fields or name == "name":
      raise config_lib.ConfigError(
          f"--profile_overrides={item!r}: {name!r} is not a profile field; use one of "
          f"{', '.join(profiles.field_names())}")
    overrides[name] = _parse_value(text, getattr(profiles.PROFILES["spark"], name))
  try:
    return profiles.get_profile(config.profile, **overrides)
  except ValueError as e:
    raise config_lib.ConfigError(f"--profile={config.profile}: {e}") from None


def llm_config_of(config: config_lib.SearchConfig) -> Any:
  """The ``llm.LLMConfig`` of a search's ``--llm_*`` and per-role model flags (llm owns it)."""
  from spark_clrs import llm

  return llm.config_of(config)


def seed_program_seeds(config: config_lib.SearchConfig) -> tuple[int, ...]:
  """Training seeds of the seed program: the candidates' seeds, then the next integers
  until there are ``--seed_program_seeds`` (its spread is every single-seed fitness's
  seed term)."""
  seeds = list(config.training_seeds)
  extra = max(seeds) + 1
  while len(seeds) < config.seed_program_seeds:
    seeds.append(extra)
    extra += 1
  return tuple(seeds)


def _parse_value(text: str, like: Any) -> Any:
  """Parses a profile override value as the type of the profile field ``like``."""
  text = text.strip()
  try:
    if isinstance(like, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(like, int):
      return int(text)
    if isinstance(like, float):
      return float(text)
    if isinstance(like, tuple):
      return tuple(int(v) for v in text.replace(":", ",").strip("()[]").split(",") if v.strip())
  except ValueError:
    raise config_lib.ConfigError(f"--profile_overrides: {text!r} is not a valid "
                                 f"{type(like).__name__}") from None
  return text
