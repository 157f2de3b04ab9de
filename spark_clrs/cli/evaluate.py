r"""Command line: train and score one program under an evaluation profile.

    python -m spark_clrs.evaluate seeds/triplet_gmpnn.py --profile=quick [--seeds=0,1] \
        [--workdir=DIR] [--train_steps=20 --hidden=32 ...]

Prints exactly one JSON object of metrics (SPEC §4) on stdout; logs go to stderr. The
program runs in the jail (:mod:`spark_clrs.evaluation.evaluate`) and this process scores
it. ``--in_process --unsafe_no_jail`` instead runs it in this process with no jail at all
(trusted programs only; one line on stderr says so); ``--in_process`` alone is refused.
Every field of :class:`spark_clrs.evaluation.profiles.EvalProfile` can be overridden by
the flag of the same name.

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
from spark_clrs.evaluation import evaluate, in_process, profiles
from spark_clrs.isolation import exchange
from spark_clrs.messages import error_line

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
                                   "Run the program in this process, with no jail: refused "
                                   "unless --unsafe_no_jail is given too.")
_UNSAFE_NO_JAIL = flags.DEFINE_boolean("unsafe_no_jail", False,
                                       "With --in_process: yes, run the program unjailed in "
                                       "this process (it can do anything this user can; "
                                       "trusted programs only).")


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
    print(f"warning: UNSAFE: {path.name} runs in this process WITHOUT the jail "
          "(--in_process --unsafe_no_jail)", file=sys.stderr, flush=True)
    try:
      return in_process.evaluate_program(str(path), profile, seeds)
    except processors.ProgramLoadError as e:
      raise UsageError(str(e)) from e
  limits = evaluate.default_limits(profile, len(seeds))
  if _TIMEOUT_S.value is not None:
    limits = dataclasses.replace(limits, timeout_s=_TIMEOUT_S.value)
  if _MEMORY_MB.value is not None:
    limits = dataclasses.replace(limits, memory_mb=_MEMORY_MB.value)
  if _WORKDIR.value:
    result = evaluate.evaluate(path, profile, seeds, workdir=pathlib.Path(_WORKDIR.value),
                               limits=limits)
  else:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="spark_eval_"))
    try:
      result = evaluate.evaluate(path, profile, seeds, workdir=tmp, limits=limits)
    finally:  # What the jail left, removed without following its links (exchange).
      try:
        exchange.unlink(tmp.parent, tmp.name)
      except exchange.BoundaryError as e:
        print(f"warning: could not remove {tmp}: {e}", file=sys.stderr)
  reason = result.reason.removeprefix("error: ")
  if result.is_program_error:
    raise UsageError(reason)
  if not result.ok:
    raise RuntimeError(reason)
  metrics = dict(result.metrics or {})
  metrics["wall_seconds"] = round(result.wall_seconds, 3)
  metrics["child_peak_rss_mb"] = round(result.peak_rss_mb, 1)
  return metrics


def check_unsafe_flags() -> None:
  """``--in_process`` runs candidate code unjailed: only when asked for as unsafe.

  Raises:
    UsageError: ``--in_process`` without ``--unsafe_no_jail``, or the reverse.
  """
  if _IN_PROCESS.value and not _UNSAFE_NO_JAIL.value:
    raise UsageError("--in_process runs the program in this process with no jail; add "
                     "--unsafe_no_jail to do that anyway (trusted programs only), or drop "
                     "--in_process to run it jailed")
  if _UNSAFE_NO_JAIL.value and not _IN_PROCESS.value:
    raise UsageError("--unsafe_no_jail only applies to --in_process")


def main(argv: list[str]) -> None:
  quiet.apply_flag()
  if len(argv) != 2:
    print("error: expected exactly one PROGRAM (a .py file or a seed name such as "
          f"triplet_gmpnn), got {argv[1:]}", file=sys.stderr)
    sys.exit(2)
  try:
    check_unsafe_flags()
  except UsageError as e:
    print(f"error: {error_line(e)}", file=sys.stderr)
    sys.exit(2)
  if not _IN_PROCESS.value:
    from spark_clrs.isolation import jail  # pylint: disable=g-import-not-at-top

    jail.require_for_cli(_SANDBOX.value)  # Fail closed before candidate code runs.
  try:
    metrics = run(argv[1])
  except UsageError as e:
    print(f"error: {error_line(e)}", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except  # CLI boundary: one line, no wall.
    print(f"error: {error_line(e)}", file=sys.stderr)
    sys.exit(1)
  print(json.dumps(metrics))


def entry_point() -> None:
  quiet.define_flag()
  app.run(main)


if __name__ == "__main__":
  entry_point()


__all__ = ["UsageError", "check_unsafe_flags", "entry_point", "main", "parse_seeds",
           "resolve_profile", "run"]
