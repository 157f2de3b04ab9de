"""Checking and training candidates: the executor, its limits and working directories.

The controller hands a candidate to :meth:`Evaluations.evaluate`, which runs the
feasibility checks (SPEC §3, in the check worker's jail) and the training + evaluation
(SPEC §4, on the ``--executor``'s slots, each in a jail) and returns an :class:`Outcome`.
It never touches the archive, so up to ``--parallel_evaluations`` threads may call it at
once; the driver thread records what it returns.

Each attempt gets a fresh working directory (``work/<id>/eval``, then ``eval-2``, ... for
an evaluation re-run after a crash): nothing a killed attempt left behind is reused. With
``--score_test=best`` the OOD-test set is not predicted during training; the parameters
stay in the workdir and :meth:`Evaluations.score_test` scores it when the candidate becomes
the best so far.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
import traceback
import types
from collections.abc import Callable, Sequence
from typing import Any

from spark_clrs import config as config_lib
from spark_clrs.search import resolve, rundir
from spark_clrs.search.archive_db import Candidate
from spark_clrs.search.errors import SearchError
from spark_clrs.search.events import LOGGER

FITNESS = "ood_val_acc"
SEED_ID = 0
# checks.Verdict.cost_metrics(): the trusted cost a re-training reuses.
COST_KEYS = ("check_param_count", "check_macs", "check_macs_nb_nodes", "check_macs_by_shape")
EvaluateFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What checking and evaluating one candidate gave (computed off the driver thread)."""

  status: str  # evaluated | rejected | failed
  stage: str
  reason: str
  metrics: dict[str, Any]
  fitness: float | None = None
  features: dict[str, float] = dataclasses.field(default_factory=dict)


