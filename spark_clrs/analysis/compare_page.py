"""The comparison page's data (``OUTPUT/index.html``) from a report of several runs.

One band per strategy group, the per-strategy and per-run tables (cells carry their
text and their sort value), scope choices, colours fixed by strategy and factor name,
and what compare adds (final re-evaluated scores, paired tests, Pareto fronts) under
``extra``. The viewer renders it; runs link to their own pages.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

from spark_clrs.analysis import palette, tables, viewer
from spark_clrs.analysis.groups import METRICS, Report


def compare_data(report: Report, output: pathlib.Path, *, band_kind: str = "std",
                 title: str = "", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The comparison page's data (bands, tables, run links, colours, ``extra`` sections)."""
  data = report.to_json()
  groups = []
  for g, gj in zip(report.groups, data["groups"], strict=True):
    b = g.best_so_far()
    groups.append({
        "label": g.label, "strategy": g.strategy, "seeds": [str(s) for s in g.seeds],
        "color": palette.strategy_color(g.strategy),
        "band": {"x": list(b.x), "mean": list(b.mean), "lo": b.lower(band_kind),
                 "hi": b.upper(band_kind), "n": list(b.n)},
        "curves": [{"seed": str(r.seed), "points": [list(p) for p in r.best_so_far()]}
                   for r in g.runs],
        "cells": {key: {"t": tables.format_stat(g.stat(key), kind),
                        "v": gj["metrics"][key]["mean"]}
                  for key, _, kind in METRICS},
        "proposals": gj["proposals"]})
  runs = []
  for r, row in zip(report.runs, data["runs"], strict=True):
    page = viewer.page_path(r.root)
    link = os.path.relpath(page, output) if page.is_file() else None
    runs.append({**row, "run": os.path.relpath(r.root, output), "page": link,
                 "cells": {key: {"t": r.cell(key, kind), "v": row[key]}
                           for key, _, kind in METRICS}})
  scopes = []
  for g, gj in zip(report.groups, data["groups"], strict=True):
    for scope, s in gj["scopes"].items():
      gain = tables.Stat(**s["gain"])
      scopes.append({"strategy": g.label, "scope": scope, "proposals": s["proposals"],
                     "share": s["share"], "valid": s["valid"], "entangled": s["entangled"],
                     "fallback": s["fallback"], "improvements": s["improvements"],
                     "gain": {"t": gain.format(), "v": gain.mean},
                     "color": palette.factor_color(scope)})
  return {"kind": "compare", "generated_at": viewer.page.generated_at(), "title": title, "band": band_kind,
          "note": report.proposer_note,
          "metrics": [{"key": key, "label": label} for key, label, _ in METRICS],
          "groups": groups, "runs": runs, "scopes": scopes,
          "definitions": data["metric_definitions"], **dict(extra or {})}


def write_compare_page(report: Report, output: str | pathlib.Path, *, title: str,
                       band_kind: str = "std", name: str = viewer.PAGE_NAME,
                       extra: Mapping[str, Any] | None = None,
                       run_pages: bool = True) -> pathlib.Path:
  """Writes ``OUTPUT/index.html`` over a comparison's runs; returns its path.

  Args:
    report: the runs grouped by strategy.
    output: the directory of the comparison (or report).
    title: the page's heading.
    band_kind: ``std`` or ``minmax`` bands.
    name: the file name.
    extra: more sections of page data (compare's final scores, tests and fronts).
    run_pages: also write each run's own page when it has none yet, so every run links.
  """
  out = pathlib.Path(output).expanduser()
  out.mkdir(parents=True, exist_ok=True)
  if run_pages:
    for r in report.runs:
      if not viewer.page_path(r.root).is_file():
        viewer.write_run_page(r.root, candidates=r.candidates, calls=r.llm_calls(),
                              summary=dict(r.summary))
  data = compare_data(report, out.resolve(), band_kind=band_kind, title=title, extra=extra)
  return viewer.write_page(out / name, data, title)


__all__ = ["compare_data", "write_compare_page"]
