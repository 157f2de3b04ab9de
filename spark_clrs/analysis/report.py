"""Reports over run directories: ``python -m spark_clrs.report RUN [RUN ...]``.

A single search says little; the paper's claims are about strategies over
several seeds. This module reads one or many run directories (through the
archive, never by re-running anything), groups the runs of the same strategy
and setting, and writes:

* ``<prefix>.md`` / ``<prefix>.json``: per-strategy statistics over seeds (best
  OOD-val, the OOD-test of that program, evaluations to best, valid rate,
  entanglement rate, tokens, cost), one row per run, and per-scope choices;
* ``<prefix>_best_so_far.png``: best fitness against evaluations, one band
  (mean ± std, or min-max) per strategy;
* ``<prefix>_scopes.png``: which scope every proposal chose, over time;
* ``<prefix>_rates.png``: cumulative valid and entanglement rates per strategy;
* ``index.html``: the same as one self-contained page (viewer.py): for one run its
  candidates, diffs, LLM calls and lineage; for several runs one band per strategy
  and the tables, each run linked to its own page.

compare.py writes its table with the same functions, so a comparison and a
report of the same runs always agree. Per-run numbers are the runs' own
``results/summary.json`` values (rebuilt from the archive when a run has none).
"""

from __future__ import annotations

from spark_clrs.cli import quiet  # isort: skip  (first: hides TF/XLA/CUDA C++ log lines)
import dataclasses
import io
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from spark_clrs import config as config_lib
from spark_clrs.analysis import tables, viewer
from spark_clrs.search.archive_db import PENDING_STATUSES, Candidate
from spark_clrs.search.rundir import RunDir, write_atomic

BANDS = ("std", "minmax")
# Settings that make runs of one strategy comparable (same budget, protocol, LLM, seed
# program); runs differing in any are not pooled.
_SETTING_FIELDS = ("iterations", "profile", "profile_overrides", "llm_model", "seed_program",
                   "factors", "eval_seeds")
# (summary key, table header, kind) of the per-strategy table, in column order.
METRICS = (
    ("best_ood_val_acc", "best OOD-val", "acc"),
    ("best_ood_acc", "its OOD-test", "acc"),
    ("evaluations_to_best", "evaluations to best", "int"),
    ("valid_rate", "valid rate", "rate"),
    ("entanglement_rate", "entanglement rate", "rate"),
    ("total_tokens", "tokens", "int"),
    ("cost_usd", "cost (USD)", "usd"),
)


class ReportError(ValueError):
  """A run directory cannot be read or a report cannot be written; one line naming the fix."""


@dataclasses.dataclass(frozen=True)
class RunData:
  """One run directory as read back for a report.

  Attributes:
    root: the run directory.
    info: strategy, seed, profile, iterations and the setting fields of the run.
    summary: the run's summary.json (the numbers every table shows).
    candidates: the archived candidates, ordered by id.
    history: summary.history_rows of the candidates (one flat row each).
  """

  root: pathlib.Path
  info: dict[str, Any]
  summary: dict[str, Any]
  candidates: tuple[Candidate, ...] = dataclasses.field(repr=False)
  history: tuple[dict[str, Any], ...] = dataclasses.field(repr=False)

  @property
  def strategy(self) -> str:
    return str(self.info["strategy"])

  @property
  def seed(self) -> int | None:
    return self.info.get("seed")

  @property
  def setting(self) -> tuple[tuple[str, str], ...]:
    return tuple((name, _text(self.info.get(name))) for name in _SETTING_FIELDS)

  def value(self, key: str) -> Any:
    """A per-run number of the tables (token and cost totals come from ``summary['llm']``)."""
    if key in ("total_tokens", "cost_usd"):
      return (self.summary.get("llm") or {}).get(key)
    return self.summary.get(key)

  def finished(self) -> list[Candidate]:
    return [c for c in self.candidates if c.status not in PENDING_STATUSES]

  def best_so_far(self) -> list[tuple[int, float]]:
    """(candidate id, best fitness so far) after every finished candidate."""
    from spark_clrs.analysis import plots

    return plots.best_so_far_curve(self.candidates)

  def cumulative_rates(self) -> list[tuple[int, float, float]]:
    """(proposal id, valid rate, entanglement rate) over the proposals finished up to it."""
    out, valid, entangled, n = [], 0, 0, 0
    for c in self.finished():
      if not c.is_proposal:
        continue
      n += 1
      valid += c.can_be_parent
      entangled += bool(c.entangled)
      out.append((c.id, valid / n, entangled / n))
    return out


