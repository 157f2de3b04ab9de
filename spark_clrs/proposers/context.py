"""The search state as prompt slot values: metrics, lineage, per-factor gains, plateau.

Every strategy shows the LLM some of the same facts; this module renders them as
compact, stable text (the wording around them lives in ``prompts/``). Only
selection-side metrics are shown: the reported test accuracy (``ood_acc``) never
reaches a prompt, so it cannot steer the search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spark_clrs import prompts
from spark_clrs.proposers.base import Outcome, ProposalHistory

# Metrics a proposer may see (selection set, cost); test metrics are deliberately absent.
# Wall-clock timings are deliberately absent: they differ between runs, so showing them
# would make prompts (and so the reply cache and a seeded run) irreproducible.
VISIBLE_METRICS = ("ood_val_acc", "ood_val_acc_std", "val_acc", "param_count",
                   "processor_param_count", "macs", "macs_nb_nodes")
NONE = "(none)"


def chat(system: str, user: str) -> list[dict[str, str]]:
  """A system + user chat request."""
  return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _number(value: Any) -> str:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int):
    return f"{value:,}".replace(",", "_")
  return f"{value:.4f}"


def format_metrics(metrics: Mapping[str, Any]) -> str:
  rows = [f"{k}: {_number(metrics[k])}" for k in VISIBLE_METRICS if metrics.get(k) is not None]
  return "\n".join(rows) or "(not evaluated)"


def metrics_line(metrics: Mapping[str, Any]) -> str:
  """The visible metrics on one line (``ood_val_acc 0.4321, macs 123_456, ...``)."""
  items = [f"{k} {_number(metrics[k])}" for k in VISIBLE_METRICS if metrics.get(k) is not None]
  return ", ".join(items) or "not evaluated"


def _delta(o: Outcome) -> str:
  delta = o.fitness_delta
  return "n/a" if delta is None else f"{delta:+.4f}"


def _one_line(text: str | None, limit: int = 300) -> str:
  flat = " ".join((text or "").split())
  return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def format_lineage(rows: Sequence[Outcome], window: int) -> str:
  lines = [f"iteration {o.iteration} | {','.join(o.scope) if o.scope else 'unscoped'} | "
           f"{o.label} | {_delta(o)} | {_one_line(o.reason) if not o.feasible else '-'}"
           for o in rows[-window:]]
  return "\n".join(lines) or NONE


def format_tried(rows: Sequence[Outcome], window: int) -> str:
  lines = []
  for o in rows[-window:]:
    why = f": {_one_line(o.reason, 200)}" if not o.feasible and o.reason else ""
    lines.append(f"- iteration {o.iteration}: {_one_line(o.directive)} -> {o.label} "
                 f"({_delta(o)}){why}")
  return "\n".join(lines) or NONE


def format_scope_stats(history: ProposalHistory, factors: Sequence[str]) -> str:
  gains = history.scope_gains(factors)
  lines = []
  for f in factors:
    rows = history.in_scope(f)
    feasible = sum(o.feasible for o in rows)
    improved = sum(o.label == "improved" for o in rows)
    g = gains[f]
    mean = f"{sum(g) / len(g):+.4f}" if g else "n/a"
    best = f"{max(g):+.4f}" if g else "n/a"
    lines.append(f"{f}: {len(rows)} proposals, {feasible} feasible, {improved} improved their "
                 f"parent, mean gain {mean}, best gain {best}")
  return "\n".join(lines)


def format_plateau(history: ProposalHistory) -> str:
  p = history.plateau()
  best = "n/a" if p.best_fitness is None else f"{p.best_fitness:.4f}"
  return (f"evaluations so far: {p.evaluations}\n"
          f"evaluations since the best fitness last improved: {p.since_best}\n"
          f"best fitness so far: {best}")


def task_card(task: str) -> str:
  """``prompts/tasks/<task>.md``, or the generic card naming the algorithm."""
  if prompts.exists(f"tasks/{task}"):
    return prompts.render(f"tasks/{task}")
  return prompts.render("tasks/_generic", algorithm=task)


def factor_description(name: str) -> str:
  """``prompts/factors/<NAME>.md``, or the generic description naming the markers."""
  if prompts.exists(f"factors/{name}"):
    return prompts.render(f"factors/{name}")
  return prompts.render("factors/_generic", name=name)


def merge_outcomes(*groups: Sequence[Outcome]) -> list[Outcome]:
  """Union of outcome lists without duplicates, ordered by iteration."""
  seen: dict[tuple[Any, ...], Outcome] = {}
  for group in groups:
    for o in group:
      seen.setdefault((o.iteration, o.program_id, o.directive, o.scope), o)
  return sorted(seen.values(), key=lambda o: o.iteration)


__all__ = ["NONE", "VISIBLE_METRICS", "chat", "factor_description", "format_lineage", "format_metrics",
           "format_plateau", "format_scope_stats", "format_tried", "merge_outcomes", "metrics_line",
           "task_card"]
