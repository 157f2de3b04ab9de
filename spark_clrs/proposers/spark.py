"""SPARK's proposer: scope router (ASR) -> refinement controller (RC) -> scoped rewriter (SAR).

One proposal is three LLM calls (SPEC §1 steps 2-4):

1. the router reads the parent, its metrics, the lineage's recent outcomes, the gains
   per factor and the plateau signal and names ONE factor; an unusable reply is
   re-asked ``router_retries`` times with the parse error, then a UCB bandit over the
   per-factor gains decides and the decision says ``fallback``;
2. the refiner reads that factor's region (the rest read-only), the metrics and the
   directives already tried there, and writes one factor-local directive;
3. the rewriter gets the program with only that region editable plus the directive,
   and returns the whole program (``sar_output=program``) or the region body
   (``sar_output=region``, spliced in here).

Bad replies end the proposal with a one-line ``Proposal.error``; they never raise.
Checking that the child left everything outside the region alone is the
controller's scope check, not this module's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
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

log = logging.getLogger(__name__)


@register("spark")
class SparkProposer(Proposer):
  """ASR -> RC -> SAR over the configured factors."""

  name = "spark"

  def __init__(self, config: ProposerConfig, client: LLMClient, factors: Sequence[str]):
    if config.sar_output not in parsing.SAR_OUTPUTS:
      raise ValueError(f"sar_output={config.sar_output!r}; use one of {parsing.SAR_OUTPUTS}")
    if not factors:
      raise ValueError("SPARK needs at least one factor; set --factors, e.g. OPERATOR,ACTION")
    self.config = config
    self.client = client
    self.factors = tuple(factors)

  # ---- ASR: where to edit -------------------------------------------------------------------

  def route(self, parent: ParentInfo, history: ProposalHistory, rng: np.random.Generator,
            calls: list[LLMRecord], decision: dict[str, Any]) -> str:
    """The factor to edit; records ``scope_source`` in ``decision``.

    ``scope_source`` is ``llm`` (a model chose), ``offline`` (the rule-based offline
    provider answered) or ``fallback`` (no usable reply: the UCB bandit chose). The
    lineage rows shown are shrunk to fit the router model's window (oldest first).
    """
    cfg = self.config
    factor_list = ", ".join(self.factors)
    system = prompts.render("spark/router.system")
    lineage = parent.lineage_outcomes()[-cfg.lineage_window:] if cfg.lineage_window > 0 else []

    def build(keep: Mapping[str, int]) -> list[dict[str, str]]:
      user = prompts.render(
          "spark/router.user", factors=factor_list, task_card=context.task_card(cfg.task),
          factor_descriptions="\n".join(context.factor_description(f) for f in self.factors),
          parent_id=parent.program_id, program=parent.text.rstrip("\n"),
          metrics=context.format_metrics(parent.metrics),
          lineage=context.format_lineage(lineage, keep["lineage"], parent.program_id),
          scope_stats=context.format_scope_stats(history, self.factors),
          plateau=context.format_plateau(history))
      return context.chat(system, user)

    errors: list[str] = []
    messages: list[dict[str, str]] = []
    for attempt in range(cfg.router_retries + 1):
      if attempt == 0:
        record = context.send(self.client, "router", build, {"lineage": len(lineage)}, decision)
        messages = record.messages
      else:
        record = self.client.complete("router", messages)
      calls.append(record)
      if not record.ok:
        errors.append(f"call failed: {record.error}")
        continue
      try:
        choice = parsing.parse_router_reply(record.reply, self.factors)
      except parsing.ReplyError as e:
        errors.append(str(e))
        retry = prompts.render("spark/router.retry", error=str(e), factors=factor_list)
        messages = messages + [{"role": "assistant", "content": record.reply or ""},
                               {"role": "user", "content": retry}]
        continue
      # Who chose the scope: an LLM, or the rule-based offline provider standing in for one.
      decision.update(scope_source=record.answered_by, rationale=choice.rationale,
                      router_attempts=len(errors) + 1, router_errors=errors)
      return choice.scope
    bandit = ucb_choose(self.factors, history.scope_gains(self.factors), rng, c=cfg.ucb_c)
    decision.update(scope_source="fallback", rationale="UCB bandit over per-factor gains",
                    router_attempts=len(errors), router_errors=errors,
                    bandit_scores=bandit.scores, bandit_pulls=bandit.pulls)
    log.warning("router gave no usable scope in %d attempt(s) (last: %s); fallback: UCB bandit "
                "chose %s", len(errors), errors[-1] if errors else "-", bandit.arm)
    return bandit.arm

  # ---- RC: how to edit ----------------------------------------------------------------------

  def refine(self, parent: ParentInfo, history: ProposalHistory, scope: str,
             calls: list[LLMRecord],
             decision: dict[str, Any] | None = None) -> tuple[str | None, str | None]:
    """``(directive, None)`` or ``(None, error)``."""
    cfg = self.config
    tried = context.merge_outcomes(
        [o for o in parent.lineage_outcomes() if o.scope and scope in o.scope and o.directive],
        [o for o in history.in_scope(scope) if o.directive])
    tried = tried[-cfg.tried_window:] if cfg.tried_window > 0 else []
    system = prompts.render("spark/refiner.system")

    def build(keep: Mapping[str, int]) -> list[dict[str, str]]:
      user = prompts.render(
          "spark/refiner.user", scope=scope, task_card=context.task_card(cfg.task),
          factor_description=context.factor_description(scope),
          region=regions.get_region(parent.text, scope).rstrip("\n"),
          read_only=regions.skeleton(parent.text, keep=[scope]).rstrip("\n"),
          metrics=context.format_metrics(parent.metrics),
          tried=context.format_tried(tried, keep["tried"]))
      return context.chat(system, user)

    record = context.send(self.client, "refiner", build, {"tried": len(tried)}, decision)
    calls.append(record)
    if not record.ok:
      return None, f"refiner call failed: {record.error}"
    try:
      return parsing.parse_directive(record.reply), None
    except parsing.ReplyError as e:
      return None, f"refiner: {e}"

  # ---- SAR: the edit ------------------------------------------------------------------------

  def rewrite(self, parent: ParentInfo, scope: str, directive: str,
              calls: list[LLMRecord]) -> tuple[str | None, str | None]:
    """``(child_text, None)`` or ``(None, error)``."""
    mode = self.config.sar_output
    system = prompts.render("spark/rewriter.system",
                            contract=prompts.render("contract/clrs_processor"))
    user = prompts.render(
        "spark/rewriter.user", scope=scope, output=mode, directive=directive,
        program=parent.text.rstrip("\n"),
        region=regions.get_region(parent.text, scope).rstrip("\n"),
        output_instructions=prompts.render(f"spark/rewriter.output_{mode}", scope=scope))
    return self.send_rewrite(context.chat(system, user), parent, scope, calls)

  def send_rewrite(self, messages: list[dict[str, str]], parent: ParentInfo, scope: str,
                   calls: list[LLMRecord]) -> tuple[str | None, str | None]:
    """Sends a rewriter request for ``scope``; ``(child_text, None)`` or ``(None, error)``."""
    record = self.client.complete("rewriter", messages)
    calls.append(record)
    if not record.ok:
      return None, f"rewriter call failed: {record.error}"
    try:
      child = parsing.extract_child(record.reply, parent.text, scope,
                                    mode=self.config.sar_output,
                                    finish_reason=record.finish_reason)
    except parsing.ReplyError as e:
      return None, f"rewriter: {e}"
    return child, None

  # ---- one proposal -------------------------------------------------------------------------

  def propose(self, parent: ParentInfo, history: ProposalHistory,
              rng: np.random.Generator) -> Proposal:
    calls: list[LLMRecord] = []
    decision: dict[str, Any] = {"strategy": self.name, "sar_output": self.config.sar_output,
                                "prompt": {"roles": ["router", "refiner", "rewriter"],
                                           "scope": "one factor, chosen by the router"}}
    try:
      regions.require_regions(parent.text, self.factors)
    except regions.RegionError as e:
      return Proposal(None, None, None, decision, calls, error=f"parent {parent.program_id}: {e}")
    scope = self.route(parent, history, rng, calls, decision)
    decision["scope"] = scope
    directive, error = self.refine(parent, history, scope, calls, decision)
    if directive is None:
      return Proposal(None, (scope,), None, decision, calls, error=error)
    child, error = self.rewrite(parent, scope, directive, calls)
    child = parsing.repair_drift(child, parent.text, (scope,), self.config.sar_output, decision)
    return Proposal(child, (scope,), directive, decision, calls, error=error)


__all__ = ["SparkProposer"]