def _text(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value)
  return "" if value is None else str(value)


def load_run(path: str | pathlib.Path) -> RunData:
  """Reads one run directory (finished or still running) through the archive.

  Raises:
    ReportError: ``path`` is not a spark_clrs run directory.
  """
  from spark_clrs.search.api import SearchResult

  root = pathlib.Path(path).expanduser()
  run = RunDir(root)
  if not root.is_dir():
    raise ReportError(f"{root} is not a directory; pass run directories written by "
                      "python -m spark_clrs.search")
  if not run.archive_path.is_file():
    raise ReportError(f"{root} is not a spark_clrs run directory (no archive.sqlite); pass "
                      "directories written by python -m spark_clrs.search")
  result = SearchResult.load(root)
  info = {k: result.summary.get(k) for k in ("strategy", "seed", *_SETTING_FIELDS)}
  if run.config_path.is_file():
    try:
      cfg = config_lib.parse_flagfile(str(run.config_path)).to_dict()
    except config_lib.ConfigError as e:
      if info["strategy"] is None:
        raise ReportError(f"{run.config_path} cannot be read ({e}) and {root} has no "
                          "summary.json; re-run the search once to rewrite them") from e
      cfg = {}
    for name, value in cfg.items():
      if name in info and (info[name] is None or name in ("profile_overrides", "eval_seeds")):
        info[name] = value
  if not info.get("llm_model"):
    info["llm_model"] = "spark/offline"
  if info.get("strategy") is None:
    raise ReportError(f"{root} has neither config.flags nor a summary naming its strategy; "
                      "is it a spark_clrs run directory?")
  return RunData(root=result.run_dir.resolve(), info=info, summary=result.summary,
                 candidates=tuple(result.candidates), history=tuple(result.history))


def load_runs(paths: Sequence[str | pathlib.Path]) -> list[RunData]:
  """Reads several run directories (each once, in the given order)."""
  if not paths:
    raise ReportError("no run directories given; pass at least one RUN written by "
                      "python -m spark_clrs.search")
  seen: set[pathlib.Path] = set()
  runs = []
  for path in paths:
    resolved = pathlib.Path(path).expanduser().resolve()
    if resolved in seen:
      continue
    seen.add(resolved)
    runs.append(load_run(path))
  return runs


# ----------------------------------------------------------------------------- aggregation


