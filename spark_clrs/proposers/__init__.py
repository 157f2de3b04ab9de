"""Proposers by strategy name: ``make_proposer("spark", config, client, factors)``.

Every strategy of SPEC §6 lives in its own module and registers itself with
``@register("<name>")`` (see :mod:`spark_clrs.proposers.registry`); importing this
package imports them all, so :func:`strategies` lists every ``--strategy`` value.
Population-based strategies state the archived programs they want beside the parent
as ``Proposer.context_request``; :func:`population.inspirations` fetches them.
"""

from __future__ import annotations

from spark_clrs.proposers import (  # noqa: F401  (imported to register the strategies)
  asr_only,
  eoh,
  evoprompting,
  funsearch,
  mutation,
  openevolve,
  population,
  rc_sar,
  spark,
)
from spark_clrs.proposers.base import (
  ContextRequest,
  IslandReset,
  Outcome,
  ParentInfo,
  Plateau,
  Proposal,
  ProposalHistory,
  Proposer,
  ProposerConfig,
)
from spark_clrs.proposers.registry import (
  ProposerFactory,
  compare_note,
  make_proposer,
  register,
  strategies,
)

__all__ = ["ContextRequest", "IslandReset", "Outcome", "ParentInfo", "Plateau", "Proposal",
           "ProposalHistory", "Proposer", "ProposerConfig", "ProposerFactory", "compare_note",
           "make_proposer", "population", "register", "strategies"]
