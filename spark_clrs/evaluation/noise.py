"""How uncertain a fitness is, written the same way everywhere a person reads it.

The maths is :mod:`spark_clrs.evaluation.statistics` (one definition: mean over training
seeds, 95% interval over seeds and graphs, paired differences). This module reads it out
of a candidate's metrics and writes it as text; the console, ``summary.json``, prompts,
reports, compare tables and the viewer all call it:

* :func:`of` — a metric's :class:`~statistics.Estimate`: the interval the search stored
  with the candidate (``<metric>_interval``, computed with the seed program's seed spread)
  or, for metrics that never went through a search, computed from the metrics alone;
* :func:`format_estimate` / :func:`format_metric` — ``0.179 ± 0.012 (95% CI, 3 seeds x 128
  graphs)``; a single-seed fitness says where its seed term comes from, ``0.172 ± 0.031
  (95% CI, 1 seed x 128 graphs; seed spread of the seed program)``;
* :func:`format_difference` and :func:`verdict_text` — a paired comparison and the
  console's words for it (``NEW BEST`` only for a clear gain, else a tie within noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spark_clrs.evaluation import statistics
from spark_clrs.evaluation.statistics import Difference, Estimate, Samples, SeedSpread

FITNESS = "ood_val_acc"
TEST = "ood_acc"
INTERVAL_SUFFIX = "_interval"  # metrics[f"{name}_interval"]: the stored Estimate.to_json().


def spread_of(metrics: Mapping[str, Any] | None, name: str = FITNESS) -> SeedSpread | None:
  """The training-seed spread a program trained with K >= 2 seeds measured (the seed program's)."""
  return SeedSpread.of(Samples.of(metrics, name))


def compute(metrics: Mapping[str, Any] | None, name: str = FITNESS,
            spread: SeedSpread | None = None) -> Estimate:
  """A metric's interval from the metrics themselves (``spread`` for a single-seed value)."""
  return statistics.estimate(Samples.of(metrics, name), spread)


def of(metrics: Mapping[str, Any] | None, name: str = FITNESS) -> Estimate:
  """A metric's interval: the stored one when the search recorded it, else :func:`compute`."""
  stored = (metrics or {}).get(name + INTERVAL_SUFFIX)
  if isinstance(stored, Mapping) and stored.get("value") is not None:
    return Estimate.from_json(stored)
  return compute(metrics, name)


def format_estimate(e: Estimate, digits: int = 3) -> str:
  """``0.179 ± 0.012 (95% CI, 3 seeds x 128 graphs)``; ``-`` without a value."""
  if e.value is None:
    return "-"
  text = f"{e.value:.{digits}f}"
  if e.half_width is None:
    return f"{text} (no interval: seed and graph spread unknown)"
  shape = f"{e.seeds} seed{'' if e.seeds == 1 else 's'}"
  shape += f" x {e.graphs} graphs" if e.graphs else ", graph bootstrap"
  note = {"borrowed": "; seed spread of the seed program",
          "unknown": "; seed spread unknown"}.get(e.seed_term, "")
  return f"{text} ± {e.half_width:.{digits}f} ({statistics.LEVEL:.0%} CI, {shape}{note})"


def format_metric(metrics: Mapping[str, Any] | None, name: str = FITNESS,
                  digits: int = 3) -> str:
  """One metric with its interval, as :func:`format_estimate` writes it."""
  return format_estimate(of(metrics, name), digits)


def to_json(e: Estimate) -> dict[str, Any]:
  """The estimate as stored and shown: its fields plus ``text``."""
  return {**e.to_json(), "text": format_estimate(e)}


def format_difference(d: Difference, digits: int = 3) -> str:
  """``+0.031 (95% CI +0.004..+0.058, paired over 128 graphs)``."""
  text = f"{d.value:+.{digits}f}"
  if d.half_width is None:
    return f"{text} (no interval: spread unknown)"
  how = {"seeds+graphs": f"paired over seeds and {d.graphs} graphs",
         "graphs": f"paired over {d.graphs} graphs"}.get(d.paired, "unpaired")
  return (f"{text} ({statistics.LEVEL:.0%} CI {d.lo:+.{digits}f}..{d.hi:+.{digits}f}, "
          f"{how})")


def verdict_text(d: Difference, against: str, digits: int = 3) -> str:
  """The console's words for a comparison with the best so far (``against`` names it)."""
  diff = format_difference(d, digits)
  if d.verdict == statistics.BETTER:
    return f"NEW BEST: {diff} over {against}"
  if d.verdict == statistics.TIE:
    return f"tie within noise with {against}: {diff}"
  return f"worse than {against}: {diff}"


__all__ = ["FITNESS", "INTERVAL_SUFFIX", "TEST", "compute", "format_difference",
           "format_estimate", "format_metric", "of", "spread_of", "to_json", "verdict_text"]
