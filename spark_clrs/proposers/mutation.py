"""``mutation``: the offline catalogue as a plain mutation operator, without any LLM call.

The rule-based baseline (SPEC §6): a factor is drawn with probability proportional to
the number of catalogue moves that apply to it (as ``spark/offline``'s router does),
then a move of that factor not yet tried from this lineage or in this search (any
applicable one once all were tried) is drawn uniformly and applied to the parent's
region. No prompt is rendered and no LLM is called: the proposal has zero calls and
zero tokens, whatever ``--llm_model`` says. The child is scoped to the one factor, and
the move's Change / Why / Expected-effect text is its directive (naming the move as
``[move: name]``, which is how later proposals know it was tried).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spark_clrs import offline, offline_moves, regions
from spark_clrs.llm import LLMClient
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
  """One catalogue move in one factor per proposal."""

  name = "mutation"

  def __init__(self, config: ProposerConfig, client: LLMClient, factors: Sequence[str]):
    del client  # Never called.
    if not factors:
      raise ValueError("mutation needs at least one factor; set --factors, e.g. OPERATOR,ACTION")
    self.config = config
    self.factors = tuple(factors)

  def tried_moves(self, parent: ParentInfo, history: ProposalHistory, factor: str) -> set[str]:
    """Moves already tried in ``factor`` from this lineage or anywhere in this search."""
    rows = [*parent.lineage_outcomes(), *history.outcomes]
    return {name for o in rows if o.scope and factor in o.scope
            for name in offline_moves.named_moves(o.directive)}

  def propose(self, parent: ParentInfo, history: ProposalHistory,
              rng: np.random.Generator) -> Proposal:
    decision: dict[str, Any] = {"strategy": self.name, "scope_source": "rule",
                                "prompt": {"roles": [], "llm_calls": 0,
                                           "scope": "one factor, drawn by applicable moves"}}
    try:
      regions.require_regions(parent.text, self.factors)
    except regions.RegionError as e:
      return Proposal(None, None, None, decision, [], error=f"parent {parent.program_id}: {e}")
    factor, counts = offline.weighted_factor(parent.text, self.factors, rng)
    body = regions.get_region(parent.text, factor)
    tried = self.tried_moves(parent, history, factor)
    fresh = offline_moves.applicable(factor, body, exclude=tried)
    moves = fresh or offline_moves.applicable(factor, body)
    decision.update(scope=factor, applicable_moves=counts, untried_moves=len(fresh))
    if not moves:
      return Proposal(None, (factor,), None, decision, [],
                      error=f"mutation: no catalogue move applies to the {factor} region of "
                            f"parent {parent.program_id}")
    move = moves[int(rng.integers(len(moves)))]
    decision["move"] = move.name
    child = regions.replace_region(parent.text, factor, move.apply(body))
    return Proposal(child, (factor,), move.directive(), decision, [])


__all__ = ["MutationProposer"]