class Evaluations:
  """Runs the checks and the training of candidates for one run.

  Args:
    config: the run's configuration.
    profile: its evaluation profile.
    run: its run directory.
    evaluate: the evaluation function to use instead of the ``--executor``'s, called as
      ``evaluate(program_path, profile, seeds, workdir=..., limits=...)`` from up to
      ``parallel_evaluations`` threads and returning an object with ``status``,
      ``metrics`` and ``reason``; an object with an ``evaluate_test`` method also gets
      the deferred OOD-test (``score_test=False`` first).
  """

  def __init__(self, config: config_lib.SearchConfig, profile: Any, run: rundir.RunDir, *,
               evaluate: EvaluateFn | None = None):
    self.config = config
    self.profile = profile
    self.run = run
    self._given = evaluate
    self._executor: Any = None
    self._worker: Any = None
    self._call: EvaluateFn | None = None
    self._test_call: EvaluateFn | None = None
    self.budget: Any = None  # checks.Budget once the seed is evaluated (None for the seed).
    self.seed_seconds: float | None = None  # The seed's evaluation wall time.

  # Set-up ------------------------------------------------------------------------------
  def start(self, say: Callable[[str], None]) -> None:
    """Fails closed without the jail, then starts the executor and the check worker."""
    from spark_clrs import checks
    from spark_clrs.evaluation import executors
    from spark_clrs.isolation import jail

    try:
      say(jail.check_mode(self.config.sandbox))
    except jail.JailUnavailableError as e:
      raise SearchError(str(e)) from None
    if self._given is None:
      self._executor = self._make_executor()
      try:
        self._executor.start()
      except executors.ExecutorError as e:
        raise SearchError(str(e)) from None
      say(self._executor.describe())
    self._call = self._executor.evaluate if self._executor is not None else self._given
    self._test_call = _deferred_test(self._executor or self._given, self.config.score_test)
    if self.config.feasibility_check:
      self._worker = checks.make_worker(self.run.work / "check-worker")
      self._worker.start()

  def _make_executor(self) -> Any:
    """The executor ``--executor`` names, with the run's compilation cache."""
    from spark_clrs.evaluation import executors

    cfg = self.config
    cache = None
    if cfg.compilation_cache:
      cache = pathlib.Path(os.environ.get(executors.JAX_CACHE_VAR)
                           or self.run.root / "cache" / "jax")
    try:
      return executors.make_executor(
          cfg.executor, cfg.parallel_evaluations, workdir=self.run.work / "executor",
          compile_cache_dir=cache, ray_address=cfg.ray_address,
          ray_cpus_per_evaluation=cfg.ray_cpus_per_evaluation)
    except executors.ExecutorError as e:
      raise config_lib.ConfigError(str(e)) from None

  def close(self) -> None:
    try:
      if self._worker is not None:
        self._worker.close()
    finally:
      if self._executor is not None:
        self._executor.close()
      self._call = self._test_call = None

  def seeds_for(self, candidate_id: int) -> tuple[int, ...]:
    """Training seeds: the seed program's several, every other candidate's own."""
    if candidate_id == SEED_ID:
      return resolve.seed_program_seeds(self.config)
    return tuple(self.config.training_seeds)

  def limits(self, kind: str, candidate_id: int | None = None) -> Any:
    """Sandbox limits of a check or an evaluation (relative to the seed's cost)."""
    from spark_clrs.isolation import sandbox

    cfg = self.config
    if kind == "check":
      return sandbox.Limits(timeout_s=cfg.check_timeout_s, memory_mb=cfg.check_memory_mb)
    timeout = cfg.eval_timeout_s
    if candidate_id not in (None, SEED_ID) and self.seed_seconds and cfg.eval_timeout_factor > 0:
      timeout = min(cfg.eval_timeout_s, max(cfg.eval_timeout_factor * self.seed_seconds,
                                            cfg.eval_timeout_floor_s))
    memory = cfg.eval_memory_mb or sandbox.slot_memory_mb(cfg.parallel_evaluations)
    return sandbox.Limits(timeout_s=timeout, memory_mb=memory)

  # One candidate -------------------------------------------------------------------------
  def safe_evaluate(self, c: Candidate, parent_text: str | None) -> Outcome:
    """:meth:`evaluate`, with our own bugs turned into a failed candidate."""
    try:
      return self.evaluate(c, parent_text)
    except Exception as e:  # Our own bug in one evaluation must not end the search.
      logging.getLogger(LOGGER).error("candidate %d: %s", c.id, traceback.format_exc())
      return Outcome("failed", "evaluate", f"evaluate: internal error {type(e).__name__}: {e}",
                     {})

  def evaluate(self, c: Candidate, parent_text: str | None) -> Outcome:
    """Feasibility checks, then training + evaluation, of one candidate (any thread)."""
    from spark_clrs import checks

    cfg = self.config
    check_metrics: dict[str, Any] = {}
    cost = None
    if cfg.feasibility_check:
      if not (cfg.freeze_non_selected_region and c.scope):
        parent_text = None  # Scope not enforced: the entanglement is measured, not rejected.
      verdict = checks.run_checks(
          c.code, parent_text=parent_text, scope=c.scope if parent_text else None,
          budget=self.budget if c.id != SEED_ID else None,
          workdir=fresh_dir(self.run.work / f"{c.id:04d}", "check"),
          limits=self.limits("check"), hidden=self.profile.hidden,
          config=checks.CheckConfig.for_profile(self.profile), worker=self._worker)
      check_metrics = verdict.cost_metrics()
      cost = check_metrics if verdict.cost() is not None else None
      if not verdict.feasible:
        return Outcome("rejected", verdict.stage, verdict.reason, check_metrics)
    workdir = fresh_dir(self.run.work / f"{c.id:04d}", "eval")
    seeds = self.seeds_for(c.id)
    extra: dict[str, Any] = {"score_test": False} if self._test_call is not None else {}
    if cost is not None:  # The checks' trusted cost: the trainer does not measure it again.
      extra["cost"] = cost
    assert self._call is not None, "start() first"
    result = self._call(str(self.run.program_path(c.id)), self.profile, list(seeds),
                        workdir=workdir, limits=self.limits("eval", c.id), **extra)
    metrics = {**check_metrics, **dict(result.metrics or {})}
    metrics.setdefault("seeds", list(seeds))
    if "score_test" in extra:  # Where the saved parameters are, to score OOD-test later.
      metrics["eval_workdir"] = os.path.relpath(workdir, self.run.root)
    if isinstance(getattr(result, "wall_seconds", None), (int, float)):
      metrics["eval_wall_seconds"] = round(float(result.wall_seconds), 3)
    if result.status != "ok":
      reason = str(result.reason or "")
      if not reason.startswith(f"{result.status}:"):
        reason = f"{result.status}: {reason}"
      return Outcome("failed", "evaluate", f"evaluate: {reason}", metrics)
    fitness = metrics.get(FITNESS)
    if not isinstance(fitness, (int, float)) or not math.isfinite(fitness):
      return Outcome("failed", "evaluate", f"evaluate: {FITNESS} is {fitness!r}, not a finite "
                     "number", metrics)
    features = {}
    for dim in cfg.feature_dims:
      value = metrics.get(dim, metrics.get(f"check_{dim}"))
      features[dim] = float(value) if isinstance(value, (int, float)) else 0.0
    return Outcome("evaluated", "ok", "", metrics, float(fitness), features)

  def test_deferred(self, c: Candidate) -> bool:
    """Whether ``c``'s OOD-test was left for later and can be scored now."""
    return (self._test_call is not None and c.metrics.get("test_scored") is False
            and bool(c.metrics.get("eval_workdir")))

  def score_test(self, c: Candidate) -> tuple[str, dict[str, Any]]:
    """Scores ``c``'s deferred OOD-test from its saved parameters: (status, metrics to add).

    A failure adds ``test_error`` and never changes the candidate's fitness or status.
    """
    assert self._test_call is not None
    try:
      result = self._test_call(
          str(self.run.program_path(c.id)), self.profile, list(self.seeds_for(c.id)),
          workdir=self.run.root / c.metrics["eval_workdir"], limits=self.limits("eval", c.id))
    except Exception as e:  # Our own bug or a broken worker costs the test score only.
      logging.getLogger(LOGGER).error("candidate %d test: %s", c.id, traceback.format_exc())
      return "error", {"test_error": f"internal error {type(e).__name__}: {e}"}
    if result.status != "ok":
      return result.status, {"test_error": f"{result.status}: {result.reason}"}
    added = {**dict(result.metrics or {}), "test_scored": True}
    added = {k: v for k, v in added.items()
             if k.startswith("ood_acc") or k in ("test_scored", "eval_seconds_by_set")}
    if "eval_seconds_by_set" in added:  # Keep the training run's ood_val/val timings.
      added["eval_seconds_by_set"] = {**dict(c.metrics.get("eval_seconds_by_set") or {}),
                                      **dict(added["eval_seconds_by_set"] or {})}
    return result.status, added

  def retrain(self, c: Candidate, seeds: Sequence[int]) -> Any:
    """Trains and scores ``c`` again with ``seeds``, OOD-test included (the final
    re-evaluation); returns the evaluation's result (``status``, ``metrics``, ``reason``)."""
    assert self._call is not None, "start() first"
    workdir = fresh_dir(self.run.work / f"{c.id:04d}", "final")
    extra = {}
    if all(c.metrics.get(k) is not None for k in COST_KEYS):  # The checks' cost, once.
      extra["cost"] = {k: c.metrics[k] for k in COST_KEYS}
    try:
      return self._call(str(self.run.program_path(c.id)), self.profile, list(seeds),
                        workdir=workdir, limits=self.limits("eval", SEED_ID), **extra)
    except Exception as e:  # Our own bug in one re-evaluation must not end the run.
      logging.getLogger(LOGGER).error("candidate %d final: %s", c.id, traceback.format_exc())
      return types.SimpleNamespace(status="error", metrics={},
                                   reason=f"internal error {type(e).__name__}: {e}")


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


def fresh_dir(base: pathlib.Path, stage: str) -> pathlib.Path:
  """``base/stage``, or ``base/stage-2``, ... if an earlier attempt left one (never reused)."""
  path, n = base / stage, 1
  while path.exists():
    n += 1
    path = base / f"{stage}-{n}"
  path.mkdir(parents=True)
  return path
