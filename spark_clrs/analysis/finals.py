"""A run's final re-evaluation (``summary.json["final"]``) as tables and pages show it.

The search-time best is the maximum of noisy numbers, biased upward; at the end of a run
the top candidates are re-trained with fresh training seeds never used in the search,
and those numbers are the run's result (SPEC §5). This module reads them once, in one
place, into flat rows with their intervals written by :mod:`spark_clrs.evaluation.noise`,
so the viewer, report and compare label them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from spark_clrs.evaluation import noise
from spark_clrs.evaluation.statistics import Estimate

ACCURACIES = (noise.FITNESS, noise.TEST)


def _estimate(entry: Mapping[str, Any], name: str) -> Estimate:
  """One accuracy of a final candidate: from its metrics, or a stored interval."""
  metrics = entry.get("metrics")
  if isinstance(metrics, Mapping):
    return noise.of(metrics, name)
  stored = entry.get(name + noise.INTERVAL_SUFFIX)
  if isinstance(stored, Mapping) and stored.get("value") is not None:
    return Estimate.from_json(stored)
  value = entry.get(name)
  if isinstance(value, Mapping):
    return Estimate.from_json(value)
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  return Estimate(float(value) if ok else None)


def short_text(e: Estimate) -> str:
  """``0.179 ± 0.012``: the value and its 95% half-width, for narrow table cells (the
  description of the interval, noise.format_estimate, goes in the cell's title)."""
  if e.value is None:
    return "-"
  return f"{e.value:.3f}" + (f" ± {e.half_width:.3f}" if e.half_width is not None else "")


def _final(summary: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
  final = (summary or {}).get("final")
  return final if isinstance(final, Mapping) and final.get("candidates") else None


def rows(summary: Mapping[str, Any] | None) -> list[dict[str, Any]]:
  """One flat row per re-evaluated candidate, best first; empty without a final re-evaluation.

  Each row has ``id``, ``best`` (the run's result), ``status`` and ``reason`` (a failed
  re-training has no values), ``macs``, ``search_fitness`` with ``search_text`` and, for
  ``ood_val_acc`` and ``ood_acc``: the value, ``_lo``/``_hi`` (95% interval), ``_text``
  (noise.format_estimate) and ``_short`` (value ± half-width).
  """
  final = _final(summary)
  if final is None:
    return []
  best_id = final.get("best_id")
  out = []
  for entry in final["candidates"]:
    if not isinstance(entry, Mapping) or entry.get("id") is None:
      continue
    metrics = entry.get("metrics") if isinstance(entry.get("metrics"), Mapping) else {}
    row: dict[str, Any] = {"id": int(entry["id"]), "best": entry.get("id") == best_id,
                           "status": entry.get("status") or "evaluated",
                           "reason": entry.get("reason") or "",
                           "macs": entry.get("macs", metrics.get("macs")),
                           "search_fitness": entry.get("search_fitness"),
                           "search_text": noise.format_estimate(
                               _estimate(entry, "search_" + noise.FITNESS))}
    for name in ACCURACIES:
      e = _estimate(entry, name)
      row.update({name: e.value, f"{name}_lo": e.lo, f"{name}_hi": e.hi,
                  f"{name}_text": noise.format_estimate(e), f"{name}_short": short_text(e)})
    out.append(row)
  out.sort(key=lambda r: (not r["best"], -(r[noise.FITNESS] if r[noise.FITNESS] is not None
                                           else -math.inf), r["id"]))
  return out


def best(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
  """The row of the run's result (the best re-evaluated candidate), or None."""
  found = rows(summary)
  return found[0] if found and found[0]["best"] else None


def seeds(summary: Mapping[str, Any] | None) -> list[int]:
  """The fresh training seeds of the final re-evaluation."""
  final = _final(summary)
  return [int(s) for s in (final or {}).get("seeds") or []]


def page_data(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
  """What the run page's "final re-evaluation" section shows; None without one."""
  found = rows(summary)
  if not found:
    return None
  final = _final(summary) or {}
  return {"seeds": seeds(summary), "rows": found, "status": final.get("status"),
          "label": "final re-evaluation: top candidates re-trained with fresh seeds never "
                   "used in the search (the run's result)"}


__all__ = ["ACCURACIES", "best", "page_data", "rows", "seeds", "short_text"]
