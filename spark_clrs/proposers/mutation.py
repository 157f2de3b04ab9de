"""``mutation``: a blind random mutation operator over the offline catalogue, no LLM.

The rule-based baseline (SPEC §6), in the sense of regularized evolution's mutation
(Real et al. 2019): a factor is drawn uniformly among those with an applicable
catalogue move, then one applicable move of that factor is drawn uniformly and applied
to the parent's region. It has no memory and reads no feedback: the same move may be
drawn again from the same parent, and past gains play no part.

That is the difference from ``spark`` run with the offline proposer ``spark/offline``,
which uses the same catalogue of moves but through SPARK's three roles: its router
weighs factors by how many moves apply, and its refiner reads the directives already
tried in that scope (lineage and search) and picks a move not yet tried, so it spends
its budget on untried edits. ``spark`` vs ``mutation`` offline therefore measures what
that memory buys, not what an LLM does.

No prompt is rendered and no LLM is called: the proposal has zero calls and zero
tokens, whatever ``--llm_model`` says. The child is scoped to the one factor (a
rule-selected scope), and the move's Change / Why / Expected-effect text is its
directive (naming the move as ``[move: name]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spark_clrs.llm import LLMClient, offline_moves
from spark_clrs.programs import regions
from spark_clrs.proposers.base import (
  ParentInfo,
  Proposal,
  ProposalHistory,
  Proposer,
  ProposerConfig,
)
from spark_clrs.proposers.registry import register


@register("mutation")
class MutationProposer(Proposer):
  """One uniformly drawn catalogue move in one uniformly drawn factor per proposal."""

  name = "mutation"

  def __init__(self, config: ProposerConfig, client: LLMClient, factors: Sequence[str]):
    del client  # Never called.
    if not factors:
      raise ValueError("mutation needs at least one factor; set --factors, e.g. OPERATOR,ACTION")
    self.config = config
    self.factors = tuple(factors)

  def propose(self, parent: ParentInfo, history: ProposalHistory,
              rng: np.random.Generator) -> Proposal:
    del history  # Memoryless: no feedback, no record of tried moves.
    decision: dict[str, Any] = {"strategy": self.name, "scope_source": "rule",
                                "prompt": {"roles": [], "llm_calls": 0,
                                           "scope": "one factor, drawn uniformly"}}
    try:
      regions.require_regions(parent.text, self.factors)
    except regions.RegionError as e:
      return Proposal(None, None, None, decision, [], error=f"parent {parent.program_id}: {e}")
    options = {f: offline_moves.applicable(f, regions.get_region(parent.text, f))
               for f in self.factors}
    usable = [f for f in self.factors if options[f]]
    if not usable:
      factor = self.factors[0]
      decision.update(scope=factor, applicable_moves={f: 0 for f in self.factors})
      return Proposal(None, (factor,), None, decision, [],
                      error=f"mutation: no catalogue move applies to any factor region of "
                            f"parent {parent.program_id}")
    factor = usable[int(rng.integers(len(usable)))]
    move = options[factor][int(rng.integers(len(options[factor])))]
    decision.update(scope=factor, move=move.name,
                    applicable_moves={f: len(options[f]) for f in self.factors})
    child = regions.replace_region(parent.text, factor,
                                   move.apply(regions.get_region(parent.text, factor)))
    return Proposal(child, (factor,), move.directive(), decision, [])


__all__ = ["MutationProposer"]
