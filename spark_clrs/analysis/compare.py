"""Compare strategies under one budget: ``python -m spark_clrs.compare``.

The paper's main table pits SPARK against its ablations and other LLM
searches with the same number of proposals, profile and seeds. This module
runs that grid on the ordinary search engine, one run directory per
(strategy, seed)::

    python -m spark_clrs.compare --flagfile=quick.flags --strategies=spark,mutation \\
        --seeds=0,1 --iterations=4 --output=runs/compare

    OUTPUT/<strategy>/seed<k>/      a normal run directory (SPEC §5)
    OUTPUT/compare.md, compare.json the per-strategy table (mean ± std over seeds)
    OUTPUT/index.html               the same as one HTML page (viewer.py), runs linked
    OUTPUT/compare_best_so_far.png  one band per strategy (+ _scopes.png, _rates.png)
    OUTPUT/cache/jax/               one JAX compilation cache shared by all the runs

Every search flag applies to every run, except ``--strategy``, ``--seed`` and
``--output``, which the grid sets (``--output`` is the comparison's root).
Re-running the same command resumes: a finished run is not touched, an
unfinished one resumes where it stopped. The table is report.py's aggregation
of the runs' own summaries, so ``python -m spark_clrs.report`` on the same runs
gives the same numbers.
"""

from __future__ import annotations

from spark_clrs.cli import quiet  # isort: skip  (first: hides TF/XLA/CUDA C++ log lines)
import contextlib
import dataclasses
import json
import os
import pathlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from spark_clrs import config as config_lib
from spark_clrs.analysis import report as report_lib
from spark_clrs.analysis import tables
from spark_clrs.evaluation import noise
from spark_clrs.search import rundir

_JAX_CACHE_VAR = "JAX_COMPILATION_CACHE_DIR"

class CompareError(RuntimeError):
  """The comparison cannot go on; the message is one line naming the run and the fix."""


@dataclasses.dataclass(frozen=True)
class Cell:
  """One (strategy, seed) run of the grid and what this invocation did with it.

  Attributes:
    strategy: the ``--strategy`` of the run.
    seed: the ``--seed`` of the run.
    run_dir: its run directory.
    action: ``skipped`` (finished before) or ``ran`` (started or resumed now).
  """

  strategy: str
  seed: int
  run_dir: pathlib.Path
  action: str


@dataclasses.dataclass(frozen=True)
class CompareResult:
  """The grid, its aggregation and the files written."""

  output: pathlib.Path
  cells: tuple[Cell, ...]
  report: report_lib.Report
  files: report_lib.ReportFiles

  def __str__(self) -> str:
    ran = sum(c.action == "ran" for c in self.cells)
    return (f"compare: {len(self.cells)} run(s) ({ran} run now, {len(self.cells) - ran} "
            f"finished before); table {self.files.markdown}, plot {self.files.best_so_far}"
            f"{', page ' + str(self.files.html) if self.files.html else ''}")


def parse_strategies(strategies: str | Sequence[str]) -> tuple[str, ...]:
  """Validates a list (or comma-separated string) of strategy names.

  Raises:
    CompareError: empty, duplicated or unknown names (the message lists valid ones).
  """
  names = [s.strip() for s in (strategies.split(",") if isinstance(strategies, str)
                               else strategies) if s.strip()]
  if not names:
    raise CompareError("--strategies is empty; name at least one of "
                       f"{', '.join(config_lib.STRATEGIES)}")
  unknown = [s for s in names if s not in config_lib.STRATEGIES]
  if unknown:
    raise CompareError(f"unknown strateg{'y' if len(unknown) == 1 else 'ies'} "
                       f"{', '.join(unknown)}; valid: {', '.join(config_lib.STRATEGIES)}")
  if len(set(names)) != len(names):
    raise CompareError(f"--strategies={','.join(names)} names a strategy twice")
  return tuple(names)


