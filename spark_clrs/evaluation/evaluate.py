"""The trusted side of an evaluation: data to the jail, phases, validation, scores.

:func:`evaluate` and :func:`evaluate_test` never load the candidate. They sample the
evaluation sets, give the jailed trainer (:mod:`spark_clrs.evaluation.trainer`) only what
CLRS's prediction reads (``data.export_features``), run it, and compute every number that
is selected on or reported from the files it returns (:mod:`protocol`), with CLRS's own
scoring (:mod:`scoring`): accuracies of OOD-val (fitness), OOD-test and val, each with a
95 % bootstrap interval over graphs (``*_ci``) and per-graph accuracies per training seed
(``*_per_graph``); parameter counts from the returned arrays; MACs from the checks' cost
of the program (the budget stage's trusted measurement at every shape the evaluation runs
at: passed in by the search, else measured here by ``checks.measure_cost``), used once its
parameter count matches the trained processor's. Every file is read and written through :mod:`spark_clrs.isolation.exchange`
(no link followed, bounded reads, array headers checked against :mod:`protocol` before
any allocation), so whatever the jail left in its workdir is at worst a rejected
candidate with a one-line reason.

With ``profile.eval_every > 0`` the trainer writes val predictions and a parameter
checkpoint at every evaluation step; the parent scores them while it runs
(``scoring.CheckpointSelector``), keeps each seed's best (CLRS's best checkpoint) and a
second jailed phase predicts the final sets from it. With ``score_test=False`` OOD-test
is not predicted; the trained parameters stay in the workdir and :func:`evaluate_test`
scores OOD-test later from them (predict only).
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import clrs
import numpy as np

import processors
from spark_clrs.checks.driver import measure_cost
from spark_clrs.checks.protocol import CheckConfig
from spark_clrs.evaluation import child_report, protocol, scoring
from spark_clrs.evaluation import data as data_lib
from spark_clrs.evaluation import profiles as profiles_lib
from spark_clrs.isolation import exchange, sandbox
from spark_clrs.isolation import limits as limits_lib
from spark_clrs.isolation.exchange import BoundaryError
from spark_clrs.isolation.runner import FreshRunner, Runner

MAX_DEFAULT_MEMORY_MB = 16384


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Outcome of a jailed evaluation.

  Attributes:
    status: the sandbox status (``ok``, ``error``, ``timeout``, ``crashed``, ``memory``,
      ``output_limit``); ``error`` also when the returned files are missing, malformed,
      non-finite or cross the boundary wrongly (the reason says which).
    metrics: the metrics (see ``in_process.evaluate_program``) when ok; on a failure
      after the child finished, its timings only (never an accuracy); else None.
    reason: one line saying what went wrong (empty when ok).
    wall_seconds: wall time of the child(ren), process start to exit.
    peak_rss_mb: peak resident memory of the child's process tree.
    stderr_tail: the end of the child's log.
  """

  status: str
  metrics: dict[str, Any] | None
  reason: str
  wall_seconds: float
  peak_rss_mb: float
  stderr_tail: str

  @property
  def ok(self) -> bool:
    return self.status == "ok"

  @property
  def is_program_error(self) -> bool:
    """The program did not load (syntax/import error, no ``get_processor_factory``)."""
    return "ProgramLoadError" in self.reason


def default_limits(profile: profiles_lib.EvalProfile, num_seeds: int = 1, *,
                   memory_mb: int | None = None) -> sandbox.Limits:
  """Generous limits for one evaluation: 10 min + 10 s per training step per seed, and
  ``memory_mb`` (default: what this machine has for one slot, at most 16 GiB)."""
  if memory_mb is None:
    memory_mb = min(MAX_DEFAULT_MEMORY_MB, limits_lib.slot_memory_mb(1))
  return sandbox.Limits(timeout_s=num_seeds * (600.0 + 10.0 * profile.train_steps),
                        memory_mb=memory_mb)


def _error(reason: str, metrics: dict[str, Any] | None = None,
           child: sandbox.ChildResult | None = None, wall: float = 0.0) -> EvalResult:
  """A failed evaluation; ``reason`` one line, prefixed ``error:``."""
  return EvalResult(status="error", metrics=metrics, reason=f"error: {reason}",
                    wall_seconds=wall + (child.wall_seconds if child else 0.0),
                    peak_rss_mb=child.peak_rss_mb if child else 0.0,
                    stderr_tail=child.stderr_tail if child else "")


