"""``openevolve``: free-form rewrite of the whole program, inspired by the population.

The OpenEvolve / AlphaEvolve baseline (SPEC §6). One LLM call sees the current program
with its metrics and the outcomes of its lineage's recent attempts, the fittest
programs of the run (``top``) and programs from other MAP-Elites cells of the parent's
island (``diverse``: different MACs / parameter counts), each with its metrics, and
returns a complete rewritten program. Regions are not enforced: the child may edit any
factor or several, which ``entanglement_rate`` then shows.

Without inspirations (the controller supplied none, or the population is only the
seed) the prompt says so and the rewrite is conditioned on the parent alone.
"""

from __future__ import annotations

import numpy as np

from spark_clrs import prompts
from spark_clrs.proposers import context
from spark_clrs.proposers.base import ContextRequest, ParentInfo, ProposalHistory
from spark_clrs.proposers.freeform import FreeformProposer, PromptPlan, join_entries, shown
from spark_clrs.proposers.registry import register

TOP_PROGRAMS = 3
DIVERSE_PROGRAMS = 2
PREVIOUS_ATTEMPTS = 5


@register("openevolve")
class OpenEvolveProposer(FreeformProposer):
  """Full rewrite with top + diverse programs in the prompt."""

  name = "openevolve"
  context_request = ContextRequest(top=TOP_PROGRAMS, diverse=DIVERSE_PROGRAMS)

  def _entries(self, programs: list[ParentInfo], label: str) -> str:
    out = []
    for i, p in enumerate(programs, start=1):
      where = f"{label} {i}" if p.cell is None else f"{label} {i}, MAP-Elites cell {p.cell}"
      out.append(prompts.render("openevolve/program", program_id=p.program_id, label=where,
                                metrics=context.format_metrics(p.metrics),
                                program=p.text.rstrip("\n")))
    return join_entries(out) or prompts.render("openevolve/none").strip()

  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    del history, rng  # The prompt is fully determined by the parent and its inspirations.
    top = parent.from_source("top")[:TOP_PROGRAMS]
    diverse = parent.from_source("diverse")[:DIVERSE_PROGRAMS]
    user = prompts.render(
        "openevolve/user", **self.common_slots(parent),
        metrics=context.format_metrics(parent.metrics),
        previous_attempts=context.format_lineage(parent.lineage_outcomes(), PREVIOUS_ATTEMPTS),
        top_programs=self._entries(top, "top program"),
        diverse_programs=self._entries(diverse, "diverse program"),
        program=parent.text.rstrip("\n"))
    structure = {"mode": "full_rewrite", "scope": "unscoped", "top": shown(top),
                 "diverse": shown(diverse), "inspirations": len(top) + len(diverse),
                 "previous_attempts": min(len(parent.lineage), PREVIOUS_ATTEMPTS)}
    return PromptPlan("rewriter", user, structure)


__all__ = ["OpenEvolveProposer"]