@dataclasses.dataclass(frozen=True)
class Band:
  """A statistic of several runs' curves at every x (only runs that reached x count)."""

  x: tuple[int, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  min: tuple[float, ...]
  max: tuple[float, ...]
  n: tuple[int, ...]

  def lower(self, band: str) -> list[float]:
    return list(self.min) if band == "minmax" else [m - s for m, s in zip(self.mean, self.std, strict=True)]

  def upper(self, band: str) -> list[float]:
    return list(self.max) if band == "minmax" else [m + s for m, s in zip(self.mean, self.std, strict=True)]

  def to_json(self) -> dict[str, Any]:
    return {k: list(v) for k, v in dataclasses.asdict(self).items()}


def band(curves: Sequence[Sequence[tuple[int, float]]]) -> Band:
  """Pools step curves (x ascending): at each x, the last value of every run at or before x.

  A run contributes from its first point to its last one (no extrapolation).
  """
  curves = [list(c) for c in curves if c]
  if not curves:
    return Band((), (), (), (), (), ())
  xs = sorted({x for c in curves for x, _ in c} |
              set(range(min(c[0][0] for c in curves), max(c[-1][0] for c in curves) + 1)))
  rows: dict[str, list[Any]] = {"x": [], "mean": [], "std": [], "min": [], "max": [], "n": []}
  for x in xs:
    values = []
    for c in curves:
      if c[0][0] <= x <= c[-1][0]:
        values.append([y for cx, y in c if cx <= x][-1])
    stat = tables.Stat.of(values)
    if stat.n == 0:
      continue
    for key, value in (("x", x), ("mean", stat.mean), ("std", stat.std), ("min", stat.min),
                       ("max", stat.max), ("n", stat.n)):
      rows[key].append(value)
  return Band(**{k: tuple(v) for k, v in rows.items()})


@dataclasses.dataclass(frozen=True)
class Group:
  """Runs of one strategy with one setting (the seeds of a comparison)."""

  label: str
  strategy: str
  runs: tuple[RunData, ...]

  @property
  def seeds(self) -> list[Any]:
    return [r.seed for r in self.runs]

  def stat(self, key: str) -> tables.Stat:
    return tables.Stat.of(r.value(key) for r in self.runs)

  def best_so_far(self) -> Band:
    return band([r.best_so_far() for r in self.runs])

  def rate_bands(self) -> tuple[Band, Band]:
    rates = [r.cumulative_rates() for r in self.runs]
    return (band([[(x, v) for x, v, _ in c] for c in rates]),
            band([[(x, e) for x, _, e in c] for c in rates]))

  def scopes(self) -> dict[str, dict[str, Any]]:
    """Scope choices pooled over the group's runs: counts, share of proposals, gains."""
    rows = [h for r in self.runs for h in r.history
            if h["parent_id"] is not None and h["status"] not in PENDING_STATUSES]
    out = {}
    for scope in sorted({h["scope"] or "none" for h in rows}):
      chosen = [h for h in rows if (h["scope"] or "none") == scope]
      gains = [h["gain"] for h in chosen if h["gain"] is not None]
      out[scope] = {
          "proposals": len(chosen), "share": len(chosen) / len(rows),
          "valid": sum(h["status"] == "evaluated" and h["fitness"] is not None
                       for h in chosen),
          "entangled": sum(bool(h["entangled"]) for h in chosen),
          "fallback": sum(h["scope_source"] == "fallback" for h in chosen),
          "improvements": sum(g > 0 for g in gains),
          "gain": tables.Stat.of(gains).to_json()}
    return out


def group_runs(runs: Sequence[RunData], order: Sequence[str] = ()) -> list[Group]:
  """Groups runs by (strategy, setting); strategies in ``order`` first, then as they come."""
  keys: list[tuple[str, tuple[tuple[str, str], ...]]] = []
  members: dict[Any, list[RunData]] = {}
  for r in runs:
    key = (r.strategy, r.setting)
    if key not in members:
      keys.append(key)
      members[key] = []
    members[key].append(r)
  rank = {s: i for i, s in enumerate(order)}
  keys.sort(key=lambda k: rank.get(k[0], len(rank)))
  groups = []
  for strategy, setting in keys:
    siblings = [s for (st, s) in keys if st == strategy]
    label = strategy
    if len(siblings) > 1:
      differing = [i for i in range(len(setting))
                   if len({s[i][1] for s in siblings}) > 1]
      label += " [" + ", ".join(f"{setting[i][0]}={setting[i][1] or '-'}"
                                for i in differing) + "]"
    runs_in = sorted(members[(strategy, setting)],
                     key=lambda r: (r.seed if isinstance(r.seed, int) else 0, str(r.root)))
    groups.append(Group(label=label, strategy=strategy, runs=tuple(runs_in)))
  return groups


@dataclasses.dataclass(frozen=True)
class Report:
  """Runs grouped by strategy, with everything the tables and plots show."""

  runs: tuple[RunData, ...]
  groups: tuple[Group, ...]

  @classmethod
  def of(cls, runs: Sequence[RunData], order: Sequence[str] = ()) -> Report:
    return cls(runs=tuple(runs), groups=tuple(group_runs(runs, order)))

  @property
  def proposer_note(self) -> str | None:
    """The rule-based-proposer header (tables.proposer_note) of these runs, if any."""
    return tables.proposer_note([r.info.get("llm_model") for r in self.runs],
                                [r.strategy for r in self.runs])

  def run_row(self, r: RunData) -> dict[str, Any]:
    s = r.summary
    return {"run_dir": str(r.root), "strategy": r.strategy, "seed": r.seed,
            **{name: r.info.get(name) for name in ("profile", "iterations", "llm_model")},
            "proposals": s.get("proposals"), "pending": s.get("pending"),
            "complete": s.get("complete"), "best_program_id": s.get("best_program_id"),
            "seed_ood_val_acc": s.get("seed_ood_val_acc"),
            **{key: r.value(key) for key, _, _ in METRICS}}

  def to_json(self) -> dict[str, Any]:
    groups = []
    for g in self.groups:
      valid, entangled = g.rate_bands()
      groups.append({
          "label": g.label, "strategy": g.strategy, "seeds": g.seeds,
          "run_dirs": [str(r.root) for r in g.runs],
          "setting": dict(g.runs[0].setting),
          "proposals": sum(int(r.summary.get("proposals") or 0) for r in g.runs),
          "metrics": {key: g.stat(key).to_json() for key, _, _ in METRICS},
          "scopes": g.scopes(),
          "best_so_far": g.best_so_far().to_json(),
          "valid_rate_curve": valid.to_json(),
          "entanglement_rate_curve": entangled.to_json()})
    return {"runs": [self.run_row(r) for r in self.runs], "groups": groups,
            "metric_definitions": {
                "best_ood_val_acc": "fitness (OOD-val accuracy) of each run's best program; "
                                    "mean ± population std over the group's runs",
                "best_ood_acc": "OOD-test accuracy of that same program (never used for "
                                "selection)",
                "evaluations_to_best": "candidate index at which the run's best fitness was "
                                       "first reached (seed = 0)",
                "valid_rate": "feasible proposals / finished proposals",
                "entanglement_rate": "proposals changing text outside their scope (or more "
                                     "than one factor when unscoped) / finished proposals",
                "total_tokens": "prompt + completion tokens of all LLM calls of a run",
                "cost_usd": "LLM cost of a run in USD (0 for the offline proposer)"}}

  def markdown(self, title: str, plots: dict[str, str] | None = None,
               base: pathlib.Path | None = None) -> str:
    """The report as Markdown.

    Args:
      title: the heading.
      plots: caption -> PNG path relative to the Markdown file.
      base: run directories are shown relative to this directory (the file's).
    """
    lines = [f"# {title}", ""]
    if self.proposer_note:  # Rule-based runs say so before any number (issue 12).
      lines += [f"> **{self.proposer_note}**", ""]
    n_groups = len(self.groups)
    lines.append(f"{len(self.runs)} run(s) in {n_groups} group(s); values are mean ± std "
                 "over each group's runs (seeds).")
    lines.append("")
    lines.append("## Strategies")
    lines.append("")
    headers = ["strategy", "seeds", "proposals", *(h for _, h, _ in METRICS)]
    rows = []
    for g in self.groups:
      cells = [g.label, ",".join(_text(s) for s in g.seeds),
               tables.fmt(sum(int(r.summary.get("proposals") or 0) for r in g.runs))]
      for key, _, kind in METRICS:
        cells.append(_format_stat(g.stat(key), kind))
      rows.append(cells)
    lines.append(tables.markdown_table(headers, rows))
    lines.append("## Runs")
    lines.append("")
    headers = ["run", "strategy", "seed", "proposals", "complete", "best id",
               *(h for _, h, _ in METRICS)]
    rows = []
    for r in self.runs:
      row = self.run_row(r)
      shown = os.path.relpath(r.root, base) if base is not None else str(r.root)
      cells = [shown, r.strategy, tables.fmt(r.seed), tables.fmt(row["proposals"]),
               tables.fmt(row["complete"]), tables.fmt(row["best_program_id"])]
      for key, _, kind in METRICS:
        cells.append(_format_stat(tables.Stat.of([row[key]]), kind))
      rows.append(cells)
    lines.append(tables.markdown_table(headers, rows))
    lines.append("## Scope choices")
    lines.append("")
    headers = ["strategy", "scope", "proposals", "share", "valid", "entangled",
               "router fallbacks", "improvements", "mean gain"]
    rows = []
    for g in self.groups:
      for scope, s in g.scopes().items():
        gain = tables.Stat(**s["gain"])
        rows.append([g.label, scope, tables.fmt(s["proposals"]), tables.fmt_rate(s["share"]),
                     tables.fmt(s["valid"]), tables.fmt(s["entangled"]),
                     tables.fmt(s["fallback"]), tables.fmt(s["improvements"]),
                     gain.format()])
    if rows:
      lines.append(tables.markdown_table(headers, rows))
    else:
      lines.append("No finished proposals yet.\n")
    for caption, path in (plots or {}).items():
      lines.append(f"![{caption}]({path})")
      lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _format_stat(stat: tables.Stat, kind: str) -> str:
  if kind == "rate":
    return stat.format(percent=True)
  if kind == "int":
    return stat.format(integer=True)
  if kind == "usd":
    return stat.format(digits=4)
  return stat.format()


# ----------------------------------------------------------------------------------- plots


def _styles(n: int) -> list[dict[str, Any]]:
  """Colour + line style per group, so that groups with equal curves stay visible."""
  from matplotlib import colormaps

  cmap = colormaps["tab10"]
  dashes = ("-", "--", "-.", ":")
  return [{"color": cmap(i % 10), "linestyle": dashes[i % len(dashes)]} for i in range(n)]


def _figure(width: float, height: float) -> Any:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), dpi=110)
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Any, path: pathlib.Path, note: str | None = None) -> pathlib.Path:
  if note:  # The rule-based-proposer header, above every panel.
    fig.suptitle(note, fontsize="small", color="darkred", wrap=True)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, buffer.getvalue())
  return path