class _Failed(Exception):
  """A phase failed; carries the EvalResult to return."""

  def __init__(self, result: EvalResult):
    super().__init__(result.reason)
    self.result = result


@dataclasses.dataclass
class _Phase:
  """What one jailed phase returned, once validated."""

  report: dict[str, Any]
  predictions: dict[str, np.ndarray]
  child: sandbox.ChildResult


@dataclasses.dataclass(frozen=True)
class _Run:
  """Where and how the phases of one evaluation run."""

  workdir: pathlib.Path
  limits: sandbox.Limits
  runner: Runner

  def child(self, payload: dict[str, Any]) -> sandbox.ChildResult:
    return self.runner.run(protocol.CHILD_TARGET, payload, workdir=self.workdir,
                           limits=self.limits)


def _write_inputs(workdir: pathlib.Path, name: str, spec: clrs.Spec,
                  sets: Mapping[str, data_lib.EvalSet]) -> dict[str, Any]:
  """Writes the jail's view of ``sets`` (before it starts); returns the manifest."""
  arrays, manifest = data_lib.export_features(sets, spec)
  exchange.save_npz(workdir, protocol.in_exchange(name), arrays, compress=True)
  return manifest


def _shapes(sets: Mapping[str, data_lib.EvalSet], names: Sequence[str]
            ) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
  return {n: scoring.output_shapes(scoring.truth(sets[n])) for n in names}


def _run_phase(run: _Run, payload: dict[str, Any], seeds: Sequence[int],
               sets: Mapping[str, data_lib.EvalSet], *, wall: float = 0.0,
               selector: scoring.CheckpointSelector | None = None) -> _Phase:
  """Runs one jailed phase and loads its predictions (raises :class:`_Failed`)."""
  try:
    exchange.unlink(run.workdir, protocol.in_exchange(payload["predictions"]))
  except BoundaryError as e:
    raise _Failed(_error(str(e), wall=wall)) from None
  if selector is not None:
    selector.start()
  try:
    child = run.child(payload)
  finally:
    selector_error = None
    if selector is not None:
      try:
        selector.stop()
      except BoundaryError as e:
        selector_error = e
  if not child.ok:
    raise _Failed(EvalResult(status=child.status, metrics=None, reason=child.reason,
                             wall_seconds=wall + child.wall_seconds,
                             peak_rss_mb=child.peak_rss_mb, stderr_tail=child.stderr_tail))
  report = child_report.sanitize(child.value, seeds)
  if selector_error is not None:
    raise _Failed(_error(str(selector_error), report, child, wall))
  losses = report.get("final_loss_per_seed")
  if payload["phase"] == "train":
    if losses is None:
      raise _Failed(_error("the child did not report one training loss per seed", report,
                           child, wall))
    for seed, loss in zip(seeds, losses, strict=True):
      if loss is None:
        raise _Failed(_error(f"nonfinite: the training loss of seed {seed} is NaN or "
                             "infinite", report, child, wall))
  if report["nonfinite_outputs"]:
    where = ", ".join(report["nonfinite_outputs"])
    raise _Failed(_error(f"nonfinite: the model's raw outputs are NaN or infinite "
                         f"(set|seed: {where})", report, child, wall))
  predictions: dict[str, np.ndarray] = {}
  if payload["predict_sets"]:
    spec = protocol.prediction_spec(_shapes(sets, payload["predict_sets"]), seeds)
    try:
      predictions = exchange.load_npz(run.workdir, protocol.in_exchange(payload["predictions"]),
                                      max_bytes=protocol.spec_bytes(spec), expect=spec)
    except BoundaryError as e:
      raise _Failed(_error(str(e), report, child, wall)) from None
  return _Phase(report, predictions, child)


def _score_sets(phase: _Phase, sets: Mapping[str, data_lib.EvalSet], names: Sequence[str],
                seeds: Sequence[int], what: str) -> dict[str, Any]:
  """Accuracy metrics of ``names`` from a phase's predictions (raises BoundaryError)."""
  metrics: dict[str, Any] = {}
  for name in names:
    outputs = scoring.truth(sets[name])
    preds = [scoring.predictions_for(phase.predictions, outputs, name, seed, what=what)
             for seed in seeds]
    metrics.update(scoring.accuracy_metrics(protocol.KEY_FOR_SET[name], outputs, preds))
  return metrics


