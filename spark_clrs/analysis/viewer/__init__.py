"""A run (or a comparison) as one self-contained HTML page: ``RUN/results/index.html``.

Researchers read a search by its lineage and diffs, not by SQLite. This module
turns what the archive holds into one HTML file that opens from ``file://``
with no network: the page's script and style ship in this package
(``viewer.js``, ``viewer.css``) and are inlined, and every datum travels as
JSON in a ``<script type="application/json">`` element.

Programs and LLM text are untrusted. Two rules keep them inert:

* the JSON is escaped so that no ``<``, ``>``, ``&``, U+2028 or U+2029 survives
  literally (`safe_json`), hence ``</script>`` inside a reply cannot end the
  data element;
* the page's script inserts data into the DOM only as text (``textContent``,
  ``createTextNode``), never as markup.

Everything that needs the trusted side (diffs against the parent with difflib,
per-factor gains, tokens and cost by role and model) is computed here, so the
script only draws.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import difflib
import html
import importlib.resources
import json
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from spark_clrs.search.archive_db import PENDING_STATUSES, ArchiveDB, Candidate
from spark_clrs.search.rundir import RunDir, write_atomic

PAGE_NAME = "index.html"
REFRESH_S = 5.0  # shortest wall time between two rewrites of a live page
REFRESH_COST_FACTOR = 10.0  # and at least this many times what the last rewrite took
FITNESS = "ood_val_acc"
# Characters that must not appear literally inside a <script> element's JSON.
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
            "\u2029": "\\u2029"}
_DIFF_CONTEXT = 3


# ------------------------------------------------------------------------------- encoding


def _clean(value: Any) -> Any:
  """JSON-able data with non-finite floats as None (JSON.parse rejects NaN)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  if value is None or isinstance(value, (str, int, bool)):
    return value
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return _clean(dataclasses.asdict(value))
  if hasattr(value, "tolist"):
    return _clean(value.tolist())
  return str(value)


def safe_json(data: Any) -> str:
  """JSON text that is inert inside an HTML ``<script>`` element.

  ``<``, ``>``, ``&``, U+2028 and U+2029 only occur inside JSON strings, where their
  ``\\uXXXX`` escapes decode to the same characters, so ``JSON.parse`` gives back
  exactly ``data`` while the HTML parser never sees ``</script>`` or ``<!--``.
  """
  text = json.dumps(_clean(data), ensure_ascii=False, allow_nan=False, sort_keys=True,
                    separators=(",", ":"))
  for char, escape in _ESCAPES.items():
    text = text.replace(char, escape)
  return text


def _asset(name: str) -> str:
  return importlib.resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def render(data: dict[str, Any], title: str, *, refresh_s: int | None = None) -> str:
  """The whole page: inline style, the data element, inline script.

  Args:
    data: the page's data (`run_data` or `compare_data`).
    title: the document title (escaped here).
    refresh_s: while a search runs, the page reloads itself every this many seconds.
  """
  refresh = (f'<meta http-equiv="refresh" content="{int(refresh_s)}">\n'
             if refresh_s else "")
  return (
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      # No network, ever: only inline script/style and data: images may load.
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
      "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n"
      f"{refresh}<title>{html.escape(title)}</title>\n"
      f"<style>\n{_asset('viewer.css')}</style>\n</head>\n<body>\n"
      "<noscript>This page draws its tables and plots with JavaScript; the same data is in "
      "summary.json and archive.sqlite.</noscript>\n<div id=\"app\"></div>\n"
      f"<script type=\"application/json\" id=\"spark-data\">{safe_json(data)}</script>\n"
      f"<script>\n{_asset('viewer.js')}</script>\n</body>\n</html>\n")


# ------------------------------------------------------------------------------ run page


def unified_diff(parent: str | None, child: str | None, parent_name: str,
                 child_name: str) -> list[str]:
  """The child's unified diff against its parent, one string per line (no newlines)."""
  if child is None:
    return []
  return list(difflib.unified_diff((parent or "").splitlines(), child.splitlines(),
                                   fromfile=parent_name, tofile=child_name,
                                   n=_DIFF_CONTEXT, lineterm=""))


