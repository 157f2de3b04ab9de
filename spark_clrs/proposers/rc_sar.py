"""``rc_sar``: SPARK without the scope router (the paper's RC+SAR ablation).

No router decides where to edit: the whole editable area, every configured factor, is
in scope for every proposal. The refinement controller reads all the factor regions
(the rest of the program read-only), the parent's metrics and the directives already
tried, and writes one directive that may touch any of them; the rewriter implements it
with all those regions editable and returns the whole program
(``sar_output=program``) or the changed regions with their marker lines
(``sar_output=region``). The scope is ``self.factors``, so the controller's scope
check still rejects edits outside the regions, and a child that edits several factors
is in scope. Prompts live in ``prompts/rc_sar/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spark_clrs import prompts, regions
from spark_clrs.llm import LLMClient, LLMRecord
from spark_clrs.proposers import context, parsing
from spark_clrs.proposers.base import (
  ParentInfo,
  Proposal,
  ProposalHistory,
  Proposer,
  ProposerConfig,
)
from spark_clrs.proposers.registry import register


@register("rc_sar")
class RcSarProposer(Proposer):
  """Refiner -> rewriter over all configured factors at once."""

  name = "rc_sar"

  def __init__(self, config: ProposerConfig, client: LLMClient, factors: Sequence[str]):
    if config.sar_output not in parsing.SAR_OUTPUTS:
      raise ValueError(f"sar_output={config.sar_output!r}; use one of {parsing.SAR_OUTPUTS}")
    if not factors:
      raise ValueError("rc_sar needs at least one factor; set --factors, e.g. OPERATOR,ACTION")
    self.config = config
    self.client = client
    self.factors = tuple(factors)

  def _regions(self, text: str) -> str:
    return "\n\n".join(
        prompts.render("rc_sar/region", name=f, description=context.factor_description(f),
                       body=regions.get_region(text, f).rstrip("\n")).strip("\n")
        for f in self.factors)

  def refine(self, parent: ParentInfo, history: ProposalHistory,
             calls: list[LLMRecord]) -> tuple[str | None, str | None]:
    """``(directive, None)`` or ``(None, error)``."""
    cfg = self.config
    tried = context.merge_outcomes(
        [o for o in parent.lineage_outcomes() if o.directive],
        [o for o in history.outcomes if o.directive])
    user = prompts.render(
        "rc_sar/refiner.user", scope=",".join(self.factors), factors=", ".join(self.factors),
        task_card=context.task_card(cfg.task), editable_regions=self._regions(parent.text),
        read_only=regions.skeleton(parent.text, keep=self.factors).rstrip("\n"),
        metrics=context.format_metrics(parent.metrics),
        tried=context.format_tried(tried, cfg.tried_window))
    record = self.client.complete(
        "refiner", context.chat(prompts.render("rc_sar/refiner.system"), user))
    calls.append(record)
    if not record.ok:
      return None, f"refiner call failed: {record.error}"
    try:
      return parsing.parse_directive(record.reply), None
    except parsing.ReplyError as e:
      return None, f"refiner: {e}"

  def rewrite(self, parent: ParentInfo, directive: str,
              calls: list[LLMRecord]) -> tuple[str | None, str | None]:
    """``(child_text, None)`` or ``(None, error)``."""
    mode = self.config.sar_output
    names = ", ".join(self.factors)
    system = prompts.render("rc_sar/rewriter.system",
                            contract=prompts.render("contract/clrs_processor"))
    user = prompts.render(
        "rc_sar/rewriter.user", scope=",".join(self.factors), factors=names, output=mode,
        directive=directive, program=parent.text.rstrip("\n"),
        editable_regions=self._regions(parent.text),
        output_instructions=prompts.render(f"rc_sar/rewriter.output_{mode}", factors=names))
    record = self.client.complete("rewriter", context.chat(system, user))
    calls.append(record)
    if not record.ok:
      return None, f"rewriter call failed: {record.error}"
    try:
      if mode == "program":
        child = parsing.extract_program(record.reply, parent.text, self.factors,
                                        finish_reason=record.finish_reason)
      else:
        child = parsing.extract_regions(record.reply, parent.text, self.factors,
                                        finish_reason=record.finish_reason)
    except parsing.ReplyError as e:
      return None, f"rewriter: {e}"
    return child, None

  def propose(self, parent: ParentInfo, history: ProposalHistory,
              rng: np.random.Generator) -> Proposal:
    del rng  # No routing decision to make.
    calls: list[LLMRecord] = []
    decision: dict[str, Any] = {"strategy": self.name, "sar_output": self.config.sar_output,
                                "scope_source": "all_factors", "scope": list(self.factors),
                                "prompt": {"roles": ["refiner", "rewriter"], "router": None,
                                           "scope": "every configured factor"}}
    try:
      regions.require_regions(parent.text, self.factors)
    except regions.RegionError as e:
      return Proposal(None, None, None, decision, calls, error=f"parent {parent.program_id}: {e}")
    directive, error = self.refine(parent, history, calls)
    if directive is None:
      return Proposal(None, self.factors, None, decision, calls, error=error)
    child, error = self.rewrite(parent, directive, calls)
    return Proposal(child, self.factors, directive, decision, calls, error=error)


__all__ = ["RcSarProposer"]
