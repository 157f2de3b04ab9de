"""Command line: check one candidate program and print the SPEC §3 JSON verdict.

    python -m spark_clrs.check CANDIDATE.py [--parent PARENT.py --scope ACTION]
        [--max_params N] [--max_macs N] [--hidden 128]

prints ``{"feasible": bool, "stage": str, "reason": str, "param_count": int, "macs": int}``
and exits 0 (feasible), 1 (rejected) or 2 (usage error: bad path, unknown scope, bad
flag). Without ``--parent`` the scope stage is skipped; ``--parent`` takes a path or a
seed name. Candidate code runs only in the jailed check child; the budget's numbers
(``param_count``, ``macs``) are computed here from what it exported (``checks.budget``).
"""

from __future__ import annotations

from spark_clrs.cli import quiet  # isort: skip  (first: hides TF/XLA/CUDA C++ log lines)
import pathlib
import sys
import tempfile

from absl import app, flags

from spark_clrs import checks
from spark_clrs.cli import scaffold
from spark_clrs.isolation import sandbox
from spark_clrs.programs import regions

_PARENT = flags.DEFINE_string("parent", None, "Parent program (path or seed name); enables "
                              "the scope stage.")
_SCOPE = flags.DEFINE_list("scope", None, "Factor(s) the candidate may change, e.g. ACTION "
                           "(default with --parent: every factor, skeleton frozen).")
_MAX_PARAMS = flags.DEFINE_integer("max_params", None, "Cap on processor parameters "
                                   "(default: --budget_factor x the --budget_seed's).",
                                   lower_bound=1)
_MAX_MACS = flags.DEFINE_integer("max_macs", None, "Cap on MACs of one processor step on one "
                                 "graph (default: --budget_factor x the --budget_seed's).",
                                 lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden", 128, "Processor width H (out_size).", lower_bound=1)
_BUDGET_SEED = flags.DEFINE_string("budget_seed", "triplet_gmpnn", "Seed defining the default "
                                   "budget caps.")
_BUDGET_FACTOR = flags.DEFINE_float("budget_factor", 4.0, "Default caps = this x the seed's "
                                    "parameters and MACs.", lower_bound=0.0)
_TIMEOUT_S = flags.DEFINE_float("timeout_s", checks.DEFAULT_LIMITS.timeout_s,
                                "Wall-clock limit of the jailed stages.", lower_bound=1.0)
_MEMORY_MB = flags.DEFINE_integer("memory_mb", checks.DEFAULT_LIMITS.memory_mb,
                                  "Resident-memory limit of the check child.", lower_bound=256)
_SANDBOX = flags.DEFINE_enum("sandbox", "bwrap", ["bwrap", "none"],
                             "Isolation of the check child: the bubblewrap jail (refuses to "
                             "run where it cannot be created) or none (explicit opt-in: only "
                             "the process limits).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Private directory of the check child "
                               "(default: a temporary directory, removed afterwards).")


class UsageError(Exception):
  """A problem with the command line, reported in one line with exit status 2."""


def _read(path_or_name: str, what: str) -> str:
  import processors

  try:
    return processors.resolve(path_or_name).read_text()
  except (processors.ProgramLoadError, OSError) as e:
    raise UsageError(f"{what}: {e}") from e


def _run(argv: list[str]) -> checks.Verdict:
  if len(argv) != 2:
    raise UsageError("usage: python -m spark_clrs.check CANDIDATE.py [--parent PARENT.py "
                     "--scope ACTION] [--max_params N --max_macs N --hidden H]")
  candidate = pathlib.Path(argv[1])
  if not candidate.is_file():
    raise UsageError(f"candidate file {str(candidate)!r} does not exist; pass a .py path")
  candidate_text = candidate.read_text()
  parent_text = None
  scope = _SCOPE.value or None
  if _PARENT.value:
    parent_text = _read(_PARENT.value, "--parent")
    try:
      names = regions.region_names(parent_text)
    except regions.RegionError as e:
      raise UsageError(f"--parent {_PARENT.value}: {e}") from e
    unknown = [s for s in scope or () if s not in names]
    if unknown:
      raise UsageError(f"unknown --scope {','.join(unknown)}; the parent's factors are "
                       f"{', '.join(names) or 'none'}")
  elif scope:
    raise UsageError("--scope needs --parent (the scope is checked against the parent)")
  budget = None
  if _MAX_PARAMS.value is not None or _MAX_MACS.value is not None:
    budget = checks.Budget(max_param_count=_MAX_PARAMS.value, max_macs=_MAX_MACS.value)
  limits = sandbox.Limits(timeout_s=_TIMEOUT_S.value, memory_mb=_MEMORY_MB.value,
                          max_output_bytes=checks.DEFAULT_LIMITS.max_output_bytes)
  kwargs = dict(parent_text=parent_text, scope=scope, budget=budget, limits=limits,
                hidden=_HIDDEN.value, budget_seed=_BUDGET_SEED.value,
                budget_factor=_BUDGET_FACTOR.value)
  if _WORKDIR.value:
    return checks.run_checks(candidate_text, workdir=pathlib.Path(_WORKDIR.value), **kwargs)
  with tempfile.TemporaryDirectory(prefix="spark_check_") as tmp:
    return checks.run_checks(candidate_text, workdir=pathlib.Path(tmp), **kwargs)


def main(argv: list[str]) -> None:
  quiet.apply_flag()
  from spark_clrs.isolation import jail  # pylint: disable=g-import-not-at-top

  jail.require_for_cli(_SANDBOX.value)  # Fail closed before candidate code runs.
  try:
    verdict = _run(argv)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(verdict.to_json())
  sys.exit(0 if verdict.feasible else 1)


def run() -> None:
  quiet.define_flag()
  app.run(main, flags_parser=scaffold.parse_flags)


if __name__ == "__main__":
  run()