def _load_state(workdir: pathlib.Path, seed: int) -> dict[str, np.ndarray]:
  """A seed's returned state: parameters and one PRNG key per evaluation set."""
  arrays = exchange.load_npz(workdir, protocol.state_file(seed),
                             max_bytes=protocol.MAX_STATE_BYTES,
                             expect=protocol.check_state_array)
  for name in protocol.EVAL_SET_NAMES:
    if f"{protocol.KEY_PREFIX}{name}" not in arrays:
      raise BoundaryError(f"state of seed {seed}: no uint32[2] PRNG key for {name}")
  return arrays


def _state_counts(workdir: pathlib.Path, seeds: Sequence[int]) -> scoring.ParamCounts:
  """Parameter counts from the returned state files (the same structure for all seeds)."""
  counts = None
  for seed in seeds:
    seed_counts = scoring.count_params(_load_state(workdir, seed), f"state of seed {seed}")
    if counts is not None and seed_counts != counts:
      raise BoundaryError(f"state of seed {seed} has {seed_counts.param_count} parameters, "
                          f"seed {seeds[0]} {counts.param_count}")
    counts = seed_counts
  assert counts is not None
  return counts


CHECKED_COST_KEYS = ("check_param_count", "check_macs", "check_macs_nb_nodes",
                     "check_macs_by_shape")


def _checked_cost(cost: Mapping[str, Any], processor_count: int) -> dict[str, Any]:
  """The cost the checks' budget stage measured (``Verdict.cost_metrics()``: trusted, from
  the check child's exports at every evaluated shape), cross-checked against the trained
  model's processor parameter count, so the costed processor is the trained one."""
  if cost["check_param_count"] != processor_count:
    raise BoundaryError(f"the checked processor has {cost['check_param_count']} parameters "
                        f"but the trained model's processor has {processor_count}")
  return {"macs": cost["check_macs"], "macs_nb_nodes": cost["check_macs_nb_nodes"],
          "macs_by_shape": dict(cost.get("check_macs_by_shape") or {}),
          "macs_source": "check"}


def _measure_cost(path: pathlib.Path, profile: profiles_lib.EvalProfile,
                  workdir: pathlib.Path) -> dict[str, Any]:
  """The checks' cost of a program nobody checked (``checks.measure_cost``: its jailed
  stages and the trusted costing; no caps).

  The check child gets a fresh directory beside ``workdir`` (in its trusted parent), never
  one inside the workdir the training jail could have prepared (a planted link there
  would make the parent hand a host folder to the next jail); removed after.

  Raises:
    BoundaryError: the program's cost cannot be measured (the checks' reason).
  """
  cost_dir = pathlib.Path(tempfile.mkdtemp(prefix=f".{workdir.name}-cost-",
                                           dir=workdir.parent))
  try:
    verdict = measure_cost(path.read_text(), workdir=cost_dir, hidden=profile.hidden,
                           config=CheckConfig.for_profile(profile))
  finally:
    exchange.unlink(cost_dir.parent, cost_dir.name)
  if not verdict.feasible:
    raise BoundaryError(f"the processor's cost could not be measured: {verdict.reason}")
  return verdict.cost_metrics()


def _install_best(workdir: pathlib.Path, selector: scoring.CheckpointSelector,
                  seeds: Sequence[int], counts: scoring.ParamCounts) -> None:
  """Makes each seed's best checkpoint its state (for the predict phase)."""
  for seed in seeds:
    best = selector.best_params(seed)
    keys = {k: v for k, v in _load_state(workdir, seed).items()
            if k.startswith(protocol.KEY_PREFIX)}
    best_counts = scoring.count_params(best, f"best checkpoint of seed {seed}")
    if best_counts != counts:
      raise BoundaryError(f"best checkpoint of seed {seed} has {best_counts.param_count} "
                          f"parameters, the final state {counts.param_count}")
    exchange.save_npz(workdir, protocol.state_file(seed), {**best, **keys})


