"""``evoprompting``: few-shot crossover of two parents toward size and accuracy targets.

The EvoPrompting baseline (Chen, Dohan and So, "EvoPrompting: Language Models for
Code-Level Neural Architecture Search", NeurIPS 2023; SPEC §6). The LLM is the crossover
operator: its prompt holds k=2 parent programs as few-shot examples, each with its
metrics, and ends with the metrics the new program should reach. The first parent is
the one the controller sampled; the other is drawn uniformly from the top-p fraction
(by fitness) of the parent plus the fittest programs of the run
(``ContextRequest.top``). The targets are derived from the parents, as in the paper:
a size below ``SIZE_FACTOR`` x the smallest parent's and an ``ood_val_acc`` above
``ACCURACY_FACTOR`` x the best parent's (capped at 1). Unscoped.

With no other program available the prompt holds the parent alone (a mutation rather
than a crossover) and the decision says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spark_clrs.llm import prompts
from spark_clrs.proposers import context, population
from spark_clrs.proposers.base import ContextRequest, ParentInfo, ProposalHistory
from spark_clrs.proposers.freeform import FreeformProposer, PromptPlan, join_entries, shown
from spark_clrs.proposers.registry import register

PARENTS = 2           # k: programs per prompt.
TOP_FRACTION = 0.5    # p: the second parent comes from this fittest fraction of the pool.
POOL = 16             # Fittest programs of the run the controller is asked for.
SIZE_FACTOR = 0.9
ACCURACY_FACTOR = 1.02
SIZE_METRICS = ("processor_param_count", "param_count")


def _size_metric(parents: list[ParentInfo]) -> str | None:
  """The parameter count every parent reports (the processor's if known)."""
  for name in SIZE_METRICS:
    if all(isinstance(p.metrics.get(name), (int, float)) for p in parents):
      return name
  return None


def targets(parents: list[ParentInfo]) -> dict[str, Any]:
  """Size and accuracy targets from the parents' metrics (missing metrics give none)."""
  out: dict[str, Any] = {}
  size = _size_metric(parents)
  if size is not None:
    out["size_metric"] = size
    out["size_below"] = int(math.floor(SIZE_FACTOR * min(p.metrics[size] for p in parents)))
  fitness = [p.fitness for p in parents if p.fitness is not None]
  if fitness:
    out["ood_val_acc_above"] = round(min(1.0, ACCURACY_FACTOR * max(fitness)), 4)
  return out


def _targets_text(t: dict[str, Any]) -> str:
  parts = []
  if "ood_val_acc_above" in t:
    parts.append(f"ood_val_acc above {t['ood_val_acc_above']:.4f}")
  if "size_below" in t:
    parts.append(f"{t['size_metric']} below {t['size_below']:_}")
  return " and ".join(parts) or prompts.render("evoprompting/no_targets").strip()


@register("evoprompting")
class EvoPromptingProposer(FreeformProposer):
  """Crossover of k=2 parents from the top-p fraction, conditioned on targets."""

  name = "evoprompting"
  context_request = ContextRequest(top=POOL)

  def choose_parents(self, parent: ParentInfo,
                     rng: np.random.Generator) -> tuple[list[ParentInfo], int]:
    """The parents (weakest first) and the size of the top-p pool the mates came from."""
    pool = population.ranked([parent, *parent.from_source("top")])
    keep = pool[:max(PARENTS, math.ceil(TOP_FRACTION * len(pool)))]
    mates = population.sample_ranked(
        [p for p in keep if p.program_id != parent.program_id], PARENTS - 1, rng)
    chosen = population.ranked([parent, *mates])
    return list(reversed(chosen)), len(keep)

  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    del history
    parents, pool = self.choose_parents(parent, rng)
    goal = targets(parents)
    examples = join_entries(
        prompts.render("evoprompting/example", index=i, program_id=p.program_id,
                       metrics=context.metrics_line(p.metrics), program=p.text.rstrip("\n"))
        for i, p in enumerate(parents, start=1))
    user = prompts.render("evoprompting/user", **self.common_slots(parent), count=len(parents),
                          examples=examples, targets=_targets_text(goal),
                          others=",".join(p.program_id for p in parents
                                          if p.program_id != parent.program_id))
    structure = {"mode": "crossover" if len(parents) > 1 else "mutation (only the parent)",
                 "scope": "unscoped", "parents": shown(parents), "k": PARENTS,
                 "top_fraction": TOP_FRACTION, "pool": pool, "targets": goal,
                 "inspirations": len(parents) - 1}
    return PromptPlan("crossover", user, structure)


__all__ = ["EvoPromptingProposer", "targets"]