def _integer_x(ax: Any) -> None:
  from matplotlib.ticker import MaxNLocator

  ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_band(ax: Any, b: Band, label: str, style: dict[str, Any], band_kind: str) -> None:
  """Mean as a step line with a marker per point, the band shaded (several runs only)."""
  if not b.x:
    return
  n = max(b.n)
  ax.step(b.x, b.mean, where="post", linewidth=2, label=f"{label} (n={n})", **style)
  ax.plot(b.x, b.mean, linestyle="", marker="o", markersize=3, color=style["color"])
  if n > 1:
    ax.fill_between(b.x, b.lower(band_kind), b.upper(band_kind), step="post",
                    color=style["color"], alpha=0.15, linewidth=0)


def plot_best_so_far(report: Report, path: pathlib.Path, band_kind: str = "std",
                     title: str = "") -> pathlib.Path:
  """Best fitness against evaluations: one band per group (mean ± std or min-max)."""
  fig = _figure(7, 4.2)
  ax = fig.add_subplot(1, 1, 1)
  for g, style in zip(report.groups, _styles(len(report.groups)), strict=True):
    _draw_band(ax, g.best_so_far(), g.label, style, band_kind)
  ax.set_xlabel("evaluations (candidate id; 0 = seed)")
  ax.set_ylabel("best OOD-val accuracy so far")
  _integer_x(ax)
  spread = "min-max" if band_kind == "minmax" else "mean ± std"
  ax.set_title(title or f"best so far ({spread} over seeds)")
  ax.grid(alpha=0.3)
  if report.groups:
    ax.legend(loc="lower right", fontsize="small")
  return _save(fig, path, report.proposer_note)