def factor_of(c: Candidate) -> str:
  """The factor a candidate edited, for colouring: its scope, else what it changed."""
  if not c.is_proposal:
    return "seed"
  if c.scope:
    return "+".join(c.scope)
  if len(c.changed_factors) == 1:
    return c.changed_factors[0]
  return "unscoped" if not c.changed_factors else "several"


def uncertainty(metrics: dict[str, Any], key: str = FITNESS) -> dict[str, Any]:
  """``{"lo", "hi", "kind", "text"}`` of a metric's noise (noise.py's larger spread).

  The spread is the std over training seeds or the 95% CI half-width over evaluation
  graphs, whichever is larger. Empty when the metric has no known spread (one training
  seed and no CI).
  """
  value = metrics.get(key)
  if not _finite(value):
    return {}
  try:
    from spark_clrs.evaluation import noise  # Fitness uncertainty (issue 12).
  except ImportError:
    std = metrics.get(f"{key}_std")
    per_seed = metrics.get(f"{key}_per_seed")
    if _finite(std) and isinstance(per_seed, list) and len(per_seed) > 1:
      return {"lo": value - std, "hi": value + std, "kind": "std over seeds",
              "text": f"{value:.3f} ± {std:.3f} (std over {len(per_seed)} seeds)"}
    return {}
  n = noise.of(metrics, key)
  if n.band is None:
    return {}
  kind = "95% CI over graphs" if n.ci is not None and n.band == n.ci else "std over seeds"
  return {"lo": value - n.band, "hi": value + n.band, "kind": kind, "text": n.format()}


