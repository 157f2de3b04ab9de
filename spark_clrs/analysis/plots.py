"""PNG plots of one run and of runs grouped by strategy (matplotlib's object API only).

A single run's best-so-far plot is drawn on a caller's figure (a notebook passes a
pyplot figure so that it is displayed inline) or saved through the Agg canvas (the
search writes ``results/best_so_far.png`` without touching any global pyplot state).
Reports draw one band per strategy group (``report`` arguments are `groups.Report`s, taken
as data: this module imports nothing above the archive). Colours come from :mod:`palette`, so a factor
or a strategy has the same colour in every plot and page.
"""

from __future__ import annotations

import io
import pathlib
from collections.abc import Sequence
from typing import Any

from spark_clrs.analysis import palette
from spark_clrs.search.archive_db import PENDING_STATUSES, Candidate
from spark_clrs.search.rundir import write_atomic
from spark_clrs.search.standing import best_so_far, record_order

_DASHES = ("-", "--", "-.", ":")


def best_so_far_curve(candidates: Sequence[Candidate]) -> list[tuple[int, float]]:
  """(evaluation, best fitness so far) after every finished candidate, seed first.

  The x is the candidate's place in the order candidates finished (0 = the seed), and the
  best rises only where the search's paired decision made a new best (standing.py), so the
  curve shows what the console announced, not the maximum of noisy numbers.
  """
  return [(s.index, s.best_fitness) for s in best_so_far(candidates)
          if s.best_fitness is not None]


def evaluation_index(candidates: Sequence[Candidate]) -> dict[int, int]:
  """Candidate id -> its place in the order candidates finished (the curve's x)."""
  return {c.id: i for i, c in enumerate(record_order(candidates))}


def draw_best_so_far(fig: Any, candidates: Sequence[Candidate], title: str = "") -> Any:
  """Draws one run's plot on ``fig`` (a matplotlib Figure) and returns its axes."""
  ax = fig.add_subplot(1, 1, 1)
  at = evaluation_index(candidates)
  finished = [c for c in candidates if c.id in at]
  evaluated = [c for c in finished if c.can_be_parent]
  infeasible = [c for c in finished if not c.can_be_parent]
  curve = best_so_far_curve(candidates)
  if evaluated:
    ax.scatter([at[c.id] for c in evaluated], [c.fitness for c in evaluated], s=16,
               color="0.6", label="evaluated candidate", zorder=2)
  if curve:
    xs = [x for x, _ in curve]
    ys = [y for _, y in curve]
    ax.step(xs, ys, where="post", color="tab:blue", linewidth=2,
            label="best so far (paired decisions)", zorder=3)
  if infeasible:
    floor = min([c.fitness for c in evaluated] or [0.0])
    ax.scatter([at[c.id] for c in infeasible], [floor] * len(infeasible), marker="x",
               color="tab:red", s=28, label="infeasible / failed proposal", zorder=4)
  ax.set_xlabel("evaluations (finished candidates; 0 = seed)")
  ax.set_ylabel("fitness (OOD-val accuracy)")
  ax.set_title(title or "best so far")
  ax.grid(alpha=0.3)
  if finished:
    ax.legend(loc="lower right", fontsize="small")
  return ax


def _figure(width: float, height: float) -> Any:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), dpi=110)
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Any, path: str | pathlib.Path, note: str | None = None) -> pathlib.Path:
  if note:  # The rule-based-proposer header, above every panel.
    fig.suptitle(note, fontsize="small", color="darkred", wrap=True)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, buffer.getvalue())
  return path


def save_best_so_far(candidates: Sequence[Candidate], path: str | pathlib.Path,
                     title: str = "") -> pathlib.Path:
  """Writes one run's plot as a PNG (atomically) and returns the path."""
  fig = _figure(7, 4)
  draw_best_so_far(fig, candidates, title)
  return _save(fig, path)


# ------------------------------------------------------------------------ grouped runs


def _styles(report: Any) -> list[dict[str, Any]]:
  """Colour by strategy, line style by group, so that groups with equal curves stay visible."""
  return [{"color": palette.strategy_color(g.strategy), "linestyle": _DASHES[i % len(_DASHES)]}
          for i, g in enumerate(report.groups)]


def _integer_x(ax: Any) -> None:
  from matplotlib.ticker import MaxNLocator

  ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_band(ax: Any, b: Any, label: str, style: dict[str, Any], band_kind: str) -> None:
  """Mean as a step line with a marker per point, the band shaded (several runs only)."""
  if not b.x:
    return
  n = max(b.n)
  ax.step(b.x, b.mean, where="post", linewidth=2, label=f"{label} (n={n})", **style)
  ax.plot(b.x, b.mean, linestyle="", marker="o", markersize=3, color=style["color"])
  if n > 1:
    ax.fill_between(b.x, b.lower(band_kind), b.upper(band_kind), step="post",
                    color=style["color"], alpha=0.15, linewidth=0)


def plot_best_so_far(report: Any, path: pathlib.Path, band_kind: str = "std",
                     title: str = "") -> pathlib.Path:
  """Best fitness against evaluations: one band per group (mean ± std or min-max)."""
  fig = _figure(7, 4.2)
  ax = fig.add_subplot(1, 1, 1)
  for g, style in zip(report.groups, _styles(report), strict=True):
    _draw_band(ax, g.best_so_far(), g.label, style, band_kind)
  ax.set_xlabel("evaluations (finished candidates; 0 = seed)")
  ax.set_ylabel("best OOD-val accuracy so far (search time)")
  _integer_x(ax)
  spread = "min-max" if band_kind == "minmax" else "mean ± std"
  ax.set_title(title or f"best so far ({spread} over seeds)")
  ax.grid(alpha=0.3)
  if report.groups:
    ax.legend(loc="lower right", fontsize="small")
  return _save(fig, path, report.proposer_note)


