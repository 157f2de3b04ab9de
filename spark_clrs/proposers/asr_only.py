"""``asr_only``: SPARK without the refinement controller (the paper's ASR-only ablation).

The scope router decides WHERE exactly as in SPARK (same prompts, same retries, same
UCB fallback), but no refiner writes a directive: the scoped rewriter gets the program
with only the routed region editable, plus the task, the factor's description and the
parent's metrics, and decides by itself what to change there. Its prompts live in
``prompts/asr_only/``; the router and the output instructions are SPARK's own, so
the ablation differs from ``spark`` in the missing directive only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spark_clrs.llm import LLMRecord, prompts
from spark_clrs.programs import regions
from spark_clrs.proposers import context, parsing
from spark_clrs.proposers.base import ParentInfo, Proposal, ProposalHistory
from spark_clrs.proposers.registry import register
from spark_clrs.proposers.spark import SparkProposer


@register("asr_only")
class AsrOnlyProposer(SparkProposer):
  """Router -> rewriter, no directive."""

  name = "asr_only"

  def rewrite_undirected(self, parent: ParentInfo, scope: str,
                         calls: list[LLMRecord]) -> tuple[str | None, str | None]:
    """``(child_text, None)`` or ``(None, error)``."""
    mode = self.config.sar_output
    system = prompts.render("asr_only/rewriter.system",
                            contract=prompts.render("contract/clrs_processor"))
    user = prompts.render(
        "asr_only/rewriter.user", scope=scope, output=mode,
        task_card=context.task_card(self.config.task),
        factor_description=context.factor_description(scope),
        metrics=context.format_metrics(parent.metrics), program=parent.text.rstrip("\n"),
        region=regions.get_region(parent.text, scope).rstrip("\n"),
        output_instructions=prompts.render(f"spark/rewriter.output_{mode}", scope=scope))
    return self.send_rewrite(context.chat(system, user), parent, scope, calls)

  def propose(self, parent: ParentInfo, history: ProposalHistory,
              rng: np.random.Generator) -> Proposal:
    calls: list[LLMRecord] = []
    decision: dict[str, Any] = {"strategy": self.name, "sar_output": self.config.sar_output,
                                "prompt": {"roles": ["router", "rewriter"], "directive": None,
                                           "scope": "one factor, chosen by the router"}}
    try:
      regions.require_regions(parent.text, self.factors)
    except regions.RegionError as e:
      return Proposal(None, None, None, decision, calls, error=f"parent {parent.program_id}: {e}")
    scope = self.route(parent, history, rng, calls, decision)
    decision["scope"] = scope
    child, error = self.rewrite_undirected(parent, scope, calls)
    child = parsing.repair_drift(child, parent.text, (scope,), self.config.sar_output, decision)
    return Proposal(child, (scope,), None, decision, calls, error=error)


__all__ = ["AsrOnlyProposer"]
