"""The accuracy–MACs Pareto front: programs no other program beats on both at once.

The paper's transfer table reports accuracy next to processor cost (MACs of one step on
one graph); a program that is both less accurate and more expensive than another is
never the one to pick, whatever the trade-off. A run's summary lists its front
(summary.py: the final re-evaluation's accuracy where a candidate has one, else its
search-time fitness, labelled); compare draws one per strategy from the same function.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from spark_clrs.evaluation.statistics import is_number


@dataclasses.dataclass(frozen=True)
class Point:
  """One program on the accuracy–MACs plane.

  Attributes:
    key: what identifies it to the reader (a candidate id, or ``(seed, id)`` in compare).
    accuracy: higher is better.
    macs: lower is better.
    data: anything the table shows next to it (interval text, run, factor).
  """

  key: Any
  accuracy: float
  macs: float
  data: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


def front(points: Iterable[Point]) -> list[Point]:
  """The non-dominated points, cheapest first.

  ``p`` dominates ``q`` when ``p`` is at least as accurate and at most as expensive and
  strictly better on one of the two. Of identical (accuracy, MACs) points the first one
  given stays. Points without a finite accuracy or MACs are left out.
  """
  pool = [p for p in points if is_number(p.accuracy) and is_number(p.macs)]
  # Cheapest first, most accurate first among equal cost; a point is on the front when it
  # is strictly more accurate than every cheaper-or-equal point before it.
  order = sorted(range(len(pool)), key=lambda i: (pool[i].macs, -pool[i].accuracy, i))
  out: list[Point] = []
  best = -math.inf
  for i in order:
    if pool[i].accuracy > best:
      out.append(pool[i])
      best = pool[i].accuracy
  return out


def to_json(points: Iterable[Point]) -> list[dict[str, Any]]:
  """The points as JSON rows (``key``, ``accuracy``, ``macs`` and their data)."""
  return [{"key": p.key, "accuracy": p.accuracy, "macs": p.macs, **p.data} for p in points]


__all__ = ["Point", "front", "to_json"]