def parse_seeds(seeds: str | Sequence[int | str]) -> tuple[int, ...]:
  """Validates a list (or comma-separated string) of distinct integer seeds."""
  items = [s for s in (seeds.split(",") if isinstance(seeds, str) else seeds)
           if str(s).strip()]
  try:
    values = tuple(int(str(s).strip()) for s in items)
  except ValueError:
    raise CompareError(f"--seeds={seeds!r}: every seed must be an integer, e.g. "
                       "--seeds=0,1,2") from None
  if not values:
    raise CompareError("--seeds is empty; give at least one, e.g. --seeds=0,1,2")
  if len(set(values)) != len(values):
    raise CompareError(f"--seeds={','.join(map(str, values))} names a seed twice")
  return values


def run_dir_for(output: str | pathlib.Path, strategy: str, seed: int) -> pathlib.Path:
  """The run directory of one cell: ``OUTPUT/<strategy>/seed<k>``."""
  return pathlib.Path(output).expanduser() / strategy / f"seed{seed}"


def cell_config(base: config_lib.SearchConfig, output: str | pathlib.Path, strategy: str,
                seed: int) -> config_lib.SearchConfig:
  """The search configuration of one cell: ``base`` with its strategy, seed and directory."""
  return base.replace(strategy=strategy, seed=seed,
                      output=str(run_dir_for(output, strategy, seed)), resume=True)


def _finished(config: config_lib.SearchConfig) -> bool:
  """Whether the cell's run holds all ``config.iterations`` proposals, none pending.

  Raises:
    CompareError: the directory holds a run with other run-defining settings.
  """
  run = rundir.RunDir(pathlib.Path(config.output))
  if not run.config_path.is_file():
    return False
  try:
    previous = config_lib.parse_flagfile(str(run.config_path))
  except config_lib.ConfigError as e:
    raise CompareError(f"{run.config_path} cannot be read ({e}); fix it or choose another "
                       "--output") from None
  differing = config_lib.run_defining_differences(previous, config)
  if differing:
    raise CompareError(f"{run.root} holds a run with different settings: "
                       f"{'; '.join(differing)}; re-run compare with the flags it was made "
                       "with or choose another --output")
  if not run.summary_path.is_file():
    return False
  try:
    summary = json.loads(run.summary_path.read_text())
  except ValueError:
    return False
  spent = bool((summary.get("budget") or {}).get("spent"))
  return (not summary.get("pending") and
          (spent or int(summary.get("proposals") or 0) >= config.iterations))


def _check_output(output: pathlib.Path) -> None:
  if output.exists() and not output.is_dir():
    raise CompareError(f"--output={output} is a file; choose a directory")
  if (output / "archive.sqlite").exists() or (output / "config.flags").exists():
    raise CompareError(f"--output={output} is a search run directory; give the comparison "
                       "its own --output, e.g. runs/compare")


@contextlib.contextmanager
def _shared_compilation_cache(base: config_lib.SearchConfig,
                              root: pathlib.Path) -> Iterator[None]:
  """Points every run at one JAX compilation cache, ``OUTPUT/cache/jax``.

  Runs of the grid train the same seed program (and often the same children), so one
  cache compiles each computation once for the whole comparison. An explicit
  ``$JAX_COMPILATION_CACHE_DIR`` or ``--compilation_cache=false`` is respected.
  """
  if not base.compilation_cache or os.environ.get(_JAX_CACHE_VAR):
    yield
    return
  os.environ[_JAX_CACHE_VAR] = str(root / "cache" / "jax")
  try:
    yield
  finally:
    os.environ.pop(_JAX_CACHE_VAR, None)


def _run_cell(base: config_lib.SearchConfig, root: pathlib.Path, strategy: str, seed: int,
              counter: str, stream: TextIO) -> Cell:
  """Runs or resumes one (strategy, seed) search unless it is finished."""
  from spark_clrs.search.api import search
  from spark_clrs.search.controller import SearchError

  cfg = cell_config(base, root, strategy, seed)
  where = f"{counter} {strategy} seed {seed} ({cfg.output})"
  if _finished(cfg):
    print(f"compare: {where}: finished before, not re-run", file=stream)
    return Cell(strategy, seed, pathlib.Path(cfg.output), "skipped")
  print(f"compare: {where}: running", file=stream)
  try:
    search(**cfg.to_dict())
  except (config_lib.ConfigError, rundir.RunDirError, SearchError) as e:
    raise CompareError(f"{strategy} seed {seed}: {e}") from None
  return Cell(strategy, seed, pathlib.Path(cfg.output), "ran")


