"""The search loop (SPEC §1): sample -> propose -> scope check -> checks -> train -> archive.

`Controller` drives one run directory. Each iteration k samples a parent
from island k mod num_islands, asks the configured proposer for a child,
rejects an out-of-scope child as ``entangled`` when the freeze is on, runs
the feasibility checks and the training/evaluation (both in sandboxed
children), and archives the result. The seed program is candidate 0,
evaluated before any proposal and not counted as one.

Everything is written as it happens: the candidate with its LLM calls and
decisions (one SQLite transaction), its program file, an event in
``logs/events.jsonl`` and a line in ``logs/search.log``. That makes resuming
exact: a recorded proposal is never asked for again, a candidate whose
evaluation was running at a crash is re-run (in a fresh working directory),
and a proposal that was being made is re-made from the same seeded RNG, its
LLM replies coming from the run's reply cache.

Evaluations run on an executor (executors.py): local slots of pre-started
single-use jailed workers, one device each, or Ray tasks (``--executor=ray``);
``--sandbox`` is checked (fail closed) before anything runs. With
``parallel_evaluations=N > 1`` N evaluations are in flight, each checked and
trained from its own thread; only this (the driver) thread proposes and
writes the archive. By default the loop is asynchronous: the next proposal
is made while the others train and is queued, so a slot that frees starts
at once, and results are archived as they finish. With ``--synchronous`` it
runs in generations of N: N proposals from the same archive state (each
iteration's RNG is seeded by ``(seed, iteration)``), evaluated in parallel,
archived in iteration order, so a given seed and N give the same run however
the evaluations interleave.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import pathlib
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from spark_clrs import config as config_lib
from spark_clrs.analysis import plots, tables
from spark_clrs.evaluation import noise
from spark_clrs.programs import dedup, entanglement, regions
from spark_clrs.search import archive as archive_lib
from spark_clrs.search import progress, rundir, summary
from spark_clrs.search.archive_db import PENDING_STATUSES, Candidate

FITNESS = "ood_val_acc"
SEED_ID = 0
LINEAGE_WINDOW = 16
# Check stages whose verdict depends on the program alone (a duplicate reuses it).
REUSABLE_REJECTIONS = ("parse", "policy", "interface", "shape", "finite", "budget")


class SearchError(RuntimeError):
  """The search cannot go on (e.g. the seed program fails); the message says why."""


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What checking and evaluating one candidate gave (computed off the main thread)."""

  status: str  # evaluated | rejected | failed
  stage: str
  reason: str
  metrics: dict[str, Any]
  fitness: float | None = None
  features: dict[str, float] = dataclasses.field(default_factory=dict)


class EventLog:
  """Persists events to the archive, ``logs/events.jsonl`` and ``logs/search.log``."""

  def __init__(self, run: rundir.RunDir, archive: archive_lib.Archive,
               bar: progress.Progress):
    self._archive = archive
    self._bar = bar
    self._events = open(run.events_path, "a", encoding="utf-8")  # noqa: SIM115
    self._handler = logging.FileHandler(run.log_path, encoding="utf-8")
    self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    self._logger = logging.getLogger("spark_clrs")
    self._logger.addHandler(self._handler)
    if self._logger.level == logging.NOTSET or self._logger.level > logging.INFO:
      self._logger.setLevel(logging.INFO)
    self._logger.propagate = False  # The console gets our own lines (or the bar) instead.

  def event(self, kind: str, candidate_id: int | None = None, message: str | None = None,
            **data: Any) -> None:
    """Records one event; ``message`` also goes to the text log and the console."""
    now = self._archive.db.insert_event(kind, candidate_id, data)
    line = {"time": now, "kind": kind, "candidate_id": candidate_id, **data}
    self._events.write(json.dumps(line, default=str, sort_keys=True) + "\n")
    self._events.flush()
    if message:
      self.say(message)

  def say(self, message: str, level: int = logging.INFO) -> None:
    self._logger.log(level, message)
    self._bar.message(message)

  def close(self) -> None:
    self._events.close()
    self._logger.removeHandler(self._handler)
    self._handler.close()
    self._logger.propagate = True


def _outcome_row(c: Candidate, by_id: dict[int, Candidate]) -> dict[str, Any]:
  """A finished proposal as the proposers' ``Outcome`` sees it."""
  parent = by_id.get(c.parent_id) if c.parent_id is not None else None
  return {"iteration": c.id, "scope": c.scope, "directive": c.directive,
          "feasible": c.can_be_parent, "stage": "ok" if c.can_be_parent else (c.stage or "?"),
          "reason": c.reason or None, "fitness": c.fitness,
          "parent_fitness": parent.fitness if parent else None, "program_id": str(c.id),
          "parent_id": None if parent is None else str(parent.id)}


EvaluateFn = Callable[..., Any]


