"""Reports over run directories: ``python -m spark_clrs.report RUN [RUN ...]``.

A single search says little; the paper's claims are about strategies over
several seeds. A report reads one or many run directories (:mod:`runs`, never
re-running anything), groups the runs of the same strategy and setting
(:mod:`groups`), and writes:

* ``<prefix>.md`` / ``<prefix>.json``: the final re-evaluated results per strategy
  with intervals, paired tests and Pareto fronts (:mod:`final_table`); per-strategy
  search-time statistics over seeds (best OOD-val, the OOD-test of that program,
  evaluations to best, valid rate, entanglement rate, tokens, cost), one row per
  run, and per-scope choices;
* ``<prefix>_best_so_far.png``: best fitness against evaluations, one band
  (mean ± std, or min-max) per strategy;
* ``<prefix>_scopes.png``: which scope every proposal chose, over time;
* ``<prefix>_rates.png``: cumulative valid and entanglement rates per strategy;
* ``<prefix>_pareto.png``: accuracy against MACs, the front per strategy;
* ``index.html``: the same as one self-contained page: for one run its own page
  (candidates, diffs, LLM calls, lineage), for several runs the comparison page with
  each run linked to its own page.

compare.py writes its table with the same functions, so a comparison and a
report of the same runs always agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from spark_clrs.analysis import compare_page, final_table, plots, tables, viewer
from spark_clrs.analysis.groups import BANDS, METRICS, Report
from spark_clrs.analysis.runs import ReportError, load_runs, text
from spark_clrs.search.rundir import RunDir


def markdown(report: Report, title: str, plot_files: dict[str, str] | None = None,
             base: pathlib.Path | None = None, *, finals: dict[str, Any] | None = None,
             notes: dict[str, str] | None = None, sections: Sequence[str] = ()) -> str:
  """The report as Markdown.

  Args:
    report: the grouped runs.
    title: the heading.
    plot_files: caption -> PNG path relative to the Markdown file.
    base: run directories are shown relative to this directory (the file's).
    finals: final_table.to_json(report), shown first (computed when omitted).
    notes: per strategy, what of its source could not be reproduced (compare's notes).
    sections: more Markdown sections, after the final results (compare's budget table).
  """
  lines = [f"# {title}", ""]
  if report.proposer_note:  # Rule-based runs say so before any number.
    lines += [f"> **{report.proposer_note}**", ""]
  lines.append(f"{len(report.runs)} run(s) in {len(report.groups)} group(s).")
  lines.append("")
  lines.append(final_table.markdown(finals or final_table.to_json(report), notes))
  lines += [section.rstrip() + "\n" for section in sections]
  lines.append("## Strategies (search time)")
  lines.append("")
  lines.append("The search-time best of each run (the maximum of noisy numbers; the final "
               "re-evaluation above is the unbiased result); values are mean ± std over each "
               "group's runs (seeds); budgets are equal in evaluations (proposals).")
  lines.append("")
  headers = ["strategy", "seeds", "proposals", *(h for _, h, _ in METRICS)]
  rows = []
  for g in report.groups:
    cells = [g.label, ",".join(text(s) for s in g.seeds), tables.fmt(g.proposals)]
    cells += [tables.format_stat(g.stat(key), kind) for key, _, kind in METRICS]
    rows.append(cells)
  lines.append(tables.markdown_table(headers, rows))
  lines.append("## Runs")
  lines.append("")
  headers = ["run", "strategy", "seed", "proposals", "complete", "best id",
             *(h for _, h, _ in METRICS)]
  rows = []
  for r in report.runs:
    row = report.run_row(r)
    shown = os.path.relpath(r.root, base) if base is not None else str(r.root)
    cells = [shown, r.strategy, tables.fmt(r.seed), tables.fmt(row["proposals"]),
             tables.fmt(row["complete"]), tables.fmt(row["best_program_id"])]
    cells += [r.cell(key, kind) for key, _, kind in METRICS]
    rows.append(cells)
  lines.append(tables.markdown_table(headers, rows))
  lines.append("## Scope choices")
  lines.append("")
  headers = ["strategy", "scope", "proposals", "share", "valid", "entangled",
             "router fallbacks", "improvements", "mean gain"]
  rows = []
  for g in report.groups:
    for scope, s in g.scopes().items():
      gain = tables.Stat(**s["gain"])
      rows.append([g.label, scope, tables.fmt(s["proposals"]), tables.fmt_rate(s["share"]),
                   tables.fmt(s["valid"]), tables.fmt(s["entangled"]),
                   tables.fmt(s["fallback"]), tables.fmt(s["improvements"]), gain.format()])
  if rows:
    lines.append(tables.markdown_table(headers, rows))
  else:
    lines.append("No finished proposals yet.\n")
  for caption, path in (plot_files or {}).items():
    lines.append(f"![{caption}]({path})")
    lines.append("")
  return "\n".join(lines).rstrip() + "\n"


@dataclasses.dataclass(frozen=True)
class ReportFiles:
  """Paths written by `write`."""

  markdown: pathlib.Path
  json: pathlib.Path
  best_so_far: pathlib.Path
  scopes: pathlib.Path
  rates: pathlib.Path
  pareto: pathlib.Path
  html: pathlib.Path | None = None


def _check_same_runs(path: pathlib.Path, runs: list[str]) -> None:
  try:
    previous = sorted(row["run_dir"] for row in json.loads(path.read_text())["runs"])
  except (ValueError, KeyError, TypeError):
    previous = None
  if previous != runs:
    raise ReportError(f"{path} holds a report of other runs; choose another --output "
                      "or pass --overwrite to replace it")


def write(report: Report, output: str | pathlib.Path, *, prefix: str = "report",
          title: str = "spark_clrs report", band_kind: str = "std",
          extra: dict[str, Any] | None = None, notes: dict[str, str] | None = None,
          sections: Sequence[str] = (), overwrite: bool = False,
          html: bool = True) -> ReportFiles:
  """Writes ``<prefix>.md``, ``<prefix>.json``, the four PNG plots and ``index.html``.

  A report of the same runs is refreshed in place; a ``<prefix>.json`` describing other
  runs is never replaced unless ``overwrite``.

  Args:
    report: the aggregated runs.
    output: the directory to write into (created if missing).
    prefix: file name stem (``report``; compare uses ``compare``).
    title: the Markdown heading.
    band_kind: ``std`` (mean ± std) or ``minmax`` bands.
    extra: more JSON fields (e.g. the compare settings), stored under their own keys.
    notes: per strategy, what of its source could not be reproduced (shown in the tables).
    sections: more Markdown sections after the final results.
    overwrite: replace a report of other runs.
    html: also write ``index.html``: the run's own page when ``output`` is the results
      directory of the only run, else the comparison page over all runs.

  Raises:
    ReportError: bad band kind, or ``output`` holds a report of other runs.
  """
  if band_kind not in BANDS:
    raise ReportError(f"--band={band_kind!r} is not one of {', '.join(BANDS)}")
  out = pathlib.Path(output).expanduser()
  if out.exists() and not out.is_dir():
    raise ReportError(f"--output={out} is a file; choose a directory")
  files = ReportFiles(markdown=out / f"{prefix}.md", json=out / f"{prefix}.json",
                      best_so_far=out / f"{prefix}_best_so_far.png",
                      scopes=out / f"{prefix}_scopes.png", rates=out / f"{prefix}_rates.png",
                      pareto=out / f"{prefix}_pareto.png",
                      html=out / viewer.PAGE_NAME if html else None)
  data = report.to_json()
  if files.json.is_file() and not overwrite:
    _check_same_runs(files.json, sorted(row["run_dir"] for row in data["runs"]))
  out.mkdir(parents=True, exist_ok=True)
  finals = final_table.to_json(report)
  plots.plot_best_so_far(report, files.best_so_far, band_kind)
  plots.plot_scopes(report, files.scopes)
  plots.plot_rates(report, files.rates, band_kind)
  plots.plot_pareto([(f["label"], f["strategy"], f["points"], f["front"])
                     for f in finals["pareto"]], files.pareto,
                    accuracy_label=finals["pareto_accuracy"], note=report.proposer_note)
  data = {**data, **(extra or {}), "final": finals, "strategy_notes": dict(notes or {}),
          "band": band_kind,
          "plots": {k: v.name for k, v in dataclasses.asdict(files).items()
                    if str(v).endswith(".png")}}
  tables.write_json(files.json, data)
  captions = {"best so far": files.best_so_far.name, "scope choices": files.scopes.name,
              "valid and entanglement rates": files.rates.name,
              "accuracy against MACs (Pareto fronts)": files.pareto.name}
  tables.write_text(files.markdown, markdown(report, title, captions, base=out.resolve(),
                                             finals=finals, notes=notes, sections=sections))
  if files.html is not None:
    _write_page(report, files.html, title, band_kind,
                {"final": finals, "strategy_notes": dict(notes or {}), **(extra or {})})
  return files


def _write_page(report: Report, path: pathlib.Path, title: str, band_kind: str,
                extra: dict[str, Any]) -> None:
  """One run's own page when ``path`` is its ``results/index.html``, else the compare page."""
  if len(report.runs) == 1 and path.resolve() == viewer.page_path(report.runs[0].root).resolve():
    r = report.runs[0]
    viewer.write_run_page(r.root, candidates=r.candidates, calls=r.llm_calls(),
                          summary=dict(r.summary))
  else:
    compare_page.write_compare_page(report, path.parent, title=title, band_kind=band_kind,
                                    name=path.name, extra=extra)


def default_output(paths: Sequence[str | pathlib.Path]) -> pathlib.Path:
  """RUN/results for one run; ``<common parent>/report`` for several."""
  roots = [pathlib.Path(p).expanduser().resolve() for p in paths]
  if len({str(r) for r in roots}) == 1:
    return RunDir(roots[0]).results
  common = pathlib.Path(os.path.commonpath([str(r) for r in roots]))
  return common / "report"


def make_report(paths: Sequence[str | pathlib.Path], output: str | pathlib.Path | None = None,
                *, band_kind: str = "std", overwrite: bool = False) -> ReportFiles:
  """Python API of the CLI: reads ``paths`` and writes the report files."""
  runs = load_runs(paths)
  out = pathlib.Path(output) if output else default_output(paths)
  return write(Report.of(runs), out, band_kind=band_kind, overwrite=overwrite,
               title=f"spark_clrs report: {len(runs)} run(s)")


__all__ = ["BANDS", "Report", "ReportError", "ReportFiles", "default_output", "make_report",
           "markdown", "write"]
