"""Compare strategies under one budget: ``python -m spark_clrs.compare``.

The paper's main table pits SPARK against its ablations and other LLM
searches with the same number of proposals, profile and seeds. This module
runs that grid on the ordinary search engine, one run directory per
(strategy, seed)::

    python -m spark_clrs.compare --flagfile=quick.flags --strategies=spark,mutation \\
        --seeds=0,1 --iterations=4 --output=runs/compare

    OUTPUT/<strategy>/seed<k>/      a normal run directory (SPEC §5)
    OUTPUT/compare.md, compare.json the tables (final_table.py, report.py, below)
    OUTPUT/index.html               the same as one HTML page (viewer), runs linked
    OUTPUT/compare_best_so_far.png  one band per strategy (+ _scopes, _rates, _pareto.png)
    OUTPUT/cache/jax/               one JAX compilation cache shared by all the runs

compare.md opens with each strategy's re-evaluated best (every run re-trains its
top candidates with fresh seeds at its end) as mean ± 95% interval over seeds, the
paired test of each strategy against SPARK over the seeds both ran, and the
accuracy–MACs Pareto front per strategy; then what each run spent (tokens, cost,
evaluations: the headline budget is tokens or cost, ``--budget=tokens``) and the
equal-evaluations tables of the search itself.

Every search flag applies to every run, except ``--strategy``, ``--seed`` and
``--output``, which the grid sets (``--output`` is the comparison's root).
Re-running the same command resumes: a finished run is not touched, an
unfinished one resumes where it stopped. The table is report.py's aggregation
of the runs' own summaries, so ``python -m spark_clrs.report`` on the same runs
gives the same numbers. The command line is :mod:`spark_clrs.cli.compare`.
"""

from __future__ import annotations

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
from spark_clrs.analysis.groups import BANDS, Report
from spark_clrs.analysis.runs import load_runs
from spark_clrs.search.rundir import RunDir, RunDirError


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
  report: Report
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
  run = RunDir(pathlib.Path(config.output))
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
  from spark_clrs.evaluation.executors import JAX_CACHE_VAR

  if not base.compilation_cache or os.environ.get(JAX_CACHE_VAR):
    yield
    return
  os.environ[JAX_CACHE_VAR] = str(root / "cache" / "jax")
  try:
    yield
  finally:
    os.environ.pop(JAX_CACHE_VAR, None)


def _run_cell(base: config_lib.SearchConfig, root: pathlib.Path, strategy: str, seed: int,
              counter: str, stream: TextIO, evaluate: Any) -> Cell:
  """Runs or resumes one (strategy, seed) search unless it is finished.

  The search ends with its final re-evaluation (the top candidates re-trained with fresh
  seeds), which is what the comparison's table reports.
  """
  from spark_clrs.search import api
  from spark_clrs.search.errors import SearchError
  from spark_clrs.search.rundir import open_run

  cfg = cell_config(base, root, strategy, seed)
  where = f"{counter} {strategy} seed {seed} ({cfg.output})"
  if _finished(cfg):
    print(f"compare: {where}: finished before, not re-run", file=stream)
    return Cell(strategy, seed, pathlib.Path(cfg.output), "skipped")
  print(f"compare: {where}: running", file=stream)
  try:
    api.run(open_run(cfg), evaluate=evaluate, stream=stream)
  except (config_lib.ConfigError, RunDirError, SearchError) as e:
    raise CompareError(f"{strategy} seed {seed}: {e}") from None
  return Cell(strategy, seed, pathlib.Path(cfg.output), "ran")