def _prepare(program_path: str | pathlib.Path, profile: profiles_lib.EvalProfile,
             seeds: Sequence[int], workdir: pathlib.Path, limits: sandbox.Limits | None,
             runner: Runner | None) -> tuple[pathlib.Path, list[int], _Run]:
  path = processors.resolve(program_path)
  seeds = [int(s) for s in seeds]
  workdir = pathlib.Path(workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  run = _Run(workdir, limits or default_limits(profile, len(seeds)), runner or FreshRunner())
  return path, seeds, run


def _final_metrics(report: dict[str, Any]) -> dict[str, Any]:
  """The child's timings as reported metrics (what only the parent uses dropped)."""
  report = dict(report)
  report.pop("nonfinite_outputs", None)
  return report


def evaluate(program_path: str | pathlib.Path, profile: profiles_lib.EvalProfile,
             seeds: Sequence[int], *, workdir: pathlib.Path,
             limits: sandbox.Limits | None = None, runner: Runner | None = None,
             visible_device: str | None = None, score_test: bool = True,
             cost: Mapping[str, Any] | None = None) -> EvalResult:
  """Evaluates a program in a jailed child; scores it here (never loads the program).

  Args:
    program_path: program file or seed name.
    profile: evaluation protocol.
    seeds: training seeds.
    workdir: the child's private directory (cwd, HOME, TMPDIR); ``exchange/`` in it
      holds the files crossing the boundary (:mod:`protocol`).
    limits: sandbox limits of each phase; default :func:`default_limits`.
    runner: what runs each jailed phase: a pre-started ``sandbox.Worker`` or a
      ``runner.FreshRunner`` (the default, with no extra environment).
    visible_device: accelerator id the child may use (e.g. "0").
    score_test: False = do not predict OOD-test (``ood_acc*`` are None); the trained
      parameters stay in ``workdir`` for :func:`evaluate_test`.
    cost: the program's checked cost (``checks.Verdict.cost_metrics()``, keys
      :data:`CHECKED_COST_KEYS`), reported (``macs_source`` "check") once its parameter
      count matches the trained processor's; None = measured here after training, the
      same way (``checks.measure_cost``, one more jailed child).

  Raises:
    processors.ProgramLoadError: ``program_path`` is neither a file nor a seed name.
    KeyError: ``cost`` lacks one of :data:`CHECKED_COST_KEYS`.
  """
  if cost is not None:
    cost = {k: cost[k] for k in CHECKED_COST_KEYS}
  path, seeds, run = _prepare(program_path, profile, seeds, workdir, limits, runner)
  spec, sets = data_lib.cached_eval_sets(profile)
  select = profile.eval_every > 0
  final_sets = [n for n in protocol.EVAL_SET_NAMES if score_test or n != "test"]
  train_sets = [] if select else final_sets
  base = {"program": str(path), "profile": profile.to_dict(), "seeds": seeds,
          "visible_device": visible_device}
  try:
    exchange.reset_dir(run.workdir, protocol.EXCHANGE_DIR)
    manifest = _write_inputs(run.workdir, "inputs_train.npz", spec,
                             {n: sets[n] for n in dict.fromkeys(["val", *train_sets])})
  except BoundaryError as e:
    return _error(str(e))
  payload = {**base, "phase": "train", "inputs": "inputs_train.npz", "manifest": manifest,
             "predict_sets": train_sets, "predictions": "predictions_train.npz",
             "checkpoints": select}
  selector = (scoring.CheckpointSelector(run.workdir, protocol.CKPT_DIR,
                                         scoring.truth(sets["val"]), seeds)
              if select else None)
  try:
    train = _run_phase(run, payload, seeds, sets, selector=selector)
    report, child, wall = train.report, train.child, train.child.wall_seconds
    try:
      counts = _state_counts(run.workdir, seeds)
      if cost is None:
        cost = _measure_cost(path, profile, run.workdir)
      cost_metrics = _checked_cost(cost, counts.processor_param_count)
      if selector is None:
        accuracies = _score_sets(train, sets, final_sets, seeds, "predictions")
      else:
        _install_best(run.workdir, selector, seeds, counts)
        report["best_step_per_seed"] = [selector.best_step(s) for s in seeds]
        manifest = _write_inputs(run.workdir, "inputs_predict.npz", spec,
                                 {n: sets[n] for n in final_sets})
    except BoundaryError as e:
      return _error(str(e), report, child)
    if selector is not None:
      payload = {**base, "phase": "predict", "inputs": "inputs_predict.npz",
                 "manifest": manifest, "predict_sets": final_sets, "dummy_set": "val",
                 "predictions": "predictions_predict.npz"}
      second = _run_phase(run, payload, seeds, sets, wall=wall)
      report = {**child_report.merge(report, second.report),
                "best_step_per_seed": report["best_step_per_seed"]}
      wall += second.child.wall_seconds
      child = second.child
      try:
        accuracies = _score_sets(second, sets, final_sets, seeds, "predictions")
      except BoundaryError as e:
        return _error(str(e), report, child, wall - child.wall_seconds)
  except _Failed as failed:
    return failed.result
  metrics: dict[str, Any] = {"program": str(path), "profile": profile.name,
                             "algorithm": profile.algorithm, "seeds": seeds}
  if not score_test:
    metrics.update(scoring.empty_accuracy_metrics("ood_acc"))
  metrics.update(accuracies)
  report = _final_metrics(report)
  metrics["final_loss_per_seed"] = report.pop("final_loss_per_seed")
  metrics.update(param_count=counts.param_count,
                 processor_param_count=counts.processor_param_count, **cost_metrics)
  metrics.update(report)
  metrics["test_scored"] = score_test
  metrics["profile_config"] = profile.to_dict()
  return EvalResult(status="ok", metrics=metrics, reason="", wall_seconds=wall,
                    peak_rss_mb=child.peak_rss_mb, stderr_tail=child.stderr_tail)


def evaluate_test(program_path: str | pathlib.Path, profile: profiles_lib.EvalProfile,
                  seeds: Sequence[int], *, workdir: pathlib.Path,
                  limits: sandbox.Limits | None = None, runner: Runner | None = None,
                  visible_device: str | None = None) -> EvalResult:
  """Scores OOD-test of an evaluation run earlier with ``score_test=False`` in ``workdir``.

  A jailed predict-only phase loads each seed's saved parameters (the best checkpoint
  with ``eval_every``) and predicts OOD-test; this process scores it. Metrics: the
  ``ood_acc`` fields (``scoring.ACCURACY_SUFFIXES``), the child's timings
  (``eval_seconds_by_set`` has ``test``) and ``test_scored`` True.

  Raises:
    processors.ProgramLoadError: ``program_path`` is neither a file nor a seed name.
  """
  path, seeds, run = _prepare(program_path, profile, seeds, workdir, limits, runner)
  try:
    present = set(exchange.list_names(run.workdir, protocol.STATE_DIR))
  except BoundaryError as e:
    return _error(str(e))
  missing = [s for s in seeds if protocol.state_file_name(s) not in present]
  if missing:
    return _error(f"no saved parameters for seed(s) {missing} in {run.workdir}; run "
                  "evaluate(..., score_test=False) with this workdir first")
  spec, sets = data_lib.cached_eval_sets(profile)
  try:
    exchange.reset_dir(run.workdir, protocol.EXCHANGE_DIR, keep=(protocol.STATE_NAME,))
    manifest = _write_inputs(run.workdir, "inputs_test.npz", spec, {"test": sets["test"]})
  except BoundaryError as e:
    return _error(str(e))
  payload = {"program": str(path), "profile": profile.to_dict(), "seeds": seeds,
             "visible_device": visible_device, "phase": "predict",
             "inputs": "inputs_test.npz", "manifest": manifest, "predict_sets": ["test"],
             "dummy_set": "test", "predictions": "predictions_test.npz"}
  try:
    phase = _run_phase(run, payload, seeds, sets)
  except _Failed as failed:
    return failed.result
  try:
    metrics = _score_sets(phase, sets, ["test"], seeds, "test predictions")
  except BoundaryError as e:
    return _error(str(e), phase.report, phase.child)
  report = _final_metrics(phase.report)
  report.pop("final_loss_per_seed", None)
  metrics.update(report)
  metrics["test_scored"] = True
  return EvalResult(status="ok", metrics=metrics, reason="",
                    wall_seconds=phase.child.wall_seconds,
                    peak_rss_mb=phase.child.peak_rss_mb, stderr_tail=phase.child.stderr_tail)


__all__ = ["CHECKED_COST_KEYS", "EvalResult", "MAX_DEFAULT_MEMORY_MB", "default_limits",
           "evaluate", "evaluate_test"]