def compare(strategies: str | Sequence[str], seeds: str | Sequence[int], *,
            output: str | pathlib.Path, base: config_lib.SearchConfig | None = None,
            flagfile: str | None = None, band: str = "std", stream: TextIO | None = None,
            **overrides: Any) -> CompareResult:
  """Runs (or resumes) every (strategy, seed) search and writes the comparison table.

  Args:
    strategies: strategy names (``--strategy`` values), e.g. ``["spark", "mutation"]``.
    seeds: run seeds, e.g. ``[0, 1, 2]``.
    output: the comparison's root directory.
    base: search settings shared by all runs (default: ``flagfile`` + ``overrides``).
    flagfile: an absl flagfile of search flags, e.g. ``"dfs.flags"``.
    band: ``std`` (mean ± std) or ``minmax`` bands in the plots.
    stream: where the progress lines go (default stderr).
    **overrides: search flags by name, e.g. ``iterations=10, profile="quick"``.

  Raises:
    CompareError: bad grid, or a run that cannot be made (one line naming it and the fix).
  """
  from spark_clrs.search.api import make_config

  stream = stream or sys.stderr
  names, values = parse_strategies(strategies), parse_seeds(seeds)
  if band not in report_lib.BANDS:
    raise CompareError(f"--band={band!r} is not one of {', '.join(report_lib.BANDS)}")
  root = pathlib.Path(output).expanduser()
  _check_output(root)
  if base is not None and flagfile:
    raise CompareError("give either base or flagfile, not both; read the flagfile with "
                       "spark_clrs.search.make_config(flagfile) first")
  try:
    base = (config_lib.from_mapping(overrides, base) if base is not None
            else make_config(flagfile, **overrides))
  except config_lib.ConfigError as e:
    raise CompareError(str(e)) from None
  cells = []
  grid = [(s, k) for s in names for k in values]
  with _shared_compilation_cache(base, root):
    for i, (strategy, seed) in enumerate(grid, start=1):
      cells.append(_run_cell(base, root, strategy, seed, f"[{i}/{len(grid)}]", stream))
  report = report_lib.Report.of(report_lib.load_runs([c.run_dir for c in cells]), names)
  settings = {"strategies": list(names), "seeds": list(values),
              "iterations": base.iterations, "profile": base.profile,
              "profile_overrides": list(base.profile_overrides),
              "llm_model": base.llm_model or "spark/offline",
              "seed_program": base.seed_program, "factors": list(base.factors),
              "cells": [{"strategy": c.strategy, "seed": c.seed, "run_dir": str(c.run_dir)}
                        for c in cells]}
  previous = root / "compare.json"
  if previous.is_file():
    try:
      old = json.loads(previous.read_text()).get("compare", {}).get("cells", [])
    except ValueError:
      old = []
    if old and old != settings["cells"]:
      print(f"compare: {previous} covered {len(old)} run(s); it now covers the "
            f"{len(cells)} of this grid", file=stream)
  settings["budget"] = budget_text(base)
  settings["proposer_note"] = report.proposer_note
  title = (f"Strategy comparison: {base.profile} profile, {settings['budget']}, "
           f"seeds {','.join(map(str, values))}, LLM {settings['llm_model']}")
  rows = budget_rows(report)
  files = report_lib.write(report, root, prefix="compare", title=title, band_kind=band,
                           extra={"compare": settings, "budget_and_noise": rows},
                           overwrite=True)
  _insert_budget_table(files.markdown, rows)
  return CompareResult(output=root, cells=tuple(cells), report=report, files=files)


def budget_text(config: config_lib.SearchConfig) -> str:
  """What every run of the grid was given, e.g. ``budget 40 evaluations (proposals)``."""
  if config.budget == "evaluations":
    return f"budget {config.iterations} evaluations (proposals) per run"
  unit = "LLM tokens" if config.budget == "tokens" else "USD of LLM cost"
  return (f"budget {config.budget_amount:g} {unit} per run (at most {config.iterations} "
          "proposals)")


