"""``eoh``: Evolution of Heuristics, thoughts and code evolved together.

The EoH baseline (Liu et al., "Evolution of Heuristics: Towards Efficient Automatic
Algorithm Design Using Large Language Model", ICML 2024; github.com/FeiLiu36/EoH).
Mechanisms, as its code does them:

* **Thought + code**: every program carries a one-sentence description of its idea;
  the LLM answers with a new thought in braces followed by the code, and the thought
  is recorded in the decision so that later prompts show it. A reply without code is
  asked for again, up to ``REPLY_ATTEMPTS`` = 4 requests (EoH's extraction retries).
* **Four prompt operators with EoH's weights**: ``E1`` (a new idea unlike all the
  given ones), ``E2`` (the backbone idea the given programs share, in a new variant),
  ``M1`` (a structural modification of one program) and ``M2`` (the same program with
  other parameter settings), each drawn with weight 1 (EoH's default
  ``operator_weights``), one operator per offspring.
* **One population, generational** (``islands=1``, ``generation=POPULATION``): a
  generation is ``POPULATION`` offspring, all bred from the population as it stood when
  the generation began; then the offspring join it and population management keeps the
  ``POPULATION`` best (EoH's ``pop_size`` default, 5). No islands, no migration.
* **Population management drops equal objectives** (``distinct_scores``): of programs
  whose fitness is equal (to 5 decimals, as EoH rounds objectives), only the one
  already in the population (else the first) is kept.
* **Rank-based parent selection** (archive sampler ``rank``): a program of rank r
  (0 = fittest) is drawn with probability proportional to ``1 / (r + 1 + N)``, N the
  population size, with replacement (so E1/E2's two parents may be one program); E1
  and E2 show ``m = 2`` such parents, M1 and M2 the first alone.
* **A duplicate child is asked for again** (``duplicate_retries=2``): when the new
  program equals a member of the population (the parent included; AST-equal), the same
  request is sent again, at most twice, before the child is kept; each request is
  counted against the budget like any other.

Adaptations: EoH starts from 2N programs written from the task description (operator
``i1``); every strategy here starts from the same seed program, so the population
starts from it alone (as EoH's ``use_seed`` option does). On a retry EoH also redraws
the parents; here the same parents are asked again, so the child stays credited to the
program it was bred from. E2 with no second program (a custom engine) falls back to
E1, and the decision records both operators. Unscoped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spark_clrs.llm import LLMRecord, prompts
from spark_clrs.proposers import context, parsing
from spark_clrs.proposers.base import ContextRequest, ParentInfo, ProposalHistory
from spark_clrs.proposers.freeform import FreeformProposer, PromptPlan, join_entries, shown
from spark_clrs.proposers.options import EngineOptions
from spark_clrs.proposers.registry import register

OPERATORS = ("E1", "E2", "M1", "M2")
OPERATOR_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # EoH's default operator_weights.
EXPLORE_PARENTS = 2   # m: programs shown to E1 / E2 (EoH's n_parents).
POPULATION = 5        # N: population size and offspring per generation (EoH's pop_size).
DUPLICATE_RETRIES = 2  # EoH asks again at most twice for a duplicate offspring.
REPLY_ATTEMPTS = 4    # EoH's requests per prompt while no code can be extracted.
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
  # The rank sampler draws the second parent; the population is for the duplicate check.
  context_request = ContextRequest(population=POPULATION)
  engine_options = EngineOptions(sampler="rank", companions=EXPLORE_PARENTS - 1, islands=1,
                                 population=POPULATION, generation=POPULATION,
                                 distinct_scores=True)
  reply_attempts = REPLY_ATTEMPTS
  duplicate_retries = DUPLICATE_RETRIES
  operators: tuple[str, ...] = OPERATORS
  compare_note = ("EoH: starts from the seed program instead of 2N programs written from the "
                  "task (its use_seed mode); a duplicate offspring is asked for again from the "
                  "same parents (EoH redraws them); whole programs instead of one function.")

  def draw_operator(self, rng: np.random.Generator) -> str:
    weights = np.array([OPERATOR_WEIGHTS[OPERATORS.index(o)] for o in self.operators])
    return self.operators[int(rng.choice(len(self.operators), p=weights / weights.sum()))]

  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    del history
    requested = self.draw_operator(rng)
    programs = [parent]
    if requested in ("E1", "E2"):  # The sampler's draws, repeats kept (with replacement).
      programs = [parent, *parent.from_source("island")[:EXPLORE_PARENTS - 1]]
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
    else:
      decision.pop("thought_error", None)


__all__ = ["DUPLICATE_RETRIES", "EoHProposer", "OPERATORS", "OPERATOR_WEIGHTS", "POPULATION",
           "thought_of"]
