"""``evoprompting``: few-shot crossover of two parents toward size and accuracy targets.

The EvoPrompting baseline (Chen, Dohan and So, "EvoPrompting: Language Models for
Code-Level Neural Architecture Search", NeurIPS 2023; SPEC §6). It has no official code,
so the mechanisms below follow the paper's description (its Algorithm 1):

* **The LLM is the crossover operator**: a prompt holds k=2 parent programs as few-shot
  examples, each with its metrics, and ends with the metrics the new program should
  reach, derived from the parents: a size below ``SIZE_FACTOR`` x the smallest parent's
  and an ``ood_val_acc`` above ``ACCURACY_FACTOR`` x the best parent's (capped at 1).
* **Rounds over one population** (``islands=1``, ``generation=ROUND``): every prompt of
  a round draws its k examples uniformly, without replacement, from the current
  population (archive sampler ``uniform``); when the round ends its children join the
  population and only the ``SURVIVORS`` fittest are kept for the next round.
* **Size-aware fitness** (``score=size_aware_fitness``): survivors are chosen by a
  fitness that trades accuracy against model size, the product of the error and the
  parameter count (smaller is better), as the paper scores its architectures; here
  ``(1 - ood_val_acc) x processor parameters`` (the processor is the evolved part; the
  encoders and decoders around it are the same for every candidate). The run's reported
  best is still the most accurate program.

What cannot be done here, and is said in :attr:`EvoPromptingProposer.compare_note`:
EvoPrompting prompt-tunes its language model (a soft prompt trained on the evaluated
children after every round); an API model exposes no weights or soft prompts, so the
model stays fixed and only the in-context examples evolve. The paper's filter that drops
children above an error threshold before selection is not reproduced (its threshold is
task-specific and not given for this task); survivor selection alone prunes them. The
round size and survivor count are ours (10 rounds of 10 in the 100-proposal budget).

With one program in the population the prompt holds the parent alone (a mutation rather
than a crossover) and the decision says so. Unscoped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from spark_clrs.llm import prompts
from spark_clrs.proposers import context
from spark_clrs.proposers.base import ContextRequest, ParentInfo, ProposalHistory
from spark_clrs.proposers.freeform import FreeformProposer, PromptPlan, join_entries, shown
from spark_clrs.proposers.options import EngineOptions
from spark_clrs.proposers.registry import register

PARENTS = 2           # k: few-shot examples per prompt.
ROUND = 10            # Proposals per round (the paper's prompts x samples per prompt).
SURVIVORS = 10        # Programs kept between rounds (the paper's top-p).
SIZE_FACTOR = 0.9
ACCURACY_FACTOR = 1.02
SIZE_METRICS = ("processor_param_count", "param_count")


def _size_metric(parents: list[ParentInfo]) -> str | None:
  """The parameter count every parent reports (the processor's if known)."""
  for name in SIZE_METRICS:
    if all(isinstance(p.metrics.get(name), (int, float)) for p in parents):
      return name
  return None


def size_aware_fitness(metrics: Mapping[str, Any]) -> float | None:
  """EvoPrompting's selection score: minus error x parameter count (higher is better).

  ``None`` (never selected before a program that has one) when the accuracy or the
  size is missing.
  """
  accuracy = metrics.get("ood_val_acc")
  size = next((metrics[n] for n in SIZE_METRICS if isinstance(metrics.get(n), (int, float))),
              None)
  if not isinstance(accuracy, (int, float)) or size is None:
    return None
  return -(1.0 - float(accuracy)) * float(size)


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
  """Crossover of k=2 parents drawn from the surviving population, conditioned on targets."""

  name = "evoprompting"
  context_request = ContextRequest()  # The uniform sampler draws the second example.
  engine_options = EngineOptions(sampler="uniform", companions=PARENTS - 1, islands=1,
                                 population=SURVIVORS, generation=ROUND,
                                 score=size_aware_fitness)
  compare_note = ("EvoPrompting: no soft prompt-tuning (an API model has no trainable soft "
                  "prompt; the model stays fixed and only the few-shot examples evolve); no "
                  "error-threshold filter; rounds of 10 proposals keeping 10 survivors by "
                  "error x processor parameters; starts from the one seed program.")

  def choose_parents(self, parent: ParentInfo) -> list[ParentInfo]:
    """The few-shot examples, lowest ``ood_val_acc`` first (as the prompt presents them)."""
    drawn = [parent, *(p for p in parent.from_source("island")[:PARENTS - 1]
                       if p.program_id != parent.program_id)]
    return sorted(drawn, key=lambda p: p.fitness if p.fitness is not None else -math.inf)

  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    del history, rng  # The sampler drew the examples.
    parents = self.choose_parents(parent)
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
                 "round": ROUND, "survivors": SURVIVORS, "targets": goal,
                 "size_aware_fitness": {p.program_id: size_aware_fitness(p.metrics)
                                        for p in parents},
                 "inspirations": len(parents) - 1}
    return PromptPlan("crossover", user, structure)


__all__ = ["EvoPromptingProposer", "size_aware_fitness", "targets"]