class Controller:
  """Runs (or resumes) one search in an opened run directory.

  Args:
    opened: the run directory and configuration from `rundir.open_run`.
    stream: where progress goes (default stderr).
    proposer: a `Proposer` to use instead of the one ``--strategy`` names.
    evaluate: the evaluation function, called as ``evaluate(program_path, profile,
      seeds, workdir=..., limits=...)`` from up to ``parallel_evaluations`` threads
      and returning an object with ``status``, ``metrics`` and ``reason`` (default:
      the ``--executor``'s, which trains in a sandboxed child).
  """

  def __init__(self, opened: rundir.OpenedRun, *, stream: TextIO | None = None,
               proposer: Any = None, evaluate: EvaluateFn | None = None):
    self.config = opened.config
    self.run_dir = opened.run
    self._opened = opened
    self._stream = stream
    self._proposer_override = proposer
    self._evaluate_fn = evaluate
    self._evaluate_call: EvaluateFn | None = None
    self._evaluate_test_call: EvaluateFn | None = None  # Set when OOD-test is deferred.
    self._page_due = 0.0  # monotonic time after which results/index.html may be rewritten
    self.profile = None
    self.budget = None
    self._spend = (0, 0.0)  # LLM tokens and USD this run directory has spent (llm_spend).
    self._stop_reason: str | None = None
    self._budget_spent = False  # --budget=tokens|cost reached (a complete run, not a stop).
    self.engine = None  # The strategy's proposers.options.EngineOptions, set with the proposer.
    self._fingerprints: dict[int, str | None] = {}  # Candidate id -> dedup.fingerprint.

  # Setup -------------------------------------------------------------------
  def _profile(self) -> Any:
    from spark_clrs.evaluation import profiles

    overrides = {}
    fields = {f.name: f for f in dataclasses.fields(profiles.EvalProfile)}
    for item in self.config.profile_overrides:
      name, _, text = item.partition("=")
      if name not in fields or name == "name":
        raise config_lib.ConfigError(
            f"--profile_overrides={item!r}: {name!r} is not a profile field; use one of "
            f"{', '.join(profiles.field_names())}")
      overrides[name] = _parse_value(text, getattr(profiles.PROFILES["spark"], name))
    try:
      return profiles.get_profile(self.config.profile, **overrides)
    except ValueError as e:
      raise config_lib.ConfigError(f"--profile={self.config.profile}: {e}") from None

  def _proposer(self) -> Any:
    from spark_clrs import llm, proposers

    if self._proposer_override is not None:
      return self._proposer_override
    cfg = self.config
    client = llm.LLMClient(llm_config(cfg), llm.ReplyCache(self.run_dir.llm_cache_path))
    proposer_config = proposers.ProposerConfig(
        task=self.profile.algorithm, sar_output=cfg.sar_output,
        router_retries=cfg.router_retries, ucb_c=cfg.ucb_c, lineage_window=cfg.lineage_window,
        tried_window=cfg.tried_window, scope_router=cfg.scope_router,
        edit_format=cfg.openevolve_edits)
    try:
      return proposers.make_proposer(cfg.strategy, proposer_config, client, cfg.factors)
    except ValueError as e:
      raise config_lib.ConfigError(f"--strategy={cfg.strategy}: {e}") from None

  def _check_config(self) -> Any:
    from spark_clrs import checks

    p = self.profile
    sizes = sorted({min(p.train_lengths), max(p.ood_val_length, p.test_length, p.val_length)})
    return checks.CheckConfig(shape_sizes=tuple(sizes),
                              shape_batch=max(p.batch_size, p.eval_batch_size),
                              macs_nb_nodes=p.macs_nb_nodes, use_ln=p.use_ln,
                              nb_triplet_fts=p.nb_triplet_fts)

  def _limits(self, kind: str, candidate_id: int | None = None) -> Any:
    from spark_clrs.isolation import sandbox

    cfg = self.config
    if kind == "check":
      return sandbox.Limits(timeout_s=cfg.check_timeout_s, memory_mb=cfg.check_memory_mb)
    timeout = cfg.eval_timeout_s
    seed_seconds = getattr(self, "_seed_seconds", None)
    if candidate_id not in (None, SEED_ID) and seed_seconds and cfg.eval_timeout_factor > 0:
      # Relative to the seed's measured cost under the same profile (issue 10).
      timeout = min(cfg.eval_timeout_s, max(cfg.eval_timeout_factor * seed_seconds,
                                            cfg.eval_timeout_floor_s))
    return sandbox.Limits(timeout_s=timeout, memory_mb=cfg.eval_memory_mb)

  def _seed_eval_seconds(self) -> float | None:
    """Wall time of the seed's evaluation (recorded as ``eval_wall_seconds``)."""
    seed = self.archive.get(SEED_ID)
    value = (seed.metrics or {}).get("eval_wall_seconds") if seed is not None else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None

  # Main entry --------------------------------------------------------------
  def run(self) -> None:
    """Runs the remaining iterations and writes the results; resumable at any point."""
    cfg = self.config
    with rundir.RunLock(self.run_dir):
      self.profile = self._profile()
      archive = archive_lib.Archive(self.run_dir.archive_path,
                                    archive_lib.ArchiveSettings.from_config(cfg))
      self.archive = archive
      done = sum(1 for c in archive.candidates()
                 if c.is_proposal and c.status not in PENDING_STATUSES)
      self.bar = progress.Progress(cfg.iterations, start=min(done, cfg.iterations),
                                   mode=cfg.progress, stream=self._stream)
      self.log = EventLog(self.run_dir, archive, self.bar)
      try:
        for note in self._opened.notes:
          self.log.say(note)
        self.log.event("start", message=None, resumed=self._opened.resumed,
                       config=cfg.to_dict(), profile=self.profile.to_dict())
        self._run_loop()
      except KeyboardInterrupt:
        self.log.event("interrupted", message="interrupted: re-run the same command to resume")
        raise
      finally:
        try:
          self.write_results()
        finally:
          self.bar.close()
          self.log.close()
          archive.close()

  def _executor(self) -> Any:
    """The executor ``--executor`` names, with the run's compilation cache."""
    from spark_clrs.evaluation import executors

    cfg = self.config
    cache = None
    if cfg.compilation_cache:
      cache = pathlib.Path(os.environ.get(executors.JAX_CACHE_VAR)
                           or self.run_dir.root / "cache" / "jax")
    try:
      return executors.make_executor(
          cfg.executor, cfg.parallel_evaluations, workdir=self.run_dir.work / "executor",
          compile_cache_dir=cache, ray_address=cfg.ray_address,
          ray_cpus_per_evaluation=cfg.ray_cpus_per_evaluation)
    except executors.ExecutorError as e:
      raise config_lib.ConfigError(str(e)) from None

  def _run_loop(self) -> None:
    from spark_clrs import checks
    from spark_clrs.evaluation import executors
    from spark_clrs.isolation import jail

    cfg = self.config
    try:  # Fail closed before any candidate code runs (issue 10).
      self.log.say(jail.check_mode(cfg.sandbox))
    except jail.JailUnavailableError as e:
      raise SearchError(str(e)) from None
    self.run_dir.ensure_programs({c.id: c.code for c in self.archive.candidates() if c.code})
    self.check_config = self._check_config()
    self.proposer = self._proposer()
    from spark_clrs.proposers import options as engine_options

    self.engine = engine_options.of(self.proposer)  # What the strategy needs (issue 12).
    self.archive.configure(self.engine)
    executor = self._executor() if self._evaluate_fn is None else None
    self._evaluate_call = executor.evaluate if executor is not None else self._evaluate_fn
    self._evaluate_test_call = _deferred_test(executor or self._evaluate_fn, cfg.score_test)
    if self._proposer_override is not None:
      self.log.say(f"proposer: {type(self.proposer).__name__} (given by the caller)")
    elif not cfg.llm_model:
      self.log.say("proposer: no --llm_model set, so the built-in offline proposer "
                   "spark/offline (a rule-based catalogue of factor-local moves, not an LLM) "
                   "answers the router, refiner and rewriter")
    else:
      self.log.say(f"proposer: {cfg.strategy} with LLM {cfg.llm_model}"
                   f"{' at ' + cfg.llm_api_base if cfg.llm_api_base else ''}")
    worker = checks.make_worker(self.run_dir.work / "check-worker") if cfg.feasibility_check \
        else None
    try:
      if executor is not None:
        try:
          executor.start()
        except executors.ExecutorError as e:
          raise SearchError(str(e)) from None
        self.log.say(executor.describe())
      if worker is not None:
        worker.start()
      self.worker = worker
      self._ensure_seed()
      self._seed_seconds = self._seed_eval_seconds()
      if self._seed_seconds and cfg.eval_timeout_factor > 0:
        self.log.say(f"candidate evaluation timeout: {self._limits('eval', 1).timeout_s:.0f} s "
                     f"({cfg.eval_timeout_factor:g} x the seed's {self._seed_seconds:.0f} s, "
                     f"at least {cfg.eval_timeout_floor_s:g} s, at most "
                     f"{cfg.eval_timeout_s:g} s)")
      self.budget = self._budget()
      self._spend = summary.llm_spend(self.archive.db.llm_calls())
      next_id = (self.archive.db.max_candidate_id() or 0) + 1
      if cfg.parallel_evaluations > 1 and not cfg.synchronous:
        self._run_asynchronous(next_id)
      else:
        self._run_generations(next_id)
      self._score_final_tests()
      if self._stop_reason is not None and not self._budget_spent:
        self.log.event("stopped", message=f"search stopped early ({self._stop_reason}) in "
                       f"{self.run_dir.root}; re-run with a larger limit to continue",
                       reason=self._stop_reason)
      else:
        done = (self._stop_reason if self._budget_spent
                else f"{cfg.iterations} proposals")  # A spent --budget is a complete run.
        self.log.event("finished", message=f"search finished: {done} in {self.run_dir.root}")
    finally:
      try:
        if worker is not None:
          worker.close()
      finally:
        if executor is not None:
          executor.close()
        self._evaluate_call = None

  def _run_generations(self, next_id: int) -> None:
    """Generations of N proposals, evaluated in parallel, archived in iteration order."""
    cfg = self.config
    n = cfg.parallel_evaluations
    # Finish the generation that was interrupted, then the candidates left in flight.
    generation_end = min(cfg.iterations, SEED_ID + n * math.ceil((next_id - 1) / n))
    for k in range(next_id, generation_end + 1):
      self._propose(k)
    self._process(self.archive.pending())
    k = max(next_id, generation_end + 1)
    while k <= cfg.iterations and self._stop_reason is None:
      batch = list(range(k, min(k + n, cfg.iterations + 1)))
      for j in batch:
        self._propose(j)
      self._process([c for c in (self.archive.get(j) for j in batch)
                     if c is not None and c.status in PENDING_STATUSES])
      k = batch[-1] + 1

  def _run_asynchronous(self, next_id: int) -> None:
    """N evaluations in flight and one proposal queued; results archived as they finish.

    Only this thread proposes and writes the archive; the N evaluation threads take
    queued candidates and hand back outcomes. Candidates left pending by an earlier
    invocation are evaluated first.
    """
    cfg = self.config
    n = cfg.parallel_evaluations
    todo: queue.Queue = queue.Queue()
    done: queue.Queue = queue.Queue()
    stop = object()

    def evaluation_thread() -> None:
      while True:
        item = todo.get()
        if item is stop:
          return
        c, parent_text = item
        try:
          done.put((c, self._safe_evaluate(c, parent_text)))
        except BaseException as e:  # e.g. KeyboardInterrupt: the driver re-raises it.
          done.put((c, e))

    threads = [threading.Thread(target=evaluation_thread, name=f"evaluation-{i}", daemon=True)
               for i in range(n)]
    for t in threads:
      t.start()
    queued = 0

    def enqueue(c: Candidate) -> None:
      nonlocal queued
      parent = self.archive.get(c.parent_id) if c.parent_id is not None else None
      self.archive.mark_evaluating(c.id)
      self.log.event("evaluating", c.id)
      todo.put((c, parent.code if parent is not None else None))
      queued += 1

    def record(item: tuple[Candidate, Any]) -> None:
      nonlocal queued
      c, outcome = item
      queued -= 1
      if isinstance(outcome, BaseException):
        raise outcome
      self._record(c, outcome)

    try:
      for c in self.archive.pending():
        enqueue(c)
      k = next_id
      while (k <= cfg.iterations and self._stop_reason is None) or queued:
        while True:  # Archive what finished, so that the next proposal sees it.
          try:
            record(done.get_nowait())
          except queue.Empty:
            break
        if k <= cfg.iterations and queued <= n and self._stop_reason is None:
          self._propose(k)
          c = self.archive.get(k)
          if c is not None and c.status in PENDING_STATUSES:
            enqueue(c)
          k += 1
        elif queued:
          record(done.get())
    finally:
      while True:  # Nothing queued starts any more; running evaluations end with the executor.
        try:
          todo.get_nowait()
        except queue.Empty:
          break
      for _ in threads:
        todo.put(stop)

  # Seed ----------------------------------------------------------------------
  def _ensure_seed(self) -> None:
    import processors

    seed = self.archive.get(SEED_ID)
    if seed is None:
      try:
        text = processors.resolve(self.config.seed_program).read_text()
      except processors.ProgramLoadError as e:
        raise config_lib.ConfigError(f"--seed_program: {e}") from None
      try:
        regions.require_regions(text, self.config.factors)
      except regions.RegionError as e:
        raise config_lib.ConfigError(f"--seed_program={self.config.seed_program} does not fit "
                                     f"--factors={','.join(self.config.factors)}: {e}") from None
      self.archive.record_proposal(
          SEED_ID, parent_id=None, island=None, strategy="seed", scope=None, directive=None,
          decision={"seed_program": self.config.seed_program}, code=text)
      self.run_dir.write_program(SEED_ID, text)
      self.log.event("seed", SEED_ID, message=f"seed: {self.config.seed_program} is "
                     "candidate 0", seed_program=self.config.seed_program)
      seed = self.archive.get(SEED_ID)
    if seed.status in PENDING_STATUSES:
      self._process([seed])
      seed = self.archive.get(SEED_ID)
    if not seed.can_be_parent:
      raise SearchError(f"the seed program {self.config.seed_program} failed at "
                        f"{seed.stage}: {seed.reason}; fix it (try python -m spark_clrs.check "
                        f"{self.run_dir.program_path(SEED_ID)}) and start a new --output")

  def _budget(self) -> Any:
    """Caps for the budget check: flags, else budget_factor x the seed's cost."""
    from spark_clrs import checks

    if not self.config.feasibility_check:
      return None
    stored = self.archive.db.get_meta("budget")
    if stored is None:
      seed = self.archive.get(SEED_ID)
      params = seed.metrics.get("check_param_count") or seed.metrics.get(
          "processor_param_count") or 0
      macs = seed.metrics.get("check_macs") or seed.metrics.get("macs") or 0
      factor = self.config.budget_factor
      stored = {"max_param_count": self.config.max_param_count or math.ceil(factor * params),
                "max_macs": self.config.max_macs or math.ceil(factor * macs)}
      self.archive.db.set_meta("budget", stored)
      self.log.event("budget", message=f"budget caps: {stored['max_param_count']:,} processor "
                     f"parameters, {stored['max_macs']:,} MACs per step", **stored)
    return checks.Budget(**stored)

  # Proposal --------------------------------------------------------------------
  def _propose(self, k: int) -> None:
    """Makes and records proposal k (skipped if it is recorded already, or spend is used up).

    A provider failure (:class:`llm.ProviderError`) is not a proposal: the attempt's calls
    are stored as failed calls without a candidate and the proposal is made again from
    the same seed after a backoff, until the failure is final; then the run stops with
    its one-line cause (a re-run asks again).
    """
    from spark_clrs import llm

    if self.archive.get(k) is not None or self._spend_exhausted() or self._budget_exhausted():
      return
    client = getattr(self.proposer, "client", None)
    while True:
      state = client.checkpoint() if isinstance(client, llm.LLMClient) else None
      try:
        self._propose_once(k)
        return
      except llm.ProviderError as e:
        calls = client.take_calls() if state is not None else [e.record]
        for call in calls:
          self.archive.db.insert_llm_call(None, call.to_dict(), iteration=k)
        self._add_spend([c.to_dict() for c in calls])
        if state is not None:
          client.restore(state)  # The attempt never happened: same samples, same draws.
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

  def _spend_exhausted(self) -> bool:
    """Whether ``--max_llm_tokens`` / ``--max_cost_usd`` is reached (logged once)."""
    cfg = self.config
    if self._stop_reason is None:
      tokens, cost = self._spend
      if cfg.max_llm_tokens and tokens >= cfg.max_llm_tokens:
        self._stop_reason = (f"--max_llm_tokens={cfg.max_llm_tokens} reached ({tokens:,} "
                             "tokens used)")
      elif cfg.max_cost_usd and cost >= cfg.max_cost_usd:
        self._stop_reason = f"--max_cost_usd={cfg.max_cost_usd:g} reached (${cost:.4f} spent)"
      if self._stop_reason is not None:
        self.log.event("spend_limit", message=f"{self._stop_reason}: no more proposals; running "
                       "evaluations finish. Re-run with a larger limit to continue",
                       reason=self._stop_reason, tokens=tokens, cost_usd=cost)
    return self._stop_reason is not None

  def _add_spend(self, calls: list[dict[str, Any]]) -> None:
    tokens, cost = summary.llm_spend(calls)
    self._spend = (self._spend[0] + tokens, self._spend[1] + cost)

  def _propose_once(self, k: int) -> None:
    """One attempt at proposal k; raises :class:`llm.ProviderError` before recording anything."""
    from spark_clrs import llm
    from spark_clrs.proposers import ParentInfo, ProposalHistory, population

    cfg = self.config
    self._between_iterations(k - 1)
    rng = np.random.default_rng([cfg.seed, k])
    selection = self.archive.sample_parent((k - 1) % cfg.num_islands, rng)
    parent = selection.parent
    everyone = self.archive.candidates()
    by_id = {c.id: c for c in everyone}
    history = ProposalHistory.of([_outcome_row(c, by_id) for c in everyone
                                  if c.is_proposal and c.status not in PENDING_STATUSES])
    request = getattr(self.proposer, "context_request", None)
    # Programs the strategy's sampler drew with the parent (FunSearch's versions, EoH's
    # second parent) come first, then what its context request asks for.
    companions = tuple(population.as_info(c, "island", self.archive.cell(c.features))
                       for c in selection.companions)
    window = max(LINEAGE_WINDOW, cfg.lineage_window)
    info = ParentInfo(
        program_id=str(parent.id), text=parent.code, metrics=parent.metrics,
        lineage=[_outcome_row(c, by_id) for c in self.archive.lineage(parent.id, window)],
        decision=parent.decision, cell=self.archive.cell(parent.features),
        inspirations=companions + (
            population.inspirations(self.archive, parent, selection.island, request)
            if request is not None else ()))
    client = getattr(self.proposer, "client", None)
    if isinstance(client, llm.LLMClient):
      client.take_calls()  # Only this proposal's calls from here on.
    try:
      proposal = self.proposer.propose(info, history, rng)
    except llm.ProviderError:
      raise
    except Exception as e:  # A proposer bug costs one proposal, never the search.
      self.log.say(f"proposal {k}: the proposer raised\n{traceback.format_exc()}",
                   logging.ERROR)
      proposal = None
      error = f"proposer error: {type(e).__name__}: {e}"
    child = proposal.child_text if proposal is not None else None
    scope = tuple(proposal.scope) if proposal is not None and proposal.scope else None
    judged = entanglement.judge(
        parent.code, child, scope,
        entanglement.scope_selected(scope, proposal.decision if proposal is not None else {}))
    changed, entangled = judged.changed, judged.entangled
    status, stage, reason = "proposed", None, None
    twin = None
    key = dedup.fingerprint(child)  # One AST parse per child; archived ones are cached.
    if child is None:
      status, stage = "rejected", "proposal"
      reason = (proposal.error if proposal is not None else error) or "no child program"
    elif key is not None and key == self._fingerprint(parent):
      status, stage = "rejected", "unchanged"
      reason = (f"unchanged: the child's code equals its parent {parent.id}'s (same AST; only "
                "comments or formatting differ), so there is nothing to evaluate")
    elif cfg.freeze_non_selected_region and scope and judged.outside_editable:
      status, stage = "rejected", "entangled"
      reason = (f"entangled: changed outside {'+'.join(scope)}: "
                f"{'; '.join(judged.outside_editable)}")
    else:
      twin = self._archived_twin(key, everyone)
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
                    answered_by=answered[0] if len(answered) == 1 else
                    ("mixed" if answered else "none"))
    self.archive.record_proposal(
        k, parent_id=parent.id, island=selection.island, strategy=cfg.strategy, scope=scope,
        directive=proposal.directive if proposal is not None else None, decision=decision,
        code=child, changed_factors=changed, entangled=entangled, llm_calls=calls,
        status=status, stage=stage, reason=reason)
    if child is not None:
      self.run_dir.write_program(k, child)
      self._fingerprints[k] = key
    self._add_spend(calls)
    if twin is not None:  # No compute for a program the archive already scored.
      self.archive.record_duplicate(k, twin)
      status = "duplicate"
    tokens = sum(int(c.get("prompt_tokens") or 0) + int(c.get("completion_tokens") or 0)
                 for c in calls)
    where = "+".join(scope) if scope else "unscoped"
    text = f"proposal {k}: parent {parent.id} ({selection.method}, island {selection.island})"
    source, who = decision.get("scope_source", "-"), decision["answered_by"]
    text += f", scope {where} [{source if who in (source, 'none') else f'{source}, {who}'}]"
    if status == "rejected":
      text += f" -> rejected: {reason}"
      self._after_candidate()
    elif status == "duplicate":
      text += (f" -> duplicate of candidate {twin.id} (AST equal): its {FITNESS} "
               f"{noise.format_metric(twin.metrics)} reused, not trained")
      self._after_candidate()
    self.log.event("proposal", k, message=text, parent_id=parent.id, scope=scope,
                   directive=proposal.directive if proposal is not None else None,
                   decision=decision, status=status, stage=stage, reason=reason,
                   entangled=entangled, changed_factors=changed, llm_calls=len(calls),
                   cached_calls=sum(bool(c.get("cached")) for c in calls), tokens=tokens,
                   tokens_estimated=any(c.get("estimated") for c in calls),
                   answered_by=decision["answered_by"])

  def _fingerprint(self, c: Candidate) -> str | None:
    """``dedup.fingerprint`` of an archived candidate's program, computed once per id."""
    if c.id not in self._fingerprints:
      self._fingerprints[c.id] = dedup.fingerprint(c.code)
    return self._fingerprints[c.id]

  def _archived_twin(self, key: str | None, everyone: list[Candidate]) -> Candidate | None:
    """The first finished candidate whose program has fingerprint ``key`` (same AST).

    Only outcomes that depend on the program alone are reused: an evaluation (the
    training seeds and evaluation sets are the run's, so its metrics are the child's)
    and a rejection by a check stage. Failed evaluations and parent-relative verdicts
    (scope, entangled, unchanged) are not.
    """
    if key is None:
      return None
    for c in everyone:
      if c.status in PENDING_STATUSES or not c.code or self._fingerprint(c) != key:
        continue
      if c.can_be_parent and c.stage != archive_lib.DUPLICATE_STAGE:
        return c
      if c.status == "rejected" and c.stage in REUSABLE_REJECTIONS:
        return c
    return None

  def _budget_exhausted(self) -> bool:
    """Whether ``--budget=tokens|cost`` has reached ``--budget_amount`` (logged once).

    Tokens are those of every request sent (cached replies are free; the offline
    provider's are its length/4 estimates, so offline comparisons can be matched too).
    """
    cfg = self.config
    if cfg.budget == "evaluations" or self._stop_reason is not None:
      return self._stop_reason is not None
    tokens, cost = self.archive.db.llm_usage()
    used = tokens if cfg.budget == "tokens" else cost
    if used >= cfg.budget_amount:
      self._budget_spent = True
      self._stop_reason = (f"--budget={cfg.budget} of {cfg.budget_amount:g} spent "
                           f"({tokens:,} tokens, ${cost:.4f})")
      self.log.event("budget_spent", message=f"{self._stop_reason}: no more proposals",
                     budget=cfg.budget, amount=cfg.budget_amount, tokens=tokens, cost_usd=cost)
    return self._stop_reason is not None

  def _between_iterations(self, done: int) -> None:
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
    if reset is not None and reset.due(done):
      rng = np.random.default_rng([cfg.seed, done, 1])
      resets = self.archive.reset_islands(done, reset.fraction, rng)
      if resets:
        self.log.event("island_reset", message=f"island reset after iteration {done}: "
                       f"islands {sorted(r[0] for r in resets)} restarted from the best of "
                       "surviving islands", iteration=done, resets=resets)

  @staticmethod
  def _entanglement(parent: str, child: str | None, scope: tuple[str, ...] | None,
                    decision: dict[str, Any] | None = None
                    ) -> tuple[tuple[str, ...], bool | None, list[str]]:
    """(changed factors, entangled?, changes outside the editable scope): entanglement.judge.

    Without ``decision`` a given scope counts as router-selected.
    """
    selected = entanglement.scope_selected(scope, decision or {"scope_source": "llm"})
    judged = entanglement.judge(parent, child, scope, selected)
    return judged.changed, judged.entangled, list(judged.outside_editable)

  # Checks + evaluation -----------------------------------------------------------
  def _process(self, batch: list[Candidate]) -> None:
    """Checks and evaluates candidates (in parallel threads), archived in id order."""
    if not batch:
      return
    parents = {}
    for c in batch:
      parent = self.archive.get(c.parent_id) if c.parent_id is not None else None
      parents[c.id] = parent.code if parent is not None else None
      self.archive.mark_evaluating(c.id)
      self.log.event("evaluating", c.id)
    workers = min(self.config.parallel_evaluations, len(batch))
    if workers == 1:
      for c in batch:
        self._record(c, self._safe_evaluate(c, parents[c.id]))
      return
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      futures = [(c, pool.submit(self._safe_evaluate, c, parents[c.id])) for c in batch]
      for c, future in futures:
        self._record(c, future.result())

  def _safe_evaluate(self, c: Candidate, parent_text: str | None) -> Outcome:
    try:
      return self._evaluate(c, parent_text)
    except Exception as e:  # Our own bug in one evaluation must not end the search.
      logging.getLogger("spark_clrs").error("candidate %d: %s", c.id, traceback.format_exc())
      return Outcome("failed", "evaluate", f"evaluate: internal error {type(e).__name__}: {e}",
                     {})

  def _evaluate(self, c: Candidate, parent_text: str | None) -> Outcome:
    """Feasibility checks, then training + evaluation, of one candidate.

    Runs in a worker thread when evaluations are parallel, so it never touches
    the archive (the main thread records the outcome).
    """
    from spark_clrs import checks

    cfg = self.config
    check_metrics: dict[str, Any] = {}
    if cfg.feasibility_check:
      if not (cfg.freeze_non_selected_region and c.scope):
        parent_text = None  # Scope not enforced: the entanglement is measured, not rejected.
      verdict = checks.run_checks(
          c.code, parent_text=parent_text, scope=c.scope if parent_text else None,
          budget=self.budget if c.id != SEED_ID else None,
          workdir=_fresh_dir(self.run_dir.work / f"{c.id:04d}", "check"),
          limits=self._limits("check"), hidden=self.profile.hidden,
          config=self.check_config, worker=self.worker)
      check_metrics = {"check_param_count": verdict.param_count, "check_macs": verdict.macs}
      if not verdict.feasible:
        return Outcome("rejected", verdict.stage, verdict.reason, check_metrics)
    workdir = _fresh_dir(self.run_dir.work / f"{c.id:04d}", "eval")
    deferred = {"score_test": False} if self._evaluate_test_call is not None else {}
    result = self._evaluate_call(
        str(self.run_dir.program_path(c.id)), self.profile, list(cfg.training_seeds),
        workdir=workdir, limits=self._limits("eval", c.id), **deferred)
    metrics = {**check_metrics, **dict(result.metrics or {})}
    if deferred:  # Where the saved parameters are, to score OOD-test if it becomes best.
      metrics["eval_workdir"] = os.path.relpath(workdir, self.run_dir.root)
    if isinstance(getattr(result, "wall_seconds", None), (int, float)):
      metrics["eval_wall_seconds"] = round(float(result.wall_seconds), 3)
    if result.status != "ok":
      return Outcome("failed", "evaluate", f"evaluate: {result.status}: {result.reason}",
                     metrics)
    fitness = metrics.get(FITNESS)
    if not isinstance(fitness, (int, float)) or not math.isfinite(fitness):
      return Outcome("failed", "evaluate", f"evaluate: {FITNESS} is {fitness!r}, not a finite "
                     "number", metrics)
    features = {}
    for dim in cfg.feature_dims:
      value = metrics.get(dim, metrics.get(f"check_{dim}"))
      features[dim] = float(value) if isinstance(value, (int, float)) else 0.0
    return Outcome("evaluated", "ok", "", metrics, float(fitness), features)

  def _score_test(self, candidate_id: int) -> dict[str, Any]:
    """Scores a deferred OOD-test from the candidate's saved parameters; its metrics after.

    Runs on the driver thread (the archive's writer); a failure is recorded as
    ``test_error`` and never changes the candidate's fitness or status.
    """
    c = self.archive.get(candidate_id)
    if (self._evaluate_test_call is None or c is None or c.metrics.get("test_scored") is not False
        or not c.metrics.get("eval_workdir")):
      return dict(c.metrics) if c is not None else {}
    result = self._evaluate_test_call(
        str(self.run_dir.program_path(c.id)), self.profile, list(self.config.training_seeds),
        workdir=self.run_dir.root / c.metrics["eval_workdir"],
        limits=self._limits("eval", c.id))
    if result.status == "ok":
      added = {**dict(result.metrics or {}), "test_scored": True}
      added = {k: v for k, v in added.items() if k.startswith("ood_acc") or k in (
          "test_scored", "eval_seconds_by_set")}
      if "eval_seconds_by_set" in added:  # Keep the training run's ood_val/val timings.
        added["eval_seconds_by_set"] = {**dict(c.metrics.get("eval_seconds_by_set") or {}),
                                        **dict(added["eval_seconds_by_set"] or {})}
    else:
      added = {"test_error": f"{result.status}: {result.reason}"}
    self.log.event("test_scored", c.id, status=result.status, metrics=added)
    return dict(self.archive.update_metrics(c.id, added).metrics)

  def _score_final_tests(self) -> None:
    """OOD-test of the ``--test_top_k`` fittest candidates, when it was deferred."""
    if self._evaluate_test_call is None:
      return
    for c in self.archive.elites()[:self.config.test_top_k]:
      if c.metrics.get("test_scored") is False:
        self._score_test(c.id)

  def _record(self, c: Candidate, outcome: Outcome) -> None:
    best_before = self.archive.best()
    if outcome.status == "evaluated":
      self.archive.record_result(c.id, outcome.metrics, outcome.fitness, outcome.features)
      if best_before is None or outcome.fitness > best_before.fitness:  # A new best-so-far.
        outcome = dataclasses.replace(outcome, metrics=self._score_test(c.id))
    elif outcome.status == "rejected":
      self.archive.record_rejection(c.id, outcome.stage, outcome.reason, outcome.metrics)
    else:
      self.archive.record_failure(c.id, outcome.stage, outcome.reason, outcome.metrics)
    name = "seed" if c.id == SEED_ID else f"candidate {c.id}"
    if outcome.status == "evaluated":
      test = (noise.format_metric(outcome.metrics, "ood_acc")
              if outcome.metrics.get("ood_acc") is not None else
              "deferred: scored if it becomes best" if outcome.metrics.get("test_scored") is False
              else "not scored")
      text = (f"{name}: {FITNESS} {noise.format_metric(outcome.metrics)} (test {test}, "
              f"{_fmt(outcome.metrics.get('macs'))} MACs, "
              f"{_fmt(outcome.metrics.get('train_seconds'))} s training)")
      if best_before is not None and outcome.fitness > best_before.fitness:
        # Best-so-far rises on any strict gain (SPEC §1.7); the note says if it is noise.
        text += noise.improvement_note(noise.of(outcome.metrics), noise.of(best_before.metrics))
    else:
      text = f"{name}: {outcome.status} at {outcome.stage}: {outcome.reason}"
    self._after_candidate()
    self.log.event("result", c.id, message=text, status=outcome.status, stage=outcome.stage,
                   reason=outcome.reason, fitness=outcome.fitness, metrics=outcome.metrics)

  def _after_candidate(self) -> None:
    """Refreshes progress and results/summary.json after each finished candidate."""
    candidates = self.archive.candidates()
    proposals = [c for c in candidates if c.is_proposal and c.status not in PENDING_STATUSES]
    valid = sum(c.can_be_parent for c in proposals)
    best = self.archive.best()
    self.bar.update(len(proposals), best=best.fitness if best else None,
                    valid_rate=valid / len(proposals) if proposals else None)
    self._refresh_page(candidates, self._write_summary(candidates))

  def _refresh_page(self, candidates: list[Candidate], data: dict[str, Any], *,
                    final: bool = False) -> None:
    """results/index.html (viewer.py): at most every few seconds while running, and at the end.

    The wait after a write is also at least ten times what the write took, so a large archive
    never slows the loop by more than a tenth. A failure only costs the page.
    """
    import time

    from spark_clrs.analysis import viewer

    start = time.monotonic()
    if not final and start < self._page_due:
      return
    try:
      viewer.write_run_page(self.run_dir.root, candidates=candidates,
                            calls=self.archive.db.llm_calls(), summary=data, live=not final)
    except Exception as e:  # The page is a view of the archive; the search goes on.
      logging.getLogger("spark_clrs").warning("results/index.html not written: %s: %s",
                                              type(e).__name__, e)
    took = time.monotonic() - start
    self._page_due = start + took + max(viewer.REFRESH_S, viewer.REFRESH_COST_FACTOR * took)

  # Results ---------------------------------------------------------------------
  def _run_info(self) -> dict[str, Any]:
    cfg = self.config
    return {"run_dir": str(self.run_dir.root), "strategy": cfg.strategy,
            "profile": cfg.profile, "seed": cfg.seed, "iterations": cfg.iterations,
            "seed_program": cfg.seed_program, "factors": list(cfg.factors),
            "sandbox": cfg.sandbox,
            "llm_model": cfg.llm_model or "spark/offline",
            "llm_models": {role: [f"{m}:{w:g}" for m, w in llm_config(cfg).models_for(role)]
                           for role in ("router", "refiner", "rewriter")},
            "profile_settings": self.profile.to_dict() if self.profile else None,
            "budget": {"kind": cfg.budget, "amount": cfg.budget_amount or cfg.iterations},
            "training_seeds": list(cfg.training_seeds),
            "proposer_note": tables.proposer_note([cfg.llm_model], [cfg.strategy])}

  def _write_summary(self, candidates: list[Candidate]) -> dict[str, Any]:
    data = summary.summarize(candidates, self.archive.db.llm_calls(), self._run_info())
    data["complete"] = ((data["proposals"] >= self.config.iterations or self._budget_spent)
                        and not data["pending"])
    data["budget"]["spent"] = self._budget_spent
    data["stop_reason"] = self._stop_reason
    rundir.write_atomic(self.run_dir.summary_path,
                        json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return data

  def write_results(self) -> None:
    """summary.json, best_program.py and best_so_far.png from the archive as it stands."""
    candidates = self.archive.candidates()
    if not candidates:
      return
    data = self._write_summary(candidates)
    best = self.archive.best()
    if best is not None and best.code:
      rundir.write_atomic(self.run_dir.best_program_path, best.code)
    title = (f"{self.config.strategy} on {self.config.profile} "
             f"(seed {self.config.seed}): best {_fmt(data['best_ood_val_acc'])}")
    plots.save_best_so_far(candidates, self.run_dir.plot_path, title)
    self._refresh_page(candidates, data, final=True)
    self.log.say(f"results: {self.run_dir.summary_path}, {self.run_dir.best_program_path}, "
                 f"{self.run_dir.plot_path}")
    self.log.say(f"viewer: {self.run_dir.results / 'index.html'} (open it in a browser)")


def llm_config(cfg: config_lib.SearchConfig) -> Any:
  """The ``llm.LLMConfig`` of a search's ``--llm_*`` and per-role model flags."""
  from spark_clrs import llm

  return llm.LLMConfig(
      model=cfg.llm_model or None, api_base=cfg.llm_api_base or None,
      temperature=cfg.llm_temperature, timeout=cfg.llm_timeout, retries=cfg.llm_retries,
      seed=cfg.seed, max_tokens=cfg.llm_max_tokens, backoff_s=cfg.llm_backoff_s,
      models=cfg.llm_models,
      role_models=tuple((role, getattr(cfg, f"{role}_model"))
                        for role in ("router", "refiner", "rewriter")
                        if getattr(cfg, f"{role}_model")),
      max_input_tokens=cfg.llm_max_input_tokens or None,
      max_consecutive_failures=cfg.llm_max_consecutive_failures,
      price_per_mtok=tuple(cfg.llm_price_per_mtok) if cfg.llm_price_per_mtok else None)


def _deferred_test(evaluator: Any, score_test: str) -> EvaluateFn | None:
  """``evaluate_test`` of the executor (or caller's evaluate) when OOD-test is deferred.

  ``--score_test=best`` defers OOD-test when the evaluation can do it: an executor with
  ``supports_deferred_test`` (local slots; Ray tasks keep nothing between calls), or a
  caller-given evaluate object with an ``evaluate_test`` method.
  """
  if score_test != "best" or evaluator is None:
    return None
  method = getattr(evaluator, "evaluate_test", None)
  if not callable(method) or not getattr(evaluator, "supports_deferred_test", True):
    return None
  return method


def _fresh_dir(base: pathlib.Path, stage: str) -> pathlib.Path:
  """``base/stage``, or ``base/stage-2``, ... if an earlier attempt left one (never reused)."""
  path, n = base / stage, 1
  while path.exists():
    n += 1
    path = base / f"{stage}-{n}"
  path.mkdir(parents=True)
  return path


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
  if isinstance(value, int):
    return f"{value:,}"
  return "-" if value is None else str(value)


def _parse_value(text: str, like: Any) -> Any:
  """Parses a profile override value as the type of the profile field ``like``."""
  text = text.strip()
  try:
    if isinstance(like, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(like, int):
      return int(text)
    if isinstance(like, float):
      return float(text)
    if isinstance(like, tuple):
      return tuple(int(v) for v in text.replace(":", ",").strip("()[]").split(",") if v.strip())
  except ValueError:
    raise config_lib.ConfigError(f"--profile_overrides: {text!r} is not a valid "
                                 f"{type(like).__name__}") from None
  return text
