"""One proposal (SPEC §1 steps 1-5): sample a parent, ask the proposer, judge the child.

:meth:`Proposals.propose` makes and records proposal ``k`` on the driver thread: the
migration and island reset due before it, a parent drawn from island ``k mod
num_islands`` with the iteration's own RNG (``(seed, k)``, so a re-made proposal draws the
same), the proposer's child, and the judgements that need no compute — no child, a child
equal to its parent (``unchanged``), a change outside the selected scope (``entangled``
with the freeze on), a program the archive already scored (a ``duplicate`` reuses its
metrics) or already rejected by a program-only check. The candidate and the LLM calls that
made it are recorded in one transaction.

A provider failure (``llm.ProviderError``) is not a proposal: its calls are stored without
a candidate and the proposal is asked again from the same state until the failure is
final, which stops the run. A refused request (``llm.SpendExhausted``: a spend limit or
the budget) ends proposing with no candidate for ``k``; a resume with a larger limit asks
the same again, the answered calls coming from the reply cache.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spark_clrs import config as config_lib
from spark_clrs.evaluation import noise
from spark_clrs.programs import dedup, entanglement
from spark_clrs.search import archive as archive_lib
from spark_clrs.search import resolve, rundir, standing
from spark_clrs.search.archive_db import PENDING_STATUSES, Candidate
from spark_clrs.search.errors import SearchError
from spark_clrs.search.events import EventLog
from spark_clrs.search.spend import Spend

LINEAGE_WINDOW = 16
# Check stages whose verdict depends on the program alone (a duplicate reuses it).
REUSABLE_REJECTIONS = ("parse", "policy", "interface", "shape", "finite", "budget")


def outcome_row(c: Candidate, by_id: dict[int, Candidate], spread: Any) -> dict[str, Any]:
  """A finished proposal as the proposers' ``Outcome`` sees it.

  ``gain`` is the paired difference with the parent (standing.gain, with its interval and
  ``verdict``: better | tie | worse), so prompts call a tie within noise a tie.
  """
  parent = by_id.get(c.parent_id) if c.parent_id is not None else None
  gain = standing.gain(c, parent, spread)
  return {"iteration": c.id, "scope": c.scope, "directive": c.directive,
          "feasible": c.can_be_parent, "stage": "ok" if c.can_be_parent else (c.stage or "?"),
          "reason": c.reason or None, "fitness": c.fitness,
          "parent_fitness": parent.fitness if parent else None, "program_id": str(c.id),
          "parent_id": None if parent is None else str(parent.id),
          "new_best": (c.comparison or {}).get("new_best") if c.can_be_parent else None,
          "gain": None if gain is None else {**gain.to_json(),
                                             "text": noise.format_difference(gain)}}


def archived_twin(key: str | None, candidates: Sequence[Candidate],
                  fingerprint: Callable[[Candidate], str | None]) -> Candidate | None:
  """The first finished candidate whose program has fingerprint ``key`` (same AST).

  Only outcomes that depend on the program alone are reused: an evaluation (the
  training seeds and evaluation sets are the run's, so its metrics are the child's)
  and a rejection by a check stage. Failed evaluations and parent-relative verdicts
  (scope, entangled, unchanged) are not.
  """
  if key is None:
    return None
  for c in candidates:
    if c.status in PENDING_STATUSES or not c.code or fingerprint(c) != key:
      continue
    if c.can_be_parent and c.stage != archive_lib.DUPLICATE_STAGE:
      return c
    if c.status == "rejected" and c.stage in REUSABLE_REJECTIONS:
      return c
  return None


def make_proposer(config: config_lib.SearchConfig, run: rundir.RunDir, algorithm: str,
                  spend: Spend, db: Any) -> Any:
  """The proposer ``--strategy`` names, with its LLM client (reply cache, spend guard)."""
  from spark_clrs import llm, proposers

  limit = llm.SpendLimit.of(config, spent=(spend.tokens, spend.cost), used=db.llm_usage())
  client = llm.LLMClient(resolve.llm_config_of(config), llm.ReplyCache(run.llm_cache_path),
                         spend_limit=limit)
  proposer_config = proposers.ProposerConfig(
      task=algorithm, sar_output=config.sar_output, router_retries=config.router_retries,
      ucb_c=config.ucb_c, lineage_window=config.lineage_window,
      tried_window=config.tried_window, scope_router=config.scope_router,
      edit_format=config.openevolve_edits)
  try:
    return proposers.make_proposer(config.strategy, proposer_config, client, config.factors)
  except ValueError as e:
    raise config_lib.ConfigError(f"--strategy={config.strategy}: {e}") from None


class Proposals:
  """Makes and records the proposals of one run (driver thread only).

  Args:
    config: the run's configuration.
    archive: its archive (the only writer is this thread).
    run: its run directory (program files).
    proposer: the strategy's proposer.
    engine: the strategy's ``EngineOptions`` (island reset).
    log: the run's event log.
    spend: the run's spend and stop reason.
    on_finished: called when a proposal is finished without training (rejected, duplicate).
    strategy: the name recorded with each candidate (``--strategy``, or a caller-given
      proposer's ``name``).
  """

  def __init__(self, config: config_lib.SearchConfig, archive: archive_lib.Archive,
               run: rundir.RunDir, proposer: Any, engine: Any, log: EventLog, spend: Spend,
               on_finished: Callable[[], None], strategy: str):
    self.config = config
    self.archive = archive
    self.run = run
    self.proposer = proposer
    self.engine = engine
    self.log = log
    self.spend = spend
    self._on_finished = on_finished
    self._fingerprints: dict[int, str | None] = {}  # Candidate id -> dedup.fingerprint.
    self.strategy = strategy

  def propose(self, k: int) -> None:
    """Makes and records proposal k (skipped if it is recorded already, or proposing stopped)."""
    from spark_clrs import llm

    if self.archive.get(k) is not None or self.spend.exhausted():
      return
    client = getattr(self.proposer, "client", None)
    while True:
      state = client.checkpoint() if isinstance(client, llm.LLMClient) else None
      try:
        self._propose_once(k)
        return
      except llm.SpendExhausted as e:
        self._store_attempt(k, client, state, getattr(e, "record", None))
        self.spend.stop(str(e), budget=getattr(e, "cap", "") == "budget")
        return
      except llm.ProviderError as e:
        calls = self._store_attempt(k, client, state, e.record)
        self.log.event("provider_failure", k, failure=e.kind, consecutive=e.consecutive,
                       final=e.final, reason=str(e), llm_calls=len(calls))
        if e.final:
          raise SearchError(f"LLM provider failure at proposal {k}: {e}; nothing was recorded "
                            "for it, re-run the same command to resume") from None
        self.log.say(f"proposal {k}: LLM provider failure ({e.kind}, {e.consecutive} in a row, "
                     f"stop after {self.config.llm_max_consecutive_failures}): {e}; asking "
                     "again", logging.WARNING)
        if state is not None:
          client.wait_before_retry()

  def _store_attempt(self, k: int, client: Any, state: Any, record: Any) -> list[Any]:
    """Stores an abandoned attempt's calls without a candidate and rewinds the client."""
    calls = client.take_calls() if state is not None else ([record] if record else [])
    for call in calls:
      self.archive.db.insert_llm_call(None, call.to_dict(), iteration=k)
    self.spend.add([c.to_dict() for c in calls])
    if state is not None:
      client.restore(state)  # The attempt never happened: same samples, same draws.
    return calls

  def fingerprint(self, c: Candidate) -> str | None:
    """``dedup.fingerprint`` of an archived candidate's program, computed once per id."""
    if c.id not in self._fingerprints:
      self._fingerprints[c.id] = dedup.fingerprint(c.code)
    return self._fingerprints[c.id]

  def _parent_info(self, selection: Any, by_id: dict[int, Candidate], spread: Any) -> Any:
    from spark_clrs.proposers import ParentInfo, population

    parent = selection.parent
    request = getattr(self.proposer, "context_request", None)
    # Programs the strategy's sampler drew with the parent (FunSearch's versions, EoH's
    # second parent) come first, then what its context request asks for.
    companions = tuple(population.as_info(c, "island", self.archive.cell(c.features))
                       for c in selection.companions)
    window = max(LINEAGE_WINDOW, self.config.lineage_window)
    return ParentInfo(
        program_id=str(parent.id), text=parent.code, metrics=parent.metrics,
        lineage=[outcome_row(c, by_id, spread)
                 for c in self.archive.lineage(parent.id, window)],
        decision=parent.decision, cell=self.archive.cell(parent.features),
        inspirations=companions + (
            population.inspirations(self.archive, parent, selection.island, request)
            if request is not None else ()))

  def _propose_once(self, k: int) -> None:
    """One attempt at proposal k; raises a provider failure before recording anything."""
    from spark_clrs import llm
    from spark_clrs.proposers import ProposalHistory

    cfg = self.config
    self.between_iterations(k - 1)
    rng = np.random.default_rng([cfg.seed, k])
    selection = self.archive.sample_parent((k - 1) % cfg.num_islands, rng)
    parent = selection.parent
    everyone = self.archive.candidates()
    by_id = {c.id: c for c in everyone}
    spread = standing.seed_spread(everyone)
    history = ProposalHistory.of([outcome_row(c, by_id, spread) for c in everyone
                                  if c.is_proposal and c.status not in PENDING_STATUSES])
    info = self._parent_info(selection, by_id, spread)
    client = getattr(self.proposer, "client", None)
    if isinstance(client, llm.LLMClient):
      client.take_calls()  # Only this proposal's calls from here on.
    error = None
    try:
      proposal = self.proposer.propose(info, history, rng)
    except (llm.ProviderError, llm.SpendExhausted):
      raise
    except Exception as e:  # A proposer bug costs one proposal, never the search.
      self.log.say(f"proposal {k}: the proposer raised\n{traceback.format_exc()}",
                   logging.ERROR)
      proposal, error = None, f"proposer error: {type(e).__name__}: {e}"
    child = proposal.child_text if proposal is not None else None
    scope = tuple(proposal.scope) if proposal is not None and proposal.scope else None
    judged = entanglement.judge(
        parent.code, child, scope,
        entanglement.scope_selected(scope, proposal.decision if proposal is not None else {}))
    status, stage, reason, twin = "proposed", None, None, None
    key = dedup.fingerprint(child)  # One AST parse per child; archived ones are cached.
    if child is None:
      status, stage = "rejected", "proposal"
      reason = (proposal.error if proposal is not None else error) or "no child program"
    elif key is not None and key == self.fingerprint(parent):
      status, stage = "rejected", "unchanged"
      reason = (f"unchanged: the child's code equals its parent {parent.id}'s (same AST; only "
                "comments or formatting differ), so there is nothing to evaluate")
    elif cfg.freeze_non_selected_region and scope and judged.outside_editable:
      status, stage = "rejected", "entangled"
      reason = (f"entangled: changed outside {'+'.join(scope)}: "
                f"{'; '.join(judged.outside_editable)}")
    else:
      twin = archived_twin(key, everyone, self.fingerprint)
      if twin is not None and twin.status == "rejected":
        status, stage = "rejected", twin.stage
        reason = (f"same program as candidate {twin.id} (AST equal), rejected at "
                  f"{twin.stage}: {twin.reason}")
        twin = None
    journal = client.take_calls() if isinstance(client, llm.LLMClient) else []
    # The client's journal has every call, also those of a proposer that raised.
    records = journal or (list(proposal.calls) if proposal is not None else [])
    calls = [c.to_dict() for c in records]
    decision = dict(proposal.decision) if proposal is not None else {}
    answered = sorted({"offline" if c.get("model") == llm.OFFLINE_MODEL else "llm"
                       for c in calls})
    decision.update(parent_selection=selection.method, island=selection.island,
                    formatting_drift=list(judged.drift),  # Apart from entanglement (H7).
                    answered_by=answered[0] if len(answered) == 1 else
                    ("mixed" if answered else "none"))
    directive = proposal.directive if proposal is not None else None
    self.archive.record_proposal(
        k, parent_id=parent.id, island=selection.island, strategy=self.strategy, scope=scope,
        directive=directive, decision=decision, code=child, changed_factors=judged.changed,
        entangled=judged.entangled, llm_calls=calls, status=status, stage=stage, reason=reason)
    if child is not None:
      self.run.write_program(k, child)
      self._fingerprints[k] = key
    self.spend.add(calls)
    if twin is not None:  # No compute for a program the archive already scored.
      self.archive.record_duplicate(k, twin)
      status = "duplicate"
    where = "+".join(scope) if scope else "unscoped"
    text = f"proposal {k}: parent {parent.id} ({selection.method}, island {selection.island})"
    source, who = decision.get("scope_source", "-"), decision["answered_by"]
    text += f", scope {where} [{source if who in (source, 'none') else f'{source}, {who}'}]"
    if status == "rejected":
      text += f" -> rejected: {reason}"
    elif status == "duplicate":
      text += (f" -> duplicate of candidate {twin.id} (AST equal): its {noise.FITNESS} "
               f"{noise.format_metric(twin.metrics)} reused, not trained")
    if status in ("rejected", "duplicate"):
      self._on_finished()
    self.log.event("proposal", k, message=text, parent_id=parent.id, scope=scope,
                   directive=directive, decision=decision, status=status, stage=stage,
                   reason=reason, entangled=judged.entangled, changed_factors=judged.changed,
                   llm_calls=len(calls), cached_calls=sum(bool(c.get("cached")) for c in calls),
                   tokens=sum(int(c.get("prompt_tokens") or 0) + int(c.get("completion_tokens")
                                                                    or 0) for c in calls),
                   tokens_estimated=any(c.get("estimated") for c in calls),
                   answered_by=decision["answered_by"])

  def between_iterations(self, done: int) -> None:
    """Ring migration and the strategy's island reset due after iteration ``done``.

    Both are recorded in the archive with the iteration, so a resumed run never
    repeats or skips one.
    """
    cfg = self.config
    if done > 0 and done % cfg.migration_interval == 0:
      moves = self.archive.migrate(done)
      if moves:
        self.log.event("migration", message=f"migration after iteration {done}: "
                       f"{len(moves)} program(s) copied to neighbouring islands",
                       iteration=done, moves=moves)
    reset = (self.engine.island_reset if self.engine is not None
             else getattr(self.proposer, "island_reset", None))
    if reset is not None and reset.due(done, self.archive.num_islands):
      rng = np.random.default_rng([cfg.seed, done, 1])
      resets = self.archive.reset_islands(done, reset.fraction, rng)
      if resets:
        self.log.event("island_reset", message=f"island reset after iteration {done}: "
                       f"islands {sorted(r[0] for r in resets)} restarted from the best of "
                       "surviving islands", iteration=done, resets=resets)