def _finite(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def format_fitness(metrics: dict[str, Any], key: str = FITNESS) -> str:
  """'0.179 ± 0.007 (std over 5 seeds)' with a known spread, else '0.1719'."""
  value = metrics.get(key)
  if not _finite(value):
    return "-"
  return uncertainty(metrics, key).get("text") or f"{value:.4f}"


def _chooser(c: Candidate, calls: Sequence[dict[str, Any]]) -> tuple[str, str]:
  """(who chose the scope, who answered the LLM calls) of a proposal."""
  if not c.is_proposal:
    return "-", "-"
  source = str(c.decision.get("scope_source") or "-")
  chosen = {"llm": "router (LLM)", "offline": "router (offline proposer)",
            "fallback": "UCB bandit (router failed)",
            "rule": "rule", "unscoped": "none (unscoped)",
            "all_factors": "all factors"}.get(source, source)
  models = sorted({str(k.get("model") or "") for k in calls if k.get("model")})
  answered = ("offline" if models and all(m.startswith("spark/offline") for m in models)
              else ("llm" if models else "-"))
  return chosen, answered


def _call_row(k: dict[str, Any], texts: _Texts) -> dict[str, Any]:
  messages = [{"role": str(m.get("role", "")), "t": texts.add(str(m.get("content", "")))}
              for m in (k.get("messages") or []) if isinstance(m, dict)]
  tokens = int(k.get("prompt_tokens") or 0) + int(k.get("completion_tokens") or 0)
  return {"role": k.get("role"), "model": k.get("model"), "messages": messages,
          "estimated": bool(k.get("estimated")), "finish_reason": k.get("finish_reason"),
          "attempts": k.get("attempts"), "error_kind": k.get("error_kind"),
          "attempt_failed": k.get("candidate_id") is None,
          "reply": None if k.get("reply") is None else texts.add(str(k["reply"])),
          "prompt_tokens": k.get("prompt_tokens"),
          "completion_tokens": k.get("completion_tokens"), "tokens": tokens,
          "cost": k.get("cost"), "latency_s": k.get("latency_s"), "error": k.get("error"),
          "cached": bool(k.get("cached"))}


class _Texts:
  """Interned long strings: every LLM call repeats the same system prompts."""

  def __init__(self) -> None:
    self.items: list[str] = []
    self._index: dict[str, int] = {}

  def add(self, text: str) -> int:
    if text not in self._index:
      self._index[text] = len(self.items)
      self.items.append(text)
    return self._index[text]


def candidate_rows(candidates: Sequence[Candidate], calls: Sequence[dict[str, Any]],
                   texts: _Texts | None = None) -> list[dict[str, Any]]:
  """One dict per candidate: table fields, verdict, diff against its parent, LLM calls."""
  texts = texts if texts is not None else _Texts()
  by_id = {c.id: c for c in candidates}
  calls_of: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
  for k in calls:
    # A call of a proposal attempt that a provider failure ended has no candidate; it is
    # shown with the proposal of the same iteration when that was made later.
    owner = k.get("candidate_id")
    owner = k.get("iteration") if owner is None else owner
    if owner is not None:
      calls_of[int(owner)].append(k)
  rows = []
  for c in sorted(candidates, key=lambda c: c.id):
    parent = by_id.get(c.parent_id) if c.parent_id is not None else None
    gain = (c.fitness - parent.fitness if c.can_be_parent and parent is not None and
            parent.can_be_parent else None)
    chosen, answered = _chooser(c, calls_of[c.id])
    m = c.metrics
    unc = uncertainty(m)
    if c.is_proposal:
      diff = unified_diff(parent.code if parent else None, c.code,
                          f"programs/{c.parent_id:04d}.py", f"programs/{c.id:04d}.py")
    else:
      diff = [f"+{line}" for line in (c.code or "").splitlines()]
    rows.append({
        "id": c.id, "parent_id": c.parent_id, "island": c.island, "strategy": c.strategy,
        "scope": list(c.scope) if c.scope else [], "factor": factor_of(c),
        "chosen_by": chosen, "answered_by": answered,
        "scope_source": c.decision.get("scope_source"),
        "selection": c.decision.get("parent_selection"),
        "rationale": c.decision.get("rationale"), "directive": c.directive,
        "decision": c.decision, "status": c.status, "stage": c.stage, "reason": c.reason,
        "entangled": c.entangled, "changed_factors": list(c.changed_factors),
        "fitness": c.fitness if c.can_be_parent else None,
        "fitness_text": format_fitness(m) if c.can_be_parent else "-",
        "fitness_short": format_fitness(m).split(" (")[0] if c.can_be_parent else "-",
        "fitness_lo": unc.get("lo"), "fitness_hi": unc.get("hi"),
        "fitness_unc_kind": unc.get("kind"),
        "ood_acc": m.get("ood_acc"), "val_acc": m.get("val_acc"),
        "param_count": m.get("param_count"),
        "processor_param_count": m.get("processor_param_count",
                                       m.get("check_param_count")),
        "macs": m.get("macs", m.get("check_macs")), "train_seconds": m.get("train_seconds"),
        "gain": gain, "created_at": c.created_at, "finished_at": c.finished_at,
        "diff": texts.add("\n".join(diff)) if diff else None, "diff_is_listing": not c.is_proposal,
        "calls": [_call_row(k, texts) for k in calls_of[c.id]],
        "metrics": {k: v for k, v in m.items() if not isinstance(v, (dict, list))},
    })
  return rows


def best_so_far(candidates: Sequence[Candidate]) -> list[list[float]]:
  """[candidate id, best fitness so far] after every finished candidate."""
  curve, best = [], -math.inf
  for c in sorted(candidates, key=lambda c: c.id):
    if c.status in PENDING_STATUSES:
      continue
    if c.can_be_parent and c.fitness > best:
      best = c.fitness
    if best > -math.inf:
      curve.append([c.id, best])
  return curve


def llm_usage(calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Tokens, cost and latency of the LLM calls by (role, model)."""
  groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
  for k in calls:
    groups[(str(k.get("role") or ""), str(k.get("model") or "-"))].append(k)
  rows = []
  for (role, model), ks in sorted(groups.items()):
    # As summary.llm_totals counts: provider-reported tokens of requests actually sent;
    # the offline proposer's length estimates apart.
    real = [k for k in ks if not k.get("cached") and not k.get("estimated")]
    prompt = sum(int(k.get("prompt_tokens") or 0) for k in real)
    completion = sum(int(k.get("completion_tokens") or 0) for k in real)
    latencies = [float(k.get("latency_s") or 0.0) for k in ks]
    rows.append({"role": role, "model": model, "calls": len(ks),
                 "cached": sum(bool(k.get("cached")) for k in ks),
                 "failed": sum(bool(k.get("error")) for k in ks),
                 "prompt_tokens": prompt, "completion_tokens": completion,
                 "tokens": prompt + completion,
                 "estimated_tokens": sum(int(k.get("prompt_tokens") or 0)
                                         + int(k.get("completion_tokens") or 0) for k in ks
                                         if not k.get("cached") and k.get("estimated")),
                 "cost": sum(float(k.get("cost") or 0.0) for k in real),
                 "priced": sum(k.get("cost") is not None for k in ks),
                 "mean_latency_s": sum(latencies) / len(latencies)})
  return rows


def factor_gains(candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
  """Per factor edited: proposals, valid, entangled, improvements and gains over the parent."""
  by_id = {c.id: c for c in candidates}
  groups: dict[str, list[Candidate]] = collections.defaultdict(list)
  for c in candidates:
    if c.is_proposal and c.status not in PENDING_STATUSES:
      groups[factor_of(c)].append(c)
  rows = []
  for factor, cs in sorted(groups.items()):
    gains = [c.fitness - by_id[c.parent_id].fitness for c in cs
             if c.can_be_parent and by_id.get(c.parent_id) is not None
             and by_id[c.parent_id].can_be_parent]
    rows.append({"factor": factor, "proposals": len(cs),
                 "valid": sum(c.can_be_parent for c in cs),
                 "entangled": sum(bool(c.entangled) for c in cs),
                 "fallback": sum(c.decision.get("scope_source") == "fallback" for c in cs),
                 "improvements": sum(g > 0 for g in gains),
                 "gain_mean": sum(gains) / len(gains) if gains else None,
                 "gain_max": max(gains) if gains else None,
                 "gain_total_positive": sum(g for g in gains if g > 0)})
  return rows


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_data(candidates: Sequence[Candidate], calls: Sequence[dict[str, Any]],
             summary: dict[str, Any], *, live: bool = False) -> dict[str, Any]:
  """Everything the run page shows, from the archive's rows and the run's summary."""
  texts = _Texts()
  rows = candidate_rows(candidates, calls, texts)
  seed = next((c for c in candidates if c.id == 0), None)
  noise = {}
  if seed is not None and seed.can_be_parent:
    noise = {"fitness": seed.fitness, **uncertainty(seed.metrics),
             "text": format_fitness(seed.metrics)}
  keys = ("run_dir", "strategy", "profile", "seed", "iterations", "llm_model", "seed_program",
          "factors", "best_program_id", "best_ood_val_acc", "best_ood_acc",
          "seed_ood_val_acc", "improvement_over_seed", "proposals", "pending",
          "valid_rate", "entanglement_rate", "router_fallbacks", "status_counts",
          "rejection_stages", "complete", "train_seconds_total")
  return {"kind": "run", "generated_at": _now(), "live": live,
          "run": {k: summary.get(k) for k in keys}, "llm_totals": summary.get("llm") or {},
          "candidates": rows, "texts": texts.items, "best_so_far": best_so_far(candidates),
          "seed_noise": noise, "factor_gains": factor_gains(candidates),
          "llm_usage": llm_usage(calls)}


def run_title(summary: dict[str, Any]) -> str:
  best = summary.get("best_ood_val_acc")
  shown = f"{best:.4f}" if _finite(best) else "-"
  return (f"spark_clrs run: {summary.get('strategy', '?')} on {summary.get('profile', '?')} "
          f"(seed {summary.get('seed', '?')}), best {shown}")


def page_path(run_dir: str | pathlib.Path) -> pathlib.Path:
  """``RUN/results/index.html``."""
  return RunDir(pathlib.Path(run_dir)).results / PAGE_NAME


def write_run_page(run_dir: str | pathlib.Path, *,
                   candidates: Sequence[Candidate] | None = None,
                   calls: Sequence[dict[str, Any]] | None = None,
                   summary: dict[str, Any] | None = None, live: bool = False,
                   refresh_s: int = 15) -> pathlib.Path:
  """Writes ``RUN/results/index.html`` atomically and returns its path.

  Args:
    run_dir: the run directory.
    candidates, calls: the archive's rows (read from ``archive.sqlite`` when omitted).
    summary: the run's summary (``results/summary.json``, or rebuilt, when omitted).
    live: the search is still running: the page says so and reloads every ``refresh_s``.
    refresh_s: reload period of a live page.
  """
  run = RunDir(pathlib.Path(run_dir))
  if candidates is None or calls is None:
    db = ArchiveDB(run.archive_path)
    try:
      candidates = db.candidates() if candidates is None else candidates
      calls = db.llm_calls() if calls is None else calls
    finally:
      db.close()
  if summary is None:
    if run.summary_path.is_file():
      summary = json.loads(run.summary_path.read_text())
    else:
      from spark_clrs.search import summary as summary_lib

      summary = summary_lib.summarize(candidates, calls, {"run_dir": str(run.root)})
  data = run_data(candidates, calls, summary, live=live)
  path = page_path(run.root)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, render(data, run_title(summary), refresh_s=refresh_s if live else None))
  return path


# -------------------------------------------------------------------------- compare page


def compare_data(report: Any, output: pathlib.Path, *, band_kind: str = "std",
                 title: str = "") -> dict[str, Any]:
  """The comparison page's data from a `report.Report` (bands, tables, run links)."""
  from spark_clrs.analysis import report as report_lib
  from spark_clrs.analysis import tables

  data = report.to_json()
  groups = []
  for g, gj in zip(report.groups, data["groups"], strict=True):
    b = g.best_so_far()
    groups.append({
        "label": g.label, "strategy": g.strategy, "seeds": [str(s) for s in g.seeds],
        "band": {"x": list(b.x), "mean": list(b.mean), "lo": b.lower(band_kind),
                 "hi": b.upper(band_kind), "n": list(b.n)},
        "curves": [{"seed": str(r.seed), "points": [list(p) for p in r.best_so_far()]}
                   for r in g.runs],
        "cells": {key: {"t": report_lib._format_stat(g.stat(key), kind),
                        "v": gj["metrics"][key]["mean"]}
                  for key, _, kind in report_lib.METRICS},
        "proposals": gj["proposals"]})
  runs = []
  for r, row in zip(report.runs, data["runs"], strict=True):
    page = page_path(r.root)
    link = os.path.relpath(page, output) if page.is_file() else None
    runs.append({**row, "run": os.path.relpath(r.root, output), "page": link,
                 "cells": {key: {"t": report_lib._format_stat(tables.Stat.of([row[key]]), kind),
                                 "v": row[key]}
                           for key, _, kind in report_lib.METRICS}})
  scopes = []
  for g, gj in zip(report.groups, data["groups"], strict=True):
    for scope, s in gj["scopes"].items():
      gain = tables.Stat(**s["gain"])
      scopes.append({"strategy": g.label, "scope": scope, "proposals": s["proposals"],
                     "share": s["share"], "valid": s["valid"], "entangled": s["entangled"],
                     "fallback": s["fallback"], "improvements": s["improvements"],
                     "gain": {"t": gain.format(), "v": gain.mean}})
  return {"kind": "compare", "generated_at": _now(), "title": title, "band": band_kind,
          "note": getattr(report, "proposer_note", None),
          "metrics": [{"key": key, "label": label} for key, label, _ in report_lib.METRICS],
          "groups": groups, "runs": runs, "scopes": scopes,
          "definitions": data["metric_definitions"]}


def write_compare_page(report: Any, output: str | pathlib.Path, *, title: str,
                       band_kind: str = "std", name: str = PAGE_NAME,
                       run_pages: bool = True) -> pathlib.Path:
  """Writes ``OUTPUT/index.html`` over a comparison's runs; returns its path.

  Args:
    report: a `report.Report` (runs grouped by strategy).
    output: the directory of the comparison (or report).
    title: the page's heading.
    band_kind: ``std`` or ``minmax`` bands.
    name: the file name.
    run_pages: also write each run's own page when it has none yet, so every run links.
  """
  out = pathlib.Path(output).expanduser()
  out.mkdir(parents=True, exist_ok=True)
  if run_pages:
    for r in report.runs:
      if not page_path(r.root).is_file():
        write_run_page(r.root, summary=dict(r.summary))
  path = out / name
  write_atomic(path, render(compare_data(report, out.resolve(), band_kind=band_kind,
                                         title=title), title))
  return path