def plot_rates(report: Any, path: pathlib.Path, band_kind: str = "std") -> pathlib.Path:
  """Cumulative valid rate and entanglement rate against proposals, one band per group."""
  fig = _figure(10, 4)
  axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
  for g, style in zip(report.groups, _styles(report), strict=True):
    for ax, b in zip(axes, g.rate_bands(), strict=True):
      _draw_band(ax, b, g.label, style, band_kind)
  for ax, name in zip(axes, ("valid rate", "entanglement rate"), strict=True):
    ax.set_xlabel("proposal (candidate id)")
    ax.set_ylabel(f"cumulative {name}")
    ax.set_ylim(-0.05, 1.05)
    _integer_x(ax)
    ax.set_title(name)
    ax.grid(alpha=0.3)
  if report.groups:
    axes[0].legend(loc="lower right", fontsize="small")
  return _save(fig, path, report.proposer_note)


def plot_scopes(report: Any, path: pathlib.Path) -> pathlib.Path:
  """Scope chosen by every proposal over time: one panel per group, one row per run.

  Filled circles are feasible proposals, crosses infeasible or failed ones; all panels
  share the x axis; every scope has its fixed colour (palette.factor_color).
  """
  groups = report.groups
  rows = [h for r in report.runs for h in r.history
          if h["parent_id"] is not None and h["status"] not in PENDING_STATUSES]
  scopes = sorted({h["scope"] or "none" for h in rows})
  last = max((h["id"] for h in rows), default=1)
  heights = [len(g.runs) + 1 for g in groups] or [1]
  fig = _figure(8, 1.0 + 0.5 * sum(heights))
  grid = fig.add_gridspec(len(heights), 1, height_ratios=heights)
  axes: list[Any] = []
  for i, g in enumerate(groups):
    ax = fig.add_subplot(grid[i, 0], sharex=axes[0] if axes else None)
    axes.append(ax)
    for row, r in enumerate(g.runs):
      for h in r.history:
        if h["parent_id"] is None or h["status"] in PENDING_STATUSES:
          continue
        ok = h["status"] == "evaluated" and h["fitness"] is not None
        ax.scatter([h["id"]], [row], color=palette.factor_color(h["scope"] or "none"),
                   marker="o" if ok else "x", s=30 if ok else 36, linewidths=1.5)
    ax.set_yticks(range(len(g.runs)))
    ax.set_yticklabels([f"seed {r.seed if r.seed is not None else ''}" for r in g.runs],
                       fontsize="small")
    ax.set_ylim(-0.7, len(g.runs) - 0.3)
    ax.set_title(g.label, fontsize="medium", loc="left")
    ax.grid(alpha=0.3, axis="x")
  if axes:
    axes[0].set_xlim(0.5, last + 0.5)
    _integer_x(axes[0])
    axes[-1].set_xlabel("proposal (candidate id); o = feasible, x = rejected or failed")
    if scopes:
      from matplotlib.lines import Line2D

      handles = [Line2D([], [], marker="o", linestyle="", color=palette.factor_color(s),
                        label=s) for s in scopes]
      axes[0].legend(handles=handles, title="scope", fontsize="small", loc="upper left",
                     bbox_to_anchor=(1.0, 1.0))
  return _save(fig, path, report.proposer_note)


def plot_pareto(fronts: Sequence[tuple[str, str, Sequence[dict[str, Any]],
                                       Sequence[dict[str, Any]]]],
                path: pathlib.Path, *, accuracy_label: str, note: str | None = None,
                title: str = "") -> pathlib.Path:
  """Accuracy against processor MACs: every point and its front, per strategy.

  Args:
    fronts: ``(label, strategy, points, front)`` per strategy; points and front are
      ``pareto.to_json`` rows (``accuracy``, ``macs``).
    path: the PNG to write.
    accuracy_label: what the y axis is (e.g. re-evaluated OOD-test accuracy).
    note: the rule-based-proposer header.
    title: the panel title.
  """
  fig = _figure(7, 4.2)
  ax = fig.add_subplot(1, 1, 1)
  for i, (label, strategy, points, front) in enumerate(fronts):
    color = palette.strategy_color(strategy)
    if points:
      ax.scatter([p["macs"] for p in points], [p["accuracy"] for p in points], s=14,
                 color=color, alpha=0.35, zorder=2)
    if front:
      xs = [p["macs"] for p in front]
      ys = [p["accuracy"] for p in front]
      ax.step(xs, ys, where="post", color=color, linestyle=_DASHES[i % len(_DASHES)],
              linewidth=2, label=f"{label} front ({len(front)})", zorder=3)
      ax.scatter(xs, ys, s=28, color=color, edgecolors="black", linewidths=0.6, zorder=4)
  ax.set_xlabel("processor MACs per step (one graph)")
  ax.set_ylabel(accuracy_label)
  ax.set_title(title or "accuracy against cost: non-dominated programs per strategy")
  ax.grid(alpha=0.3)
  if any(front for _, _, _, front in fronts):
    ax.legend(loc="lower right", fontsize="small")
  return _save(fig, path, note)


__all__ = ["best_so_far_curve", "draw_best_so_far", "evaluation_index", "plot_best_so_far", "plot_pareto",
           "plot_rates", "plot_scopes", "save_best_so_far"]
