"""Free-form whole-program strategies: the proposal skeleton the baselines share.

OpenEvolve, EvoPrompting, FunSearch and EoH show the LLM one or more archived programs
and ask for a complete new program. None of them restricts the edit to a factor: their
proposals are unscoped (``Proposal.scope is None``), so the controller never rejects
them for touching several regions, but counts them in ``entanglement_rate`` when they
change the code of more than one factor or of the read-only text (the no-selected-scope
rule of :mod:`spark_clrs.programs.entanglement`); a part changed only in formatting,
comments or docstrings is counted apart, as drift.

A subclass only builds its prompt (:meth:`FreeformProposer.build_prompt`) from its own
templates under ``prompts/<strategy>/``; this module sends it, parses the program back
and records the prompt structure in the decision. A strategy whose source asks again
sets :attr:`FreeformProposer.reply_attempts` (requests per prompt while the reply holds
no code at all) and :attr:`FreeformProposer.duplicate_retries` (further requests while
the child is a program the prompt's population already holds); every request goes
through the client, so each is counted against the budget. The prompts carry
``<request role="program" base="ID" factors="..." edit="KIND" others="IDS"/>`` and
``<program id="ID">`` sections, which is the contract the offline provider answers when
no model is configured; ``edit`` names the kind of edit the prompt asks for (``one``
change, a ``parameter`` change, a ``diff``, a ``crossover`` of the ``others`` with the
base, an ``explore`` idea unlike all the programs shown), so that the offline answer is
the kind of edit the strategy's prompt requests (spark_clrs.llm.offline).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from spark_clrs.llm import LLMClient, LLMRecord, prompts
from spark_clrs.programs import dedup, regions
from spark_clrs.proposers import context, parsing
from spark_clrs.proposers.base import (
  ParentInfo,
  Proposal,
  ProposalHistory,
  Proposer,
  ProposerConfig,
)


def shown(programs: Sequence[ParentInfo]) -> list[dict[str, Any]]:
  """How the programs in a prompt are recorded in the decision."""
  return [{"program_id": p.program_id, "source": p.source, "fitness": p.fitness}
          for p in programs]


def join_entries(entries: Iterable[str]) -> str:
  """Rendered program entries, one blank line apart."""
  return "\n\n".join(e.strip("\n") for e in entries)


@dataclasses.dataclass(frozen=True)
class PromptPlan:
  """One request of a free-form strategy.

  Attributes:
    role: the role recorded with the LLM call (e.g. ``rewriter``, ``crossover``, ``e1``).
    user: the rendered user message.
    structure: the prompt structure recorded as ``decision["prompt"]`` (programs shown,
      operator, targets, ...).
    extra: further decision entries (e.g. the operator actually used).
  """

  role: str
  user: str
  structure: dict[str, Any]
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class FreeformProposer(Proposer):
  """Unscoped proposer: one LLM call (or a few, see the attributes) returning the whole
  new program.

  Attributes:
    reply_attempts: requests per prompt while a reply has no fenced code at all.
    duplicate_retries: further requests while the child is the parent's program or a
      ``population`` inspiration's (same :func:`spark_clrs.programs.dedup.same_program`).
  """

  reply_attempts: int = 1
  duplicate_retries: int = 0

  def __init__(self, config: ProposerConfig, client: LLMClient, factors: Sequence[str]):
    if not factors:
      raise ValueError(f"{self.name} needs at least one factor (the region markers the child "
                       "must keep); set --factors, e.g. OPERATOR,ACTION")
    self.config = config
    self.client = client
    self.factors = tuple(factors)

  def common_slots(self, parent: ParentInfo) -> dict[str, str]:
    """Slots every free-form user template has."""
    return {"parent_id": parent.program_id, "factors": ",".join(self.factors),
            "task_card": context.task_card(self.config.task)}

  def system_prompt(self) -> str:
    return prompts.render(f"{self.name}/system",
                          contract=prompts.render("contract/clrs_processor"))

  @abc.abstractmethod
  def build_prompt(self, parent: ParentInfo, history: ProposalHistory,
                   rng: np.random.Generator) -> PromptPlan:
    """The request for one proposal from ``parent`` (and its inspirations)."""

  def read_reply(self, record: LLMRecord, decision: dict[str, Any]) -> None:
    """Records what the reply says beyond the program (EoH's thought); nothing by default."""
    del record, decision

  def propose(self, parent: ParentInfo, history: ProposalHistory,
              rng: np.random.Generator) -> Proposal:
    calls: list[LLMRecord] = []
    decision: dict[str, Any] = {"strategy": self.name, "scope_source": "unscoped"}
    try:
      regions.require_regions(parent.text, self.factors)
    except regions.RegionError as e:
      return Proposal(None, None, None, decision, calls, error=f"parent {parent.program_id}: {e}")
    plan = self.build_prompt(parent, history, rng)
    decision.update(plan.extra, prompt=plan.structure)
    messages = context.chat(self.system_prompt(), plan.user)
    known = [parent, *parent.from_source("population")]
    duplicates: list[str] = []
    while True:
      record = self._ask(plan.role, messages, calls)
      if not record.ok:
        return Proposal(None, None, None, decision, calls,
                        error=f"{plan.role} call failed: {record.error}")
      self.read_reply(record, decision)
      child, error = None, None
      try:
        child = self.parse_child(record, parent, decision)
      except parsing.ReplyError as e:
        error = f"{plan.role}: {e}"
      twin = (_twin(child, record, known) if len(duplicates) < self.duplicate_retries
              else None)
      if twin is None:
        break
      duplicates.append(twin.program_id)  # Asked again, as the source does.
      decision["duplicate_retries"] = duplicates
    if child is None:
      return Proposal(None, None, None, decision, calls, error=error)
    return Proposal(child, None, None, decision, calls)

  def _ask(self, role: str, messages: list[dict[str, str]], calls: list[LLMRecord]) -> LLMRecord:
    """Sends the request; re-sends it (up to :attr:`reply_attempts`) while a reply has no
    fenced code block at all."""
    for _ in range(max(1, self.reply_attempts)):
      record = self.client.complete(role, messages)
      calls.append(record)
      if not record.ok or parsing.code_blocks(record.reply or ""):
        break
    return record

  def parse_child(self, record: LLMRecord, parent: ParentInfo,
                  decision: dict[str, Any]) -> str:
    """The child program in the reply (a whole program by default; OpenEvolve: diffs)."""
    del decision
    return parsing.extract_program(record.reply, parent.text, self.factors,
                                   finish_reason=record.finish_reason)


def _twin(child: str | None, record: LLMRecord,
          known: Sequence[ParentInfo]) -> ParentInfo | None:
  """The program of ``known`` the child repeats (AST-equal), if any.

  A reply refused for returning the parent unchanged has no child; its code blocks are
  compared instead, so that it too counts as a duplicate.
  """
  texts = [child] if child is not None else [
      b.body for b in parsing.code_blocks(record.reply or "")]
  return next((p for p in known if any(dedup.same_program(t, p.text) for t in texts)), None)


def check_child(child: str, parent_text: str, factors: Sequence[str]) -> str:
  """A child built from the reply (e.g. by diffs) must keep every factor's markers."""
  try:
    found = regions.parse_regions(child)
  except regions.RegionError as e:
    raise parsing.ReplyError(f"the edited program's region markers are broken: {e}") from e
  missing = [f for f in factors if f not in found]
  if missing:
    raise parsing.ReplyError(f"the edit removes the {', '.join(missing)} region marker(s); keep "
                             "every '# ===== BEGIN/END NAME REGION =====' line")
  if child == parent_text:
    raise parsing.ReplyError("the edit leaves the parent unchanged")
  return child


__all__ = ["FreeformProposer", "PromptPlan", "check_child", "join_entries", "shown"]