def budget_rows(report: report_lib.Report) -> list[dict[str, Any]]:
  """Per run: the fitness with its noise and what the run spent (the table's rows)."""
  rows = []
  for r in report.runs:
    s = r.summary
    llm = s.get("llm") or {}
    best = s.get("best_metrics") or {}
    rows.append({
        "strategy": r.strategy, "seed": r.seed, "run_dir": str(r.root),
        "best_ood_val_acc": s.get("best_ood_val_acc"),
        "best_ood_val_acc_text": noise.format_metric(best),
        "best_ood_acc_text": noise.format_metric(best, "ood_acc"),
        "seed_ood_val_acc_text": (s.get("seed_ood_val_acc_noise") or {}).get("text"),
        "proposals": s.get("proposals"), "evaluations": s.get("evaluations"),
        "duplicates": s.get("duplicates"), "unchanged": s.get("unchanged"),
        "tokens": int(llm.get("total_tokens") or 0) + int(llm.get("estimated_tokens") or 0),
        "tokens_estimated": bool(llm.get("estimated_tokens")),
        "cost_usd": llm.get("cost_usd"), "llm_calls": llm.get("calls")})
  return rows


def _insert_budget_table(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
  """Adds the per-run fitness-with-noise and budget table after the header of compare.md."""
  headers = ["strategy", "seed", "best OOD-val (± spread)", "its OOD-test (± spread)",
             "seed program's OOD-val", "proposals", "evaluations (trainings)", "duplicates",
             "unchanged", "LLM calls", "tokens", "cost (USD)"]
  body = [[r["strategy"], tables.fmt(r["seed"]), r["best_ood_val_acc_text"],
           r["best_ood_acc_text"], r["seed_ood_val_acc_text"] or tables.MISSING,
           tables.fmt(r["proposals"]), tables.fmt(r["evaluations"]),
           tables.fmt(r["duplicates"]), tables.fmt(r["unchanged"]), tables.fmt(r["llm_calls"]),
           tables.fmt(r["tokens"]) + (" (estimated)" if r["tokens_estimated"] else ""),
           tables.fmt(r["cost_usd"])] for r in rows]
  section = ("## Fitness with its noise, and the budget each run used\n\n"
             "Each `±` says which spread it is: the std over training seeds (when a run "
             "trained several) and the half-width of the 95% bootstrap interval over the "
             "evaluation graphs (spark_clrs.evaluation.noise). Evaluations count trainings: a duplicate child reuses "
             "its twin's metrics and an unchanged child is rejected before any compute. "
             "Tokens of the offline proposer are its length/4 estimates.\n\n"
             + tables.markdown_table(headers, body) + "\n")
  text = path.read_text()
  at = text.find("## Strategies")
  text = text[:at] + section + text[at:] if at >= 0 else text + "\n" + section
  tables.write_text(path, text)


def define_flags() -> None:
  """The search flags plus the grid's own."""
  from absl import flags

  from spark_clrs.cli import clrs_flags

  clrs_flags.take_over("seeds")  # CLRS defines --seeds too; ours must win (see clrs_flags).
  config_lib.define_flags()
  flags.DEFINE_list("strategies", ["spark", "mutation"], "Strategies to compare "
                    f"(--strategy values): {', '.join(config_lib.STRATEGIES)}.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Run seeds; one run per (strategy, seed).")
  flags.DEFINE_enum("band", "std", report_lib.BANDS, "Plot bands: mean ± std, or min-max.")


def main(argv: list[str]) -> int:
  """absl entry point."""
  from absl import flags

  quiet.apply_flag()
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}; every setting is a --flag (see --helpfull)",
          file=sys.stderr)
    return 2
  f = flags.FLAGS
  output = f.output if not f["output"].using_default_value else "runs/compare"
  try:
    base = config_lib.from_flags(f)
    result = compare(f.strategies, f.seeds, output=output, base=base, band=f.band)
  except (CompareError, config_lib.ConfigError, report_lib.ReportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted; re-run the same command to resume", file=sys.stderr)
    return 130
  print(result)
  print(result.files.markdown.read_text())
  return 0


def run_cli() -> None:
  from absl import app

  define_flags()
  quiet.define_flag()
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run_cli()
