"""The search loop (SPEC §1): propose -> check -> train -> archive, then the final re-evaluation.

`Controller` drives one run directory. The seed program (candidate 0) is evaluated first,
with several training seeds (``--seed_program_seeds``) whose spread is the seed term of
every single-seed fitness's interval; it is not counted as a proposal. Then each
iteration k makes proposal k (proposal.py), checks and trains it (dispatch.py) and records
the result; a candidate becomes the best so far only on a clear paired gain over it
(standing.py). At the end the best and the fittest candidates are re-trained with fresh
seeds (final.py): the run's unbiased result.

Everything is written as it happens: the candidate with its LLM calls and decisions (one
SQLite transaction), its program file, events (events.py) and ``results/summary.json``.
That makes resuming exact: a recorded proposal is never asked for again, a candidate whose
evaluation was running at a crash is re-run in a fresh working directory, a proposal that
was being made is re-made from the same seeded RNG (its LLM replies from the run's reply
cache), and only unfinished final re-evaluations run again.

With ``parallel_evaluations=N > 1`` N evaluations are in flight (schedule.py); only the
driver thread proposes and writes the archive.

The controller imports nothing from analysis/: the run page is redrawn through the
``refresh`` callback that ``search.api`` hands it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TextIO

from spark_clrs import config as config_lib
from spark_clrs.evaluation import noise
from spark_clrs.programs import regions
from spark_clrs.search import archive as archive_lib
from spark_clrs.search import final, progress, resolve, rundir, standing, summary
from spark_clrs.search.archive_db import PENDING_STATUSES, Candidate
from spark_clrs.search.dispatch import EvaluateFn, Evaluations, Outcome
from spark_clrs.search.errors import SearchError
from spark_clrs.search.events import EventLog
from spark_clrs.search.proposal import Proposals, make_proposer
from spark_clrs.search.schedule import Scheduler
from spark_clrs.search.spend import Spend

SEED_ID = standing.SEED_ID
FITNESS, TEST = noise.FITNESS, noise.TEST
Refresh = Callable[..., None]  # refresh(*, candidates, calls, summary, final: bool) -> None


class Controller:
  """Runs (or resumes) one search in an opened run directory.

  Args:
    opened: the run directory and configuration from `rundir.open_run`.
    stream: where progress goes (default stderr).
    proposer: a `Proposer` to use instead of the one ``--strategy`` names.
    evaluate: the evaluation function, called as ``evaluate(program_path, profile,
      seeds, workdir=..., limits=...)`` from up to ``parallel_evaluations`` threads and
      returning an object with ``status``, ``metrics`` and ``reason`` (default: the
      ``--executor``'s, which trains in a jailed child).
    refresh: redraws the run page from ``candidates``, ``calls`` and ``summary`` after each
      finished candidate (``final=False``) and at the end (``final=True``).
  """

  def __init__(self, opened: rundir.OpenedRun, *, stream: TextIO | None = None,
               proposer: Any = None, evaluate: EvaluateFn | None = None,
               refresh: Refresh | None = None):
    self.config = opened.config
    self.run_dir = opened.run
    self._opened = opened
    self._stream = stream
    self._given_proposer = proposer
    self._evaluate = evaluate
    self._refresh = refresh
    self.profile: Any = None
    self.spend: Spend | None = None

  # Main entry ------------------------------------------------------------------------------
  def run(self) -> None:
    """Runs the remaining iterations and writes the results; resumable at any point."""
    cfg = self.config
    with rundir.RunLock(self.run_dir):
      self.profile = resolve.profile_of(cfg)
      archive = archive_lib.Archive(self.run_dir.archive_path,
                                    archive_lib.ArchiveSettings.from_config(cfg))
      self.archive = archive
      done = sum(1 for c in archive.candidates()
                 if c.is_proposal and c.status not in PENDING_STATUSES)
      self.bar = progress.Progress(cfg.iterations, start=min(done, cfg.iterations),
                                   mode=cfg.progress, stream=self._stream)
      self.log = EventLog(self.run_dir, archive.db, self.bar)
      self.spend = Spend(cfg, archive.db, self.log)
      try:
        for note in self._opened.notes:
          self.log.say(note)
        self.log.event("start", message=None, resumed=self._opened.resumed,
                       config=cfg.to_dict(), profile=self.profile.to_dict())
        self._store_undecided()
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

  def _store_undecided(self) -> None:
    """Stores the best-so-far decisions of an archive recorded without them."""
    for cid, decision in standing.undecided(self.archive.candidates()).items():
      self.archive.db.set_comparison(cid, decision)

  def _run_loop(self) -> None:
    cfg = self.config
    self.run_dir.ensure_programs({c.id: c.code for c in self.archive.candidates() if c.code})
    self.evaluations = Evaluations(cfg, self.profile, self.run_dir, evaluate=self._evaluate)
    if self._given_proposer is not None:
      proposer = self._given_proposer
      strategy = getattr(proposer, "name", None) or cfg.strategy
      self.log.say(f"proposer: {type(proposer).__name__} (given by the caller)")
    else:
      proposer = make_proposer(cfg, self.run_dir, self.profile.algorithm, self.spend,
                               self.archive.db)
      strategy = cfg.strategy
      self.log.say(
          f"proposer: {cfg.strategy} with LLM {cfg.llm_model}"
          f"{' at ' + cfg.llm_api_base if cfg.llm_api_base else ''}" if cfg.llm_model else
          "proposer: no --llm_model set, so the built-in offline proposer spark/offline (a "
          "rule-based catalogue of factor-local moves, not an LLM) answers the router, "
          "refiner and rewriter")
    from spark_clrs.proposers import options as engine_options

    engine = engine_options.of(proposer)  # What the strategy needs.
    self.archive.configure(engine)
    proposals = Proposals(cfg, self.archive, self.run_dir, proposer, engine, self.log,
                          self.spend, self._after_candidate, strategy)
    self.scheduler = Scheduler(cfg, self.archive, proposals, self.evaluations, self.spend,
                               self.log, self._record)
    try:
      self.evaluations.start(self.log.say)
      self._ensure_seed()
      self._timeouts()
      self.evaluations.budget = self._caps()
      self.scheduler.run((self.archive.db.max_candidate_id() or 0) + 1)
      self._finish()
    finally:
      self.evaluations.close()

  def _finish(self) -> None:
    """The deferred OOD-tests or the final re-evaluation, then the closing line."""
    spend = self.spend
    assert spend is not None
    if spend.stop_reason is not None and not spend.budget_spent:
      self.log.event("stopped", message=f"search stopped early ({spend.stop_reason}) in "
                     f"{self.run_dir.root}; re-run with a larger limit to continue (the final "
                     "re-evaluation runs when the search is complete)",
                     reason=spend.stop_reason)
      return
    the_plan = final.plan(self.archive, self.config)
    if the_plan is None:
      for c in self.archive.elites()[:self.config.test_top_k]:
        if self.evaluations.test_deferred(c):
          self._score_test(c)
    else:
      final.run(self.archive, self.evaluations, self.log, the_plan)
    done = (spend.stop_reason if spend.budget_spent
            else f"{self.config.iterations} proposals")  # A spent --budget is complete.
    self.log.event("finished", message=f"search finished: {done} in {self.run_dir.root}")

  def _timeouts(self) -> None:
    """Candidates' evaluation timeout, relative to the seed's measured wall time."""
    cfg = self.config
    seed = self.archive.get(SEED_ID)
    value = (seed.metrics or {}).get("eval_wall_seconds") if seed is not None else None
    seconds = float(value) if isinstance(value, (int, float)) and value > 0 else None
    self.evaluations.seed_seconds = seconds
    if seconds and cfg.eval_timeout_factor > 0:
      self.log.say(f"candidate evaluation timeout: "
                   f"{self.evaluations.limits('eval', 1).timeout_s:.0f} s "
                   f"({cfg.eval_timeout_factor:g} x the seed's {seconds:.0f} s, at least "
                   f"{cfg.eval_timeout_floor_s:g} s, at most {cfg.eval_timeout_s:g} s)")

  # Seed ------------------------------------------------------------------------------------
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
      seeds = ",".join(map(str, self.evaluations.seeds_for(SEED_ID)))
      self.log.event("seed", SEED_ID, message=f"seed: {self.config.seed_program} is "
                     f"candidate 0, trained with seeds {seeds} (their spread is the seed term "
                     "of every single-seed fitness's interval)",
                     seed_program=self.config.seed_program)
      seed = self.archive.get(SEED_ID)
    if seed.status in PENDING_STATUSES:
      self.scheduler.process([seed])
      seed = self.archive.get(SEED_ID)
    if not seed.can_be_parent:
      raise SearchError(f"the seed program {self.config.seed_program} failed at "
                        f"{seed.stage}: {seed.reason}; fix it (try python -m spark_clrs.check "
                        f"{self.run_dir.program_path(SEED_ID)}) and start a new --output")

  def _caps(self) -> Any:
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

  # Checks + evaluation -----------------------------------------------------------------------
  def _with_intervals(self, metrics: dict[str, Any], candidates: list[Candidate],
                      names: tuple[str, ...] = (FITNESS, TEST)) -> dict[str, Any]:
    """``metrics`` plus each accuracy's interval (statistics.py), the seed's spread borrowed."""
    out = dict(metrics)
    for name in names:
      if out.get(name) is not None:
        spread = standing.seed_spread(candidates, name)
        out[name + noise.INTERVAL_SUFFIX] = noise.to_json(noise.compute(out, name, spread))
    return out

  def _score_test(self, c: Candidate) -> Candidate:
    """Scores a deferred OOD-test (the driver thread writes it); the candidate after."""
    status, added = self.evaluations.score_test(c)
    if status == "ok":
      added = self._with_intervals({**c.metrics, **added}, self.archive.candidates(), (TEST,))
    self.log.event("test_scored", c.id, status=status, metrics=added)
    return self.archive.update_metrics(c.id, added)

  def _record(self, c: Candidate, outcome: Outcome) -> None:
    name = "seed" if c.id == SEED_ID else f"candidate {c.id}"
    if outcome.status == "evaluated":
      everyone = self.archive.candidates()
      metrics = self._with_intervals(outcome.metrics, everyone)
      spread = standing.seed_spread(everyone)
      comparison = standing.decide(metrics, standing.current_best(everyone), spread)
      stored = self.archive.record_result(c.id, metrics, outcome.fitness, outcome.features)
      self.archive.db.set_comparison(c.id, comparison)
      if comparison["new_best"] and self.evaluations.test_deferred(stored):
        stored = self._score_test(stored)
      metrics = stored.metrics
      test = (noise.format_metric(metrics, TEST) if metrics.get(TEST) is not None else
              "deferred: scored if it becomes best" if metrics.get("test_scored") is False
              else "not scored")
      text = (f"{name}: {FITNESS} {noise.format_metric(metrics)} (test {test}, "
              f"{_fmt(metrics.get('macs'))} MACs, {_fmt(metrics.get('train_seconds'))} s "
              "training)")
      if comparison.get("against") is not None:
        text += f"; {comparison['text']}"
    elif outcome.status == "rejected":
      self.archive.record_rejection(c.id, outcome.stage, outcome.reason, outcome.metrics)
      text = f"{name}: rejected at {outcome.stage}: {outcome.reason}"
    else:
      self.archive.record_failure(c.id, outcome.stage, outcome.reason, outcome.metrics)
      text = f"{name}: failed at {outcome.stage}: {outcome.reason}"
    self._after_candidate()
    self.log.event("result", c.id, message=text, status=outcome.status, stage=outcome.stage,
                   reason=outcome.reason, fitness=outcome.fitness, metrics=outcome.metrics)

  def _after_candidate(self) -> None:
    """Refreshes progress, results/summary.json and the page after each finished candidate."""
    candidates = self.archive.candidates()
    proposals = [c for c in candidates if c.is_proposal and c.status not in PENDING_STATUSES]
    best = standing.current_best(candidates)
    self.bar.update(len(proposals), best=best.fitness if best else None,
                    valid_rate=(sum(c.can_be_parent for c in proposals) / len(proposals)
                                if proposals else None))
    data = self._write_summary(candidates)
    if self._refresh is not None:
      self._refresh(candidates=candidates, calls=self.archive.db.llm_calls(), summary=data,
                    final=False)

  # Results -----------------------------------------------------------------------------------
  def _run_info(self) -> dict[str, Any]:
    cfg = self.config
    llm = resolve.llm_config_of(cfg)
    return {"run_dir": str(self.run_dir.root), "strategy": cfg.strategy,
            "profile": cfg.profile, "seed": cfg.seed, "iterations": cfg.iterations,
            "seed_program": cfg.seed_program, "factors": list(cfg.factors),
            "sandbox": cfg.sandbox, "llm_model": cfg.llm_model or "spark/offline",
            "llm_models": {role: [f"{m}:{w:g}" for m, w in llm.models_for(role)]
                           for role in resolve.ROLES},
            "profile_settings": self.profile.to_dict() if self.profile else None,
            "budget": {"kind": cfg.budget, "amount": cfg.budget_amount or cfg.iterations},
            "training_seeds": list(cfg.training_seeds),
            "seed_program_seeds": list(resolve.seed_program_seeds(cfg)),
            "proposer_note": summary.proposer_note([cfg.llm_model], [cfg.strategy])}

  def _write_summary(self, candidates: list[Candidate]) -> dict[str, Any]:
    spend = self.spend
    assert spend is not None
    data = summary.summarize(candidates, self.archive.db.llm_calls(), self._run_info(),
                             summary.final_of(self.archive.db, candidates))
    proposed = data["proposals"] >= self.config.iterations or spend.budget_spent
    final_done = self.config.final_top_k == 0 or (data["final"] is not None
                                                  and data["final"]["status"] == "complete")
    data["complete"] = proposed and not data["pending"] and final_done
    data["budget"]["spent"] = spend.budget_spent
    data["stop_reason"] = spend.stop_reason
    rundir.write_atomic(self.run_dir.summary_path,
                        json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return data

  def write_results(self) -> None:
    """summary.json, best_program.py and the page from the archive as it stands."""
    candidates = self.archive.candidates()
    if not candidates:
      return
    data = self._write_summary(candidates)
    best = standing.current_best(candidates)
    if best is not None and best.code:
      rundir.write_atomic(self.run_dir.best_program_path, best.code)
    if self._refresh is not None:
      self._refresh(candidates=candidates, calls=self.archive.db.llm_calls(), summary=data,
                    final=True)
    self.log.say(f"results: {self.run_dir.summary_path}, {self.run_dir.best_program_path}, "
                 f"{self.run_dir.plot_path}")
    self.log.say(f"viewer: {self.run_dir.results / 'index.html'} (open it in a browser)")
    line = final.headline(data["final"], best, standing.seed_spread(candidates))
    if line is not None:
      self.log.say(line)


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
  if isinstance(value, int):
    return f"{value:,}"
  return "-" if value is None else str(value)


__all__ = ["Controller", "Refresh", "SearchError"]