def plot_rates(report: Report, path: pathlib.Path, band_kind: str = "std") -> pathlib.Path:
  """Cumulative valid rate and entanglement rate against proposals, one band per group."""
  fig = _figure(10, 4)
  axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
  for g, style in zip(report.groups, _styles(len(report.groups)), strict=True):
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


def plot_scopes(report: Report, path: pathlib.Path) -> pathlib.Path:
  """Scope chosen by every proposal over time: one panel per group, one row per run.

  Filled circles are feasible proposals, crosses infeasible or failed ones; all panels
  share the x axis.
  """
  groups = report.groups
  rows = [h for r in report.runs for h in r.history
          if h["parent_id"] is not None and h["status"] not in PENDING_STATUSES]
  scopes = sorted({h["scope"] or "none" for h in rows})
  color = {s: st["color"] for s, st in zip(scopes, _styles(len(scopes)), strict=True)}
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
        ax.scatter([h["id"]], [row], color=color[h["scope"] or "none"],
                   marker="o" if ok else "x", s=30 if ok else 36, linewidths=1.5)
    ax.set_yticks(range(len(g.runs)))
    ax.set_yticklabels([f"seed {_text(r.seed)}" for r in g.runs], fontsize="small")
    ax.set_ylim(-0.7, len(g.runs) - 0.3)
    ax.set_title(g.label, fontsize="medium", loc="left")
    ax.grid(alpha=0.3, axis="x")
  if axes:
    axes[0].set_xlim(0.5, last + 0.5)
    _integer_x(axes[0])
    axes[-1].set_xlabel("proposal (candidate id); o = feasible, x = rejected or failed")
    if scopes:
      from matplotlib.lines import Line2D

      handles = [Line2D([], [], marker="o", linestyle="", color=color[s], label=s)
                 for s in scopes]
      axes[0].legend(handles=handles, title="scope", fontsize="small", loc="upper left",
                     bbox_to_anchor=(1.0, 1.0))
  return _save(fig, path, report.proposer_note)


