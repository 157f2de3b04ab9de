"""Runs grouped by strategy and setting, and their curves pooled over seeds.

The paper's claims are about strategies over several seeds, so reports and
comparisons aggregate runs: runs of one strategy with the same setting (budget,
profile, LLM, seed program) form a :class:`Group`, its per-run numbers become
mean ± std over seeds (:class:`tables.Stat`), and its step curves become a
:class:`Band`. A :class:`Report` is the grouped runs with the JSON every table
and page is drawn from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from spark_clrs.analysis import tables
from spark_clrs.analysis.runs import RunData
from spark_clrs.search.archive_db import PENDING_STATUSES
from spark_clrs.search.summary import proposer_note as _proposer_note

BANDS = ("std", "minmax")
# (summary key, table header, kind) of the per-strategy table, in column order.
METRICS = (
    ("best_ood_val_acc", "best OOD-val", "acc"),
    ("best_ood_acc", "its OOD-test", "acc"),
    ("evaluations_to_best", "evaluations to best", "int"),
    ("valid_rate", "valid rate", "rate"),
    ("entanglement_rate", "entanglement rate", "rate"),
    ("drift_rate", "drift rate", "rate"),
    ("total_tokens", "tokens", "int"),
    ("cost_usd", "cost (USD)", "usd"),
)
METRIC_DEFINITIONS = {
    "best_ood_val_acc": "search-time fitness (OOD-val accuracy) of each run's best program; "
                        "mean ± population std over the group's runs (the maximum of noisy "
                        "numbers: see the final re-evaluation for an unbiased score)",
    "best_ood_acc": "OOD-test accuracy of that same program (never used for selection)",
    "evaluations_to_best": "candidate index at which the run's best fitness was first reached "
                           "(seed = 0)",
    "valid_rate": "feasible proposals / finished proposals",
    "entanglement_rate": "proposals changing text outside their scope (or more than one "
                         "factor when unscoped) / finished proposals",
    "drift_rate": "proposals with no selected scope whose child changed a part only in "
                  "formatting, comments or docstrings / finished proposals (counted apart "
                  "from entanglement)",
    "total_tokens": "prompt + completion tokens of all LLM calls of a run",
    "cost_usd": "LLM cost of a run in USD (0 for the offline proposer)"}


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

  @property
  def proposals(self) -> int:
    return sum(int(r.summary.get("proposals") or 0) for r in self.runs)

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
    """The rule-based-proposer header (summary.proposer_note) of these runs, if any."""
    return _proposer_note([r.info.get("llm_model") for r in self.runs],
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
          "setting": dict(g.runs[0].setting), "proposals": g.proposals,
          "metrics": {key: g.stat(key).to_json() for key, _, _ in METRICS},
          "scopes": g.scopes(),
          "best_so_far": g.best_so_far().to_json(),
          "valid_rate_curve": valid.to_json(),
          "entanglement_rate_curve": entangled.to_json()})
    return {"runs": [self.run_row(r) for r in self.runs], "groups": groups,
            "metric_definitions": dict(METRIC_DEFINITIONS)}


__all__ = ["BANDS", "METRICS", "METRIC_DEFINITIONS", "Band", "Group", "Report", "band",
           "group_runs"]