def compare(strategies: str | Sequence[str], seeds: str | Sequence[int], *,
            output: str | pathlib.Path, base: config_lib.SearchConfig | None = None,
            flagfile: str | None = None, band: str = "std", stream: TextIO | None = None,
            evaluate: Any = None, **overrides: Any) -> CompareResult:
  """Runs (or resumes) every (strategy, seed) search and writes the comparison table.

  Args:
    strategies: strategy names (``--strategy`` values), e.g. ``["spark", "mutation"]``.
    seeds: run seeds, e.g. ``[0, 1, 2]``.
    output: the comparison's root directory.
    base: search settings shared by all runs (default: ``flagfile`` + ``overrides``).
    flagfile: an absl flagfile of search flags, e.g. ``"dfs.flags"``.
    band: ``std`` (mean ± std) or ``minmax`` bands in the plots.
    stream: where the progress lines go (default stderr), the runs' own included.
    evaluate: replaces every run's trainer (``search.api.run``'s; tests and benchmarks).
    **overrides: search flags by name, e.g. ``iterations=10, profile="quick"``.

  Raises:
    CompareError: bad grid, or a run that cannot be made (one line naming it and the fix).
  """
  from spark_clrs.search.resolve import config_of

  stream = stream or sys.stderr
  names, values = parse_strategies(strategies), parse_seeds(seeds)
  if band not in BANDS:
    raise CompareError(f"--band={band!r} is not one of {', '.join(BANDS)}")
  root = pathlib.Path(output).expanduser()
  _check_output(root)
  if base is not None and flagfile:
    raise CompareError("give either base or flagfile, not both; read the flagfile with "
                       "spark_clrs.search.resolve.config_of(flagfile) first")
  try:
    base = (config_lib.from_mapping(overrides, base) if base is not None
            else config_of(flagfile, **overrides))
  except config_lib.ConfigError as e:
    raise CompareError(str(e)) from None
  cells = []
  grid = [(s, k) for s in names for k in values]
  with _shared_compilation_cache(base, root):
    for i, (strategy, seed) in enumerate(grid, start=1):
      cells.append(_run_cell(base, root, strategy, seed, f"[{i}/{len(grid)}]", stream,
                             evaluate))
  report = Report.of(load_runs([c.run_dir for c in cells]), names)
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
                           notes=strategy_notes(names), sections=[budget_table(rows)],
                           overwrite=True)
  return CompareResult(output=root, cells=tuple(cells), report=report, files=files)


def budget_text(config: config_lib.SearchConfig) -> str:
  """What every run of the grid was given, e.g. ``budget 40 evaluations (proposals)``."""
  if config.budget == "evaluations":
    return f"budget {config.iterations} evaluations (proposals) per run"
  unit = "LLM tokens" if config.budget == "tokens" else "USD of LLM cost"
  return (f"budget {config.budget_amount:g} {unit} per run (at most {config.iterations} "
          "proposals)")


def _interval_text(summary: dict[str, Any], key: str) -> str:
  """A summary value with its interval as the search wrote it (``<key>_noise``)."""
  return (summary.get(f"{key}_noise") or {}).get("text") or tables.MISSING


def budget_rows(report: Report) -> list[dict[str, Any]]:
  """Per run: the fitness with its noise and what the run spent (the table's rows)."""
  rows = []
  for r in report.runs:
    s = r.summary
    llm = s.get("llm") or {}
    rows.append({
        "strategy": r.strategy, "seed": r.seed, "run_dir": str(r.root),
        "best_ood_val_acc": s.get("best_ood_val_acc"),
        "best_ood_val_acc_text": _interval_text(s, "best_ood_val_acc"),
        "best_ood_acc_text": _interval_text(s, "best_ood_acc"),
        "seed_ood_val_acc_text": _interval_text(s, "seed_ood_val_acc"),
        "proposals": s.get("proposals"), "evaluations": s.get("evaluations"),
        "duplicates": s.get("duplicates"), "unchanged": s.get("unchanged"),
        "tokens": int(llm.get("total_tokens") or 0) + int(llm.get("estimated_tokens") or 0),
        "tokens_estimated": bool(llm.get("estimated_tokens")),
        "cost_usd": llm.get("cost_usd"), "llm_calls": llm.get("calls")})
  return rows


def budget_table(rows: list[dict[str, Any]]) -> str:
  """The per-run fitness-with-interval and budget section of compare.md."""
  headers = ["strategy", "seed", "search-time best OOD-val (95% CI)", "its OOD-test (95% CI)",
             "seed program's OOD-val", "proposals", "evaluations (trainings)", "duplicates",
             "unchanged", "LLM calls", "tokens", "cost (USD)"]
  body = [[r["strategy"], tables.fmt(r["seed"]), r["best_ood_val_acc_text"],
           r["best_ood_acc_text"], r["seed_ood_val_acc_text"],
           tables.fmt(r["proposals"]), tables.fmt(r["evaluations"]),
           tables.fmt(r["duplicates"]), tables.fmt(r["unchanged"]), tables.fmt(r["llm_calls"]),
           tables.fmt(r["tokens"]) + (" (estimated)" if r["tokens_estimated"] else ""),
           tables.fmt(r["cost_usd"])] for r in rows]
  return ("## What each run spent, and its search-time fitness\n\n"
          "The budget each run used (tokens and cost are the headline budget; evaluations "
          "count trainings: a duplicate child reuses its twin's metrics and an unchanged child "
          "is rejected before any compute; tokens of the offline proposer are its length/4 "
          "estimates). Fitness intervals are 95% CIs over training seeds and evaluation graphs "
          "(spark_clrs.evaluation.noise).\n\n" + tables.markdown_table(headers, body))


def strategy_notes(strategies: Sequence[str]) -> dict[str, str]:
  """Per strategy, what of its source could not be reproduced here (the proposers' notes)."""
  from spark_clrs import proposers

  return {s: proposers.compare_note(s) for s in strategies}