# ---------------------------------------------------------------------------------- output


@dataclasses.dataclass(frozen=True)
class ReportFiles:
  """Paths written by `write`."""

  markdown: pathlib.Path
  json: pathlib.Path
  best_so_far: pathlib.Path
  scopes: pathlib.Path
  rates: pathlib.Path
  html: pathlib.Path | None = None


def write(report: Report, output: str | pathlib.Path, *, prefix: str = "report",
          title: str = "spark_clrs report", band_kind: str = "std",
          extra: dict[str, Any] | None = None, overwrite: bool = False,
          html: bool = True) -> ReportFiles:
  """Writes ``<prefix>.md``, ``<prefix>.json``, the three PNG plots and ``index.html``.

  A report of the same runs is refreshed in place; a ``<prefix>.json`` describing other
  runs is never replaced unless ``overwrite``.

  Args:
    report: the aggregated runs.
    output: the directory to write into (created if missing).
    prefix: file name stem (``report``; compare uses ``compare``).
    title: the Markdown heading.
    band_kind: ``std`` (mean ± std) or ``minmax`` bands.
    extra: more JSON fields (e.g. the compare settings), stored under their own keys.
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
                      html=out / viewer.PAGE_NAME if html else None)
  data = report.to_json()
  runs = sorted(row["run_dir"] for row in data["runs"])
  if files.json.is_file() and not overwrite:
    import json

    try:
      previous = sorted(row["run_dir"] for row in json.loads(files.json.read_text())["runs"])
    except (ValueError, KeyError, TypeError):
      previous = None
    if previous != runs:
      raise ReportError(f"{files.json} holds a report of other runs; choose another --output "
                        "or pass --overwrite to replace it")
  out.mkdir(parents=True, exist_ok=True)
  plot_best_so_far(report, files.best_so_far, band_kind)
  plot_scopes(report, files.scopes)
  plot_rates(report, files.rates, band_kind)
  data = {**data, **(extra or {}), "band": band_kind,
          "plots": {k: v.name for k, v in dataclasses.asdict(files).items()
                    if str(v).endswith(".png")}}
  tables.write_json(files.json, data)
  captions = {"best so far": files.best_so_far.name, "scope choices": files.scopes.name,
              "valid and entanglement rates": files.rates.name}
  tables.write_text(files.markdown, report.markdown(title, captions, base=out.resolve()))
  if files.html is not None:
    _write_page(report, files.html, title, band_kind)
  return files


def _write_page(report: Report, path: pathlib.Path, title: str, band_kind: str) -> None:
  """One run's own page when ``path`` is its ``results/index.html``, else the compare page."""
  if len(report.runs) == 1 and path.resolve() == viewer.page_path(report.runs[0].root).resolve():
    viewer.write_run_page(report.runs[0].root)
  else:
    viewer.write_compare_page(report, path.parent, title=title, band_kind=band_kind,
                              name=path.name)


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


def main(argv: list[str]) -> int:
  """absl entry point."""
  from absl import flags

  quiet.apply_flag()
  if len(argv) < 2:
    print("error: no run directories; usage: python -m spark_clrs.report RUN [RUN ...] "
          "[--output DIR]", file=sys.stderr)
    return 2
  f = flags.FLAGS
  try:
    files = make_report(argv[1:], f.output or None, band_kind=f.band, overwrite=f.overwrite)
  except ReportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for path in dataclasses.astuple(files):
    if path is not None:
      print(path)
  return 0


def define_flags() -> None:
  from absl import flags

  flags.DEFINE_string("output", "", "Directory for report.md, report.json, the PNG plots and "
                      "index.html (the HTML viewer); "
                      "default RUN/results for one run, <common parent>/report for several.")
  flags.DEFINE_enum("band", "std", BANDS, "Band of the seed-pooled curves: mean ± std, or "
                    "min-max.")
  flags.DEFINE_boolean("overwrite", False, "Replace a report of other runs in --output.")


def run_cli() -> None:
  from absl import app

  define_flags()
  quiet.define_flag()
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run_cli()
