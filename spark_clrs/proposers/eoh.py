"""``eoh``: Evolution of Heuristics, thoughts and code evolved together.

The EoH baseline (Liu et al., 2024; SPEC §6). Every program carries a one-sentence
description of its idea, its *thought*; the LLM answers with a new thought in braces
followed by the code, and the thought is recorded in the decision so that later
prompts can show it. Each proposal applies one of four prompt operators, drawn
uniformly with the proposal's seeded rng:

* ``E1`` (exploration): a new program whose idea differs from all the given ones;
* ``E2`` (exploration): the backbone idea the given programs share, in a new variant;
* ``M1`` (modification): a structural modification of one program;
* ``M2`` (modification): the same program with different parameter settings.

E1 and E2 show the parent plus ``EXPLORE_PARENTS - 1`` members of its island (uniform
draw); M1 and M2 show the parent only. E2 needs two programs: with no island member
besides the parent it falls back to E1, and the decision records both operators.
Unscoped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spark_clrs import prompts
from spark_clrs.llm import LLMRecord
from spark_clrs.proposers import context, parsing, population
from spark_clrs.proposers.base import ContextRequest, ParentInfo, ProposalHistory
from spark_clrs.proposers.freeform import FreeformProposer, PromptPlan, join_entries, shown
from spark_clrs.proposers.registry import register

OPERATORS = ("E1", "E2", "M1", "M2")
EXPLORE_PARENTS = 2   # Programs shown to E1 / E2.
ISLAND_POOL = 8       # Fittest island members the controller is asked for.


def thought_of(program: ParentInfo) -> str:
  """The program's recorded thought, or what stands in for it."""
  thought = program.decision.get("thought")
  if isinstance(thought, str) and thought.strip():
    return thought.strip()
  return prompts.render("eoh/no_thought").strip()


@register("eoh")
class EoHProposer(FreeformProposer):
  """Thought + code with the E1 / E2 / M1 / M2 operators."""

  name = "eoh"
  context_request = ContextRequest(island=ISLAND_POOL)
  operators: tuple[str, ...] = OPERATORS

  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    del history
    requested = self.operators[int(rng.integers(len(self.operators)))]
    programs = [parent]
    if requested in ("E1", "E2"):
      others = [p for p in population.ranked(parent.from_source("island"))
                if p.program_id != parent.program_id]
      programs = population.ranked(
          [parent, *population.sample_ranked(others, EXPLORE_PARENTS - 1, rng)])
    operator = "E1" if requested == "E2" and len(programs) < 2 else requested
    entries = join_entries(
        prompts.render("eoh/program", index=i, program_id=p.program_id, thought=thought_of(p),
                       metrics=context.metrics_line(p.metrics), program=p.text.rstrip("\n"))
        for i, p in enumerate(programs, start=1))
    slots = {**self.common_slots(parent), "programs": entries,
             "answer_format": prompts.render("eoh/answer_format").strip()}
    if operator in ("E1", "E2"):
      slots["count"] = str(len(programs))
    user = prompts.render(f"eoh/{operator.lower()}", **slots)
    structure = {"operator": operator, "requested_operator": requested, "scope": "unscoped",
                 "reply": "thought+code", "parents": shown(programs),
                 "inspirations": len(programs) - 1}
    return PromptPlan(operator.lower(), user, structure, extra={"operator": operator})

  def read_reply(self, record: LLMRecord, decision: dict[str, Any]) -> None:
    thought = parsing.split_thought(record.reply)
    decision["thought"] = thought
    if thought is None:
      decision["thought_error"] = "the reply has no {...} description before its code"


__all__ = ["EoHProposer", "OPERATORS", "thought_of"]
