"""``eoh``: Evolution of Heuristics, thoughts and code evolved together.

The EoH baseline (Liu et al., "Evolution of Heuristics: Towards Efficient Automatic
Algorithm Design Using Large Language Model", ICML 2024; its open implementation).
Mechanisms:

* **Thought + code**: every program carries a one-sentence description of its idea;
  the LLM answers with a new thought in braces followed by the code, and the thought
  is recorded in the decision so that later prompts show it.
* **Four prompt operators with the paper's probabilities**: EoH applies each operator
  with weight 1 (every operator equally often), so each proposal draws one of
  ``E1`` (a new idea unlike all the given ones), ``E2`` (the backbone idea the given
  programs share, in a new variant), ``M1`` (a structural modification of one program)
  and ``M2`` (the same program with other parameter settings) with probability 1/4.
* **Rank-based parent selection** (archive sampler ``rank``): a program of rank r
  (0 = fittest) of the parent's island is drawn with probability proportional to
  ``1 / (r + 1 + N)``, N the island's population, with replacement; E1 and E2 show
  ``m = 2`` such parents (the parent and one companion), M1 and M2 the parent alone.
* **Fixed-size population** (``population=POPULATION``): after every new program the
  island keeps its ``POPULATION`` fittest programs, by fitness alone; duplicates never
  enter (the controller gives an AST-identical child its twin's metrics, marked
  duplicate, and the archive keeps duplicates off every island).

E2 needs two programs: with no companion it falls back to E1, and the decision records
both operators. Unscoped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spark_clrs.llm import LLMRecord, prompts
from spark_clrs.proposers import context, parsing, population
from spark_clrs.proposers.base import ContextRequest, ParentInfo, ProposalHistory
from spark_clrs.proposers.freeform import FreeformProposer, PromptPlan, join_entries, shown
from spark_clrs.proposers.options import EngineOptions
from spark_clrs.proposers.registry import register

OPERATORS = ("E1", "E2", "M1", "M2")
OPERATOR_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # EoH's ec_operator_weights.
EXPLORE_PARENTS = 2   # m: programs shown to E1 / E2.
POPULATION = 10       # N: programs kept per island (EoH's ec_pop_size).
EDITS = {"E1": "explore", "E2": "crossover", "M1": "one", "M2": "parameter"}


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
  context_request = ContextRequest()  # The rank sampler draws the second parent.
  engine_options = EngineOptions(sampler="rank", companions=EXPLORE_PARENTS - 1,
                                 population=POPULATION)
  operators: tuple[str, ...] = OPERATORS

  def draw_operator(self, rng: np.random.Generator) -> str:
    weights = np.array([OPERATOR_WEIGHTS[OPERATORS.index(o)] for o in self.operators])
    return self.operators[int(rng.choice(len(self.operators), p=weights / weights.sum()))]

  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    del history
    requested = self.draw_operator(rng)
    programs = [parent]
    if requested in ("E1", "E2"):
      others = [p for p in population.ranked(parent.from_source("island"))
                if p.program_id != parent.program_id]
      programs = [parent, *others[:EXPLORE_PARENTS - 1]]
    operator = "E1" if requested == "E2" and len(programs) < 2 else requested
    entries = join_entries(
        prompts.render("eoh/program", index=i, program_id=p.program_id, thought=thought_of(p),
                       metrics=context.metrics_line(p.metrics), program=p.text.rstrip("\n"))
        for i, p in enumerate(programs, start=1))
    slots = {**self.common_slots(parent), "programs": entries,
             "answer_format": prompts.render("eoh/answer_format").strip(),
             "edit": EDITS[operator],
             "others": ",".join(p.program_id for p in programs[1:])}
    if operator in ("E1", "E2"):
      slots["count"] = str(len(programs))
    user = prompts.render(f"eoh/{operator.lower()}", **slots)
    structure = {"operator": operator, "requested_operator": requested, "scope": "unscoped",
                 "reply": "thought+code", "parents": shown(programs),
                 "inspirations": len(programs) - 1,
                 "operator_weights": dict(zip(OPERATORS, OPERATOR_WEIGHTS, strict=True))}
    return PromptPlan(operator.lower(), user, structure, extra={"operator": operator})

  def read_reply(self, record: LLMRecord, decision: dict[str, Any]) -> None:
    thought = parsing.split_thought(record.reply)
    decision["thought"] = thought
    if thought is None:
      decision["thought_error"] = "the reply has no {...} description before its code"


__all__ = ["EoHProposer", "OPERATORS", "OPERATOR_WEIGHTS", "POPULATION", "thought_of"]
