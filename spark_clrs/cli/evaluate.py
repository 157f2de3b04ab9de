r"""Command line: train and score one program under an evaluation profile.

    python -m spark_clrs.evaluate seeds/triplet_gmpnn.py --profile=quick [--seeds=0,1] \
        [--workdir=DIR] [--train_steps=20 --hidden=32 ...]

Prints exactly one JSON object of metrics (SPEC §4) on stdout; logs go to stderr. The
program runs in a sandboxed child process (``--in_process`` skips the sandbox, for
trusted programs only). Every field of :class:`spark_clrs.evaluation.profiles.EvalProfile` can be
overridden by the flag of the same name.

Exit status: 0 ok; 1 the evaluation failed (crash, timeout, memory, error while
training); 2 bad usage (unknown profile or field, missing program, or a program that
does not load or has no ``get_processor_factory``). Errors are one line on stderr.
"""

from __future__ import annotations

from spark_clrs.cli import quiet  # isort: skip  (first: hides TF/XLA/CUDA C++ log lines)
import dataclasses
import json
import pathlib
import sys
import tempfile
from typing import Any

from absl import app, flags

import processors
from spark_clrs.evaluation import evaluator, profiles

_PROFILE = flags.DEFINE_string("profile", "quick",
                               f"Evaluation profile (SPEC §4): one of {sorted(profiles.PROFILES)}.")
_SEEDS_HELP = "Training seeds; several give mean and std."


def _seeds_flag() -> flags.FlagHolder:
  """--seeds. dm-clrs 2.0.3 defines a global list flag ``seeds`` when it is imported
  (``clrs_text.generate_clrs_text``), so we share that flag instead of redefining it."""
  if "seeds" not in flags.FLAGS:
    return flags.DEFINE_list("seeds", ["0"], _SEEDS_HELP)
  flag = flags.FLAGS["seeds"]
  flag.help = _SEEDS_HELP
  flags.FLAGS.set_default("seeds", ["0"])
  return flags.FlagHolder(flags.FLAGS, flag)


_SEEDS = _seeds_flag()
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Private directory of the child (default: a temporary one).")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", None,
                                "Wall-clock limit of the child (default: from the profile).")
_MEMORY_MB = flags.DEFINE_integer("memory_mb", None,
                                  "Resident-memory limit of the child in MiB.")
_SANDBOX = flags.DEFINE_enum("sandbox", "bwrap", ["bwrap", "none"],
                             "Isolation of the child: the bubblewrap jail (refuses to run "
                             "where it cannot be created) or none (explicit opt-in: only the "
                             "process limits).")
_IN_PROCESS = flags.DEFINE_boolean("in_process", False,
                                   "Run in this process, without the sandbox (trusted "
                                   "programs only).")


def _define_override_flags() -> dict[str, flags.FlagHolder]:
  """One flag per profile field, default None (= keep the profile's value)."""
  holders = {}
  defaults = profiles.PROFILES["spark"]
  for name in profiles.field_names():
    value = getattr(defaults, name)
    help_text = f"Override the profile's {name}."
    if isinstance(value, bool):
      holders[name] = flags.DEFINE_boolean(name, None, help_text)
    elif isinstance(value, int):
      holders[name] = flags.DEFINE_integer(name, None, help_text)
    elif isinstance(value, float):
      holders[name] = flags.DEFINE_float(name, None, help_text)
    elif isinstance(value, tuple):
      holders[name] = flags.DEFINE_list(name, None, help_text + " Comma-separated.")
    else:
      holders[name] = flags.DEFINE_string(name, None, help_text)
  return holders


_OVERRIDES = _define_override_flags()


class UsageError(Exception):
  """Bad command line or program: exit status 2."""


def resolve_profile() -> profiles.EvalProfile:
  """The profile named by --profile with the override flags applied."""
  overrides: dict[str, Any] = {name: h.value for name, h in _OVERRIDES.items()
                               if h.value is not None}
  if "train_lengths" in overrides:
    try:
      overrides["train_lengths"] = tuple(int(n) for n in overrides["train_lengths"])
    except ValueError as e:
      raise UsageError(f"--train_lengths must be comma-separated integers: {e}") from e
  try:
    return profiles.get_profile(_PROFILE.value, **overrides)
  except ValueError as e:
    raise UsageError(str(e)) from e


def parse_seeds(values: list[str]) -> list[int]:
  try:
    seeds = [int(s) for s in values]
  except ValueError as e:
    raise UsageError(f"--seeds must be comma-separated integers, got {values}") from e
  if not seeds:
    raise UsageError("--seeds is empty; pass at least one seed, e.g. --seeds=0")
  return seeds


def run(program: str) -> dict[str, Any]:
  """Evaluates ``program`` as the flags say; returns the metrics.

  Raises:
    UsageError: bad flags or a program that does not load.
    RuntimeError: the evaluation failed (one-line reason).
  """
  profile = resolve_profile()
  seeds = parse_seeds(_SEEDS.value)
  try:
    path = processors.resolve(program)
  except processors.ProgramLoadError as e:
    raise UsageError(str(e)) from e
  if _IN_PROCESS.value:
    try:
      return evaluator.evaluate_program(str(path), profile, seeds)
    except processors.ProgramLoadError as e:
      raise UsageError(str(e)) from e
  limits = evaluator.default_limits(profile, len(seeds))
  if _TIMEOUT_S.value is not None:
    limits = dataclasses.replace(limits, timeout_s=_TIMEOUT_S.value)
  if _MEMORY_MB.value is not None:
    limits = dataclasses.replace(limits, memory_mb=_MEMORY_MB.value)
  if _WORKDIR.value:
    result = evaluator.evaluate(path, profile, seeds, workdir=pathlib.Path(_WORKDIR.value),
                                limits=limits)
  else:
    with tempfile.TemporaryDirectory(prefix="spark_eval_") as tmp:
      result = evaluator.evaluate(path, profile, seeds, workdir=pathlib.Path(tmp),
                                  limits=limits)
  reason = result.reason.removeprefix("error: ")
  if result.is_program_error:
    raise UsageError(reason)
  if not result.ok:
    raise RuntimeError(reason)
  metrics = dict(result.metrics or {})
  metrics["wall_seconds"] = round(result.wall_seconds, 3)
  metrics["child_peak_rss_mb"] = round(result.peak_rss_mb, 1)
  return metrics


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= 500 else text[:500] + "..."


def main(argv: list[str]) -> None:
  quiet.apply_flag()
  if len(argv) != 2:
    print("error: expected exactly one PROGRAM (a .py file or a seed name such as "
          f"triplet_gmpnn), got {argv[1:]}", file=sys.stderr)
    sys.exit(2)
  if not _IN_PROCESS.value:
    from spark_clrs.isolation import jail  # pylint: disable=g-import-not-at-top

    jail.require_for_cli(_SANDBOX.value)  # Fail closed before candidate code runs.
  try:
    metrics = run(argv[1])
  except UsageError as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except  # CLI boundary: one line, no wall.
    print(f"error: {_one_line(e)}", file=sys.stderr)
    sys.exit(1)
  print(json.dumps(metrics))


def entry_point() -> None:
  quiet.define_flag()
  app.run(main)


if __name__ == "__main__":
  entry_point()


__all__ = ["UsageError", "entry_point", "main", "parse_seeds", "resolve_profile", "run"]
