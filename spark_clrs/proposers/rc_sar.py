"""``rc_sar``: SPARK without the LLM scope router (the paper's RC+SAR ablation).

No LLM decides where to edit. With ``--scope_router=all`` (the paper's ablation, the
default) the whole editable area, every configured factor, is open to every proposal:
the refinement controller reads all the factor regions (the rest of the program
read-only), the parent's metrics and the directives already tried, and writes one
directive that may touch any of them; the rewriter implements it with all those
regions editable and returns the whole program (``sar_output=program``) or the changed
regions with their marker lines (``sar_output=region``). Nothing *selected* that scope
(``scope_source="all_factors"``), so the one entanglement rule of SPEC §5 applies as
for any unscoped proposal: a child that edits more than one factor is entangled. The
controller's freeze still rejects edits outside the regions.

Two further ablation variants pick one factor without any LLM call:
``--scope_router=random`` (uniform, from the proposal's seeded rng) and
``--scope_router=bandit`` (UCB1 over the per-factor gains of past proposals,
``--ucb_c``). Their scope is selected, so any change outside it is entangled (and
rejected before compute under the freeze). Prompts live in ``prompts/rc_sar/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spark_clrs.llm import LLMClient, LLMRecord, prompts
from spark_clrs.programs import regions
from spark_clrs.proposers import context, parsing
from spark_clrs.proposers.bandit import ucb_choose
from spark_clrs.proposers.base import (
  ParentInfo,
  Proposal,
  ProposalHistory,
  Proposer,
  ProposerConfig,
)
from spark_clrs.proposers.registry import register

SCOPE_ROUTERS = ("all", "random", "bandit")


@register("rc_sar")
class RcSarProposer(Proposer):
  """Refiner -> rewriter over all configured factors at once."""

  name = "rc_sar"

  def __init__(self, config: ProposerConfig, client: LLMClient, factors: Sequence[str]):
    if config.sar_output not in parsing.SAR_OUTPUTS:
      raise ValueError(f"sar_output={config.sar_output!r}; use one of {parsing.SAR_OUTPUTS}")
    if not factors:
      raise ValueError("rc_sar needs at least one factor; set --factors, e.g. OPERATOR,ACTION")
    if config.scope_router not in SCOPE_ROUTERS:
      raise ValueError(f"scope_router={config.scope_router!r}; use one of {SCOPE_ROUTERS}")
    self.config = config
    self.client = client
    self.factors = tuple(factors)

  def _regions(self, text: str, scope: Sequence[str]) -> str:
    return "\n\n".join(
        prompts.render("rc_sar/region", name=f, description=context.factor_description(f),
                       body=regions.get_region(text, f).rstrip("\n")).strip("\n")
        for f in scope)

  def choose_scope(self, history: ProposalHistory, rng: np.random.Generator,
                   decision: dict[str, Any]) -> tuple[str, ...]:
    """Every factor (``all``), or one drawn at random or by the UCB bandit."""
    router = self.config.scope_router
    if router == "all":
      return self.factors
    if router == "random":
      return (self.factors[int(rng.integers(len(self.factors)))],)
    choice = ucb_choose(self.factors, history.scope_gains(self.factors), rng,
                        c=self.config.ucb_c)
    decision["bandit"] = {"scores": choice.scores, "pulls": choice.pulls}
    return (choice.arm,)

  def refine(self, parent: ParentInfo, history: ProposalHistory,
             calls: list[LLMRecord], scope: Sequence[str] | None = None
             ) -> tuple[str | None, str | None]:
    """``(directive, None)`` or ``(None, error)``."""
    cfg = self.config
    scope = tuple(scope or self.factors)
    tried = context.merge_outcomes(
        [o for o in parent.lineage_outcomes() if o.directive],
        [o for o in history.outcomes if o.directive])
    if len(scope) < len(self.factors):
      tried = [o for o in tried if o.scope and set(o.scope) <= set(scope)]
    user = prompts.render(
        "rc_sar/refiner.user", scope=",".join(scope), factors=", ".join(scope),
        task_card=context.task_card(cfg.task), editable_regions=self._regions(parent.text, scope),
        read_only=regions.skeleton(parent.text, keep=scope).rstrip("\n"),
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

  def rewrite(self, parent: ParentInfo, directive: str, calls: list[LLMRecord],
              scope: Sequence[str] | None = None) -> tuple[str | None, str | None]:
    """``(child_text, None)`` or ``(None, error)``."""
    mode = self.config.sar_output
    scope = tuple(scope or self.factors)
    names = ", ".join(scope)
    system = prompts.render("rc_sar/rewriter.system",
                            contract=prompts.render("contract/clrs_processor"))
    user = prompts.render(
        "rc_sar/rewriter.user", scope=",".join(scope), factors=names, output=mode,
        directive=directive, program=parent.text.rstrip("\n"),
        editable_regions=self._regions(parent.text, scope),
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
        child = parsing.extract_regions(record.reply, parent.text, scope,
                                        finish_reason=record.finish_reason)
    except parsing.ReplyError as e:
      return None, f"rewriter: {e}"
    return child, None

  def propose(self, parent: ParentInfo, history: ProposalHistory,
              rng: np.random.Generator) -> Proposal:
    router = self.config.scope_router
    calls: list[LLMRecord] = []
    decision: dict[str, Any] = {
        "strategy": self.name, "sar_output": self.config.sar_output, "scope_router": router,
        "scope_source": "all_factors" if router == "all" else router,
        "prompt": {"roles": ["refiner", "rewriter"], "router": None,
                   "scope": "every configured factor" if router == "all"
                   else f"one factor chosen by the {router} router (no LLM)"}}
    try:
      regions.require_regions(parent.text, self.factors)
    except regions.RegionError as e:
      return Proposal(None, None, None, decision, calls, error=f"parent {parent.program_id}: {e}")
    scope = self.choose_scope(history, rng, decision)
    decision["scope"] = list(scope)
    directive, error = self.refine(parent, history, calls, scope)
    if directive is None:
      return Proposal(None, scope, None, decision, calls, error=error)
    child, error = self.rewrite(parent, directive, calls, scope)
    child = parsing.repair_drift(child, parent.text, scope, self.config.sar_output, decision)
    return Proposal(child, scope, directive, decision, calls, error=error)


__all__ = ["RcSarProposer"]
