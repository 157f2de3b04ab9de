"""Best-so-far plot of a run: fitness against evaluations, infeasible proposals marked.

Drawn with matplotlib's object API on a caller's figure (a notebook passes a
pyplot figure so that it is displayed inline) or saved as a PNG through the
Agg canvas (the search writes ``results/best_so_far.png`` without touching
any global pyplot state).
"""

from __future__ import annotations

import io
import math
import pathlib
from collections.abc import Sequence
from typing import Any

from spark_clrs.search.archive_db import Candidate


def best_so_far_curve(candidates: Sequence[Candidate]) -> list[tuple[int, float]]:
  """(candidate id, best fitness so far) after every finished candidate, seed first."""
  curve, best = [], -math.inf
  for c in sorted(candidates, key=lambda c: c.id):
    if c.status in ("proposed", "evaluating"):
      continue
    if c.can_be_parent and c.fitness > best:
      best = c.fitness
    if best > -math.inf:
      curve.append((c.id, best))
  return curve


def draw_best_so_far(fig: Any, candidates: Sequence[Candidate], title: str = "") -> Any:
  """Draws the plot on ``fig`` (a matplotlib Figure) and returns its axes."""
  ax = fig.add_subplot(1, 1, 1)
  finished = [c for c in candidates if c.status not in ("proposed", "evaluating")]
  evaluated = [c for c in finished if c.can_be_parent]
  infeasible = [c for c in finished if not c.can_be_parent]
  curve = best_so_far_curve(candidates)
  if evaluated:
    ax.scatter([c.id for c in evaluated], [c.fitness for c in evaluated], s=16, color="0.6",
               label="evaluated candidate", zorder=2)
  if curve:
    xs = [x for x, _ in curve]
    ys = [y for _, y in curve]
    ax.step(xs, ys, where="post", color="tab:blue", linewidth=2, label="best so far", zorder=3)
  if infeasible:
    floor = min([c.fitness for c in evaluated] or [0.0])
    ax.scatter([c.id for c in infeasible], [floor] * len(infeasible), marker="x",
               color="tab:red", s=28, label="infeasible / failed proposal", zorder=4)
  ax.set_xlabel("evaluations (candidate id; 0 = seed)")
  ax.set_ylabel("fitness (OOD-val accuracy)")
  ax.set_title(title or "best so far")
  ax.grid(alpha=0.3)
  if finished:
    ax.legend(loc="lower right", fontsize="small")
  return ax


def save_best_so_far(candidates: Sequence[Candidate], path: str | pathlib.Path,
                     title: str = "") -> pathlib.Path:
  """Writes the plot as a PNG (atomically) and returns the path."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  from spark_clrs.search.rundir import write_atomic

  fig = Figure(figsize=(7, 4), dpi=110)
  FigureCanvasAgg(fig)
  draw_best_so_far(fig, candidates, title)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  path = pathlib.Path(path)
  write_atomic(path, buffer.getvalue())
  return path
