"""Train and score one program with CLRS's own BaselineModel (SPEC §4).

This is trusted code. :func:`evaluate_program` runs inside a sandboxed child (it loads
the candidate program); :func:`child_main` is that child's entry point and
:func:`evaluate` is the parent side, which only ever goes through
``sandbox.run_in_child`` (or a warm ``sandbox.Worker``).

Per training seed the model is trained exactly as CLRS's ``examples/run.py`` trains it
(hints ``encoded_decoded``, ``xavier_on_scalars`` encoders, no LSTM, Adam with global-norm
clipping, soft hint re-prediction), then scored with ``clrs.evaluate`` on the profile's
OOD-val (fitness), OOD-test (reported) and in-distribution val sets. With
``profile.eval_every > 0`` val is scored during training and the best-val parameters are
restored first (CLRS's best checkpoint, kept in memory).

Timings: XLA compilation is measured from JAX's own compile events
(``jax.monitoring``: trace + lowering + backend compile) and reported as
``compile_seconds`` (and per phase); ``init_seconds``, ``train_seconds`` and
``eval_seconds`` are the wall time of those phases minus the compilation inside them.
``train_seconds`` is the whole training loop, drawing its batches included: like
``run.py`` the loop never waits for a step's loss (only every 50th, to log it), so each
batch is sampled while the device runs the previous step; ``data_seconds`` is building
the samplers and evaluation sets. The model object (and so its jit caches) is reused
across seeds: only the first seed pays for compilation.

Each evaluation must see exactly one device: with several, dm-clrs 2.0.3 takes a pmap
path that calls ``jax.device_put_replicated``, which current JAX removed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import clrs
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import psutil
from absl import logging

import processors
from spark_clrs import data as data_lib
from spark_clrs import macs as macs_lib
from spark_clrs import profiles as profiles_lib
from spark_clrs import sandbox

CHILD_TARGET = "spark_clrs.evaluator:child_main"
ACCURACY_KEYS = ("ood_val_acc", "ood_acc", "val_acc")
_SET_FOR_KEY = {"ood_val_acc": "ood_val", "ood_acc": "test", "val_acc": "val"}
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


class _CompileClock:
  """Seconds JAX spent compiling since the process started (from jax.monitoring)."""

  def __init__(self) -> None:
    self.seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event: str, duration: float, **unused: Any) -> None:
    if event in _COMPILE_EVENTS:
      self.seconds += duration


_COMPILE_CLOCK = _CompileClock()


class _Phases:
  """Accumulates wall time per phase, with compilation split off into ``compile``.

  Phases may nest (val scoring inside the training loop): a phase's own time excludes
  the phases run inside it, so nothing is counted twice. ``cpu_seconds`` is the same
  for the process's CPU time (all threads), less the compile time; unlike wall time it
  hardly grows when other processes share the CPUs.
  """

  def __init__(self) -> None:
    self.seconds: dict[str, float] = {}
    self.cpu_seconds: dict[str, float] = {}
    self.compile_by_phase: dict[str, float] = {}
    self._inner: list[list[float]] = []  # [wall, cpu, compile] of phases nested in each.

  def run(self, phase: str, fn: Callable[[], Any]) -> Any:
    start, cpu, compiled = time.perf_counter(), time.process_time(), _COMPILE_CLOCK.seconds
    self._inner.append([0.0, 0.0, 0.0])
    try:
      return fn()
    finally:
      inner_wall, inner_cpu, inner_compile = self._inner.pop()
      wall = time.perf_counter() - start
      cpu_all = time.process_time() - cpu
      compile_all = _COMPILE_CLOCK.seconds - compiled
      compile_s = compile_all - inner_compile
      own = max(0.0, wall - inner_wall - compile_s)
      own_cpu = max(0.0, cpu_all - inner_cpu - compile_s)
      self.seconds[phase] = self.seconds.get(phase, 0.0) + own
      self.cpu_seconds[phase] = self.cpu_seconds.get(phase, 0.0) + own_cpu
      self.seconds["compile"] = self.seconds.get("compile", 0.0) + compile_s
      self.compile_by_phase[phase] = self.compile_by_phase.get(phase, 0.0) + compile_s
      if self._inner:
        self._inner[-1][0] += wall
        self._inner[-1][1] += cpu_all
        self._inner[-1][2] += compile_all


FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
_LOG_EVERY = 50  # Training steps between loss log lines (each one a host sync).
_PROGRESS_EVERY_S = 1.0  # Seconds between progress records of the training loop.


def configure_jax(visible_device: str | None = None, fast_compile: bool = False) -> bool:
  """Makes JAX see exactly one device; optionally asks XLA for fast compilation.

  Call before any JAX computation. Keeps the first entry of ``CUDA_VISIBLE_DEVICES`` (or
  ``visible_device``), limits the CPU client to one device and, with ``fast_compile``,
  adds :data:`FAST_COMPILE_FLAG` to ``XLA_FLAGS``.

  Returns:
    Whether ``fast_compile`` took effect (False when JAX's backend already ran here).

  Raises:
    RuntimeError: JAX was already initialised with several devices in this process.
  """
  cuda = visible_device or os.environ.get("CUDA_VISIBLE_DEVICES")
  if cuda:
    os.environ["CUDA_VISIBLE_DEVICES"] = cuda.split(",")[0].strip()
  try:
    jax.config.update("jax_num_cpu_devices", 1)
    fresh = True
  except RuntimeError:  # The backend already started; the device count is checked below.
    fresh = False
  if fresh and fast_compile:
    flags = os.environ.get("XLA_FLAGS", "")
    if FAST_COMPILE_FLAG not in flags:
      os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE_FLAG}".strip()
  count = jax.local_device_count()
  if count != 1:
    raise RuntimeError(f"this process sees {count} JAX devices but an evaluation needs "
                       "exactly one (dm-clrs 2.0.3's multi-device path calls the removed "
                       "jax.device_put_replicated); run it through spark_clrs.evaluator."
                       "evaluate or set CUDA_VISIBLE_DEVICES to a single device")
  return fresh and fast_compile


def _concat(trees: list[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *x: np.concatenate(x, axis=0), *trees)


def score(model: clrs.models.BaselineModel, eval_set: data_lib.EvalSet,
          key: jax.Array) -> float:
  """``clrs.evaluate`` score of the model's predictions on a whole evaluation set."""
  outputs, preds = [], []
  for batch in eval_set.batches:
    key, sub = jax.random.split(key)
    pred, _ = model.predict(sub, batch.features)
    preds.append(jax.device_get(pred))
    outputs.append(batch.outputs)
  return float(clrs.evaluate(_concat(outputs), _concat(preds))["score"])


def build_model(profile: profiles_lib.EvalProfile, factory: macs_lib.ProcessorFactory,
                spec: clrs.Spec, dummy: clrs.Feedback, checkpoint_path: str
                ) -> clrs.models.BaselineModel:
  """The BaselineModel CLRS's run.py builds, with the given processor factory."""
  encode_hints = profile.hint_mode == "encoded_decoded"
  decode_hints = profile.hint_mode in ("encoded_decoded", "decoded_only")
  return clrs.models.BaselineModel(
      spec=spec, dummy_trajectory=dummy, processor_factory=factory,
      hidden_dim=profile.hidden, encode_hints=encode_hints, decode_hints=decode_hints,
      encoder_init="xavier_on_scalars", use_lstm=False,
      learning_rate=profile.learning_rate, grad_clip_max_norm=profile.grad_clip,
      checkpoint_path=checkpoint_path, freeze_processor=False, dropout_prob=0.0,
      hint_teacher_forcing=0.0, hint_repred_mode="soft", nb_msg_passing_steps=1)


def make_initializer(model: clrs.models.BaselineModel
                     ) -> Callable[[clrs.Features, int], None]:
  """``model.init`` as one jitted function (network init + optimiser state).

  Same parameters as ``BaselineModel.init``; one compilation instead of hundreds of
  eagerly dispatched ops (20 s -> 8 s for triplet_gmpnn on 2 CPU cores).
  """
  def init(key: jax.Array, features: clrs.Features) -> tuple[hk.Params, Any]:
    params = model.net_fn.init(key, [features], True, algorithm_index=-1,
                               return_hints=False, return_all_outputs=False)
    return params, model.opt.init(params)

  jitted = jax.jit(init)
  skeleton = jax.jit(model.opt.init)(jnp.zeros(1))

  def initialize(features: clrs.Features, seed: int) -> None:
    params, opt_state = jitted(jax.random.PRNGKey(seed), features)
    model.params, model.opt_state = params, opt_state
    model.opt_state_skeleton = skeleton
    jax.block_until_ready(model._device_params)  # pylint: disable=protected-access

  return initialize


def processor_params(params: hk.Params) -> hk.Params:
  """The parameters CLRS treats as the processor's (module path has 'clrs_processor')."""
  tag = clrs.processors.PROCESSOR_TAG
  return hk.data_structures.filter(lambda module, name, value: tag in module, params)


def _finite_or_none(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


def _train_one_seed(model: clrs.models.BaselineModel,
                    initialize: Callable[[int], None],
                    profile: profiles_lib.EvalProfile, seed: int,
                    eval_sets: dict[str, data_lib.EvalSet], phases: _Phases
                    ) -> dict[str, Any]:
  """Trains from scratch with training seed ``seed``; returns its scores and loss.

  Seeding follows run.py: ``RandomState(seed)`` draws the step PRNG key and the data
  seeds; the model is initialised with ``seed + 1``.
  """
  rng = np.random.RandomState(seed)
  key = jax.random.PRNGKey(rng.randint(2**32))
  _, stream = phases.run("data", lambda: data_lib.make_train_stream(
      profile.algorithm, profile.train_lengths, profile.batch_size, rng.randint(2**32)))
  phases.run("init", lambda: initialize(seed + 1))
  best_val, best_params = -math.inf, None
  loss: Any = math.nan

  def train() -> None:
    # As run.py: no host sync per step, so each batch is drawn while the device runs the
    # previous step; the loss is read only when it is logged.
    nonlocal key, loss, best_val, best_params
    reported = -math.inf
    for step in range(profile.train_steps):
      batch = next(stream)
      key, step_key = jax.random.split(key)
      loss = model.feedback(step_key, batch)
      if profile.eval_every and step % profile.eval_every == 0:
        key, eval_key = jax.random.split(key)
        val = phases.run("eval:val", lambda k=eval_key: score(model, eval_sets["val"], k))
        logging.info("seed %d step %d loss %.4f val %.4f", seed, step, float(loss), val)
        if val > best_val or best_params is None:
          best_val, best_params = val, model.params
      elif step % _LOG_EVERY == 0:
        logging.info("seed %d step %d loss %.4f", seed, step, float(loss))
      now = time.monotonic()
      if now - reported >= _PROGRESS_EVERY_S:
        sandbox.report_progress(stage="train", seed=seed, step=step)
        reported = now
    jax.block_until_ready(loss)

  phases.run("train", train)
  loss = float(loss)
  if best_params is not None:
    model.params = best_params
  sandbox.report_progress(stage="eval", seed=seed)
  result: dict[str, Any] = {"final_loss": _finite_or_none(loss)}
  for metric, set_name in _SET_FOR_KEY.items():
    key, eval_key = jax.random.split(key)
    result[metric] = phases.run(
        f"eval:{set_name}", lambda s=set_name, k=eval_key: score(model, eval_sets[s], k))
  logging.info("seed %d: %s", seed, result)
  return result


def evaluate_program(program_path: str, profile: profiles_lib.EvalProfile,
                     seeds: Sequence[int], *, visible_device: str | None = None
                     ) -> dict[str, Any]:
  """Trains ``program_path``'s processor under ``profile`` once per seed and scores it.

  Args:
    program_path: a program file or a seed name (see ``processors.load``).
    profile: the evaluation protocol.
    seeds: training seeds (>= 1); accuracies are reported as mean, std and per seed.
    visible_device: optional accelerator id to restrict the process to.

  Returns:
    JSON-able metrics: ``ood_val_acc`` (fitness), ``ood_acc`` (test), ``val_acc``, each
    with ``_std`` and ``_per_seed``; ``param_count`` (whole model),
    ``processor_param_count``, ``macs`` at ``macs_nb_nodes``; ``compile_seconds``,
    ``init_seconds``, ``train_seconds``, ``step_seconds``, ``eval_seconds`` (and
    ``eval_seconds_by_set``), ``data_seconds``, ``load_seconds``, ``total_seconds``;
    ``cpu_seconds`` (user + system of this process so far: robust to other load) and
    ``train_cpu_seconds`` (of the training loop, compilation excluded);
    ``peak_rss_mb``, ``peak_device_mb`` (accelerators only, else None),
    ``compile_seconds_by_phase``; the resolved profile, seeds, final losses, device and
    whether ``fast_compile`` took effect.

  Raises:
    processors.ProgramLoadError: the program does not load or has no factory.
    ValueError: bad seeds, or a processor whose parameters CLRS would not train.
  """
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError("no training seeds given; pass at least one, e.g. seeds=[0]")
  start = time.perf_counter()
  fast_compile = configure_jax(visible_device, profile.fast_compile)
  phases = _Phases()
  sandbox.report_progress(stage="load")
  factory = phases.run("load", lambda: processors.load(
      program_path, use_ln=profile.use_ln, nb_triplet_fts=profile.nb_triplet_fts))
  cost = phases.run("load", lambda: macs_lib.processor_cost(
      factory, hidden=profile.hidden, nb_nodes=profile.macs_nb_nodes))
  sandbox.report_progress(stage="data")
  spec, eval_sets = phases.run("data", lambda: data_lib.build_eval_sets(profile))
  # Like run.py, the val data sizes the model. Initialising always from this one batch
  # compiles the init once; parameter values depend on the seed and shapes only.
  dummy = eval_sets["val"].batches[0]
  model = build_model(profile, factory, spec, dummy, checkpoint_path=os.getcwd())
  init_model = make_initializer(model)
  sandbox.report_progress(stage="init")
  phases.run("init", lambda: init_model(dummy.features, seeds[0] + 1))
  params = model.params
  proc_count = macs_lib.param_count(processor_params(params))
  if cost.param_count and not proc_count:
    raise ValueError("the processor's parameters are not under a module whose name "
                     "contains 'clrs_processor', so CLRS would not train them; name the "
                     "processor module '<something>_clrs_processor'")

  per_seed = [
      _train_one_seed(model, lambda s: init_model(dummy.features, s), profile, seed,
                      eval_sets, phases)
      for seed in seeds]

  metrics: dict[str, Any] = {"program": str(program_path), "profile": profile.name,
                             "algorithm": profile.algorithm, "seeds": seeds}
  for key in ACCURACY_KEYS:
    values = [r[key] for r in per_seed]
    metrics[key] = float(np.mean(values))
    metrics[f"{key}_std"] = float(np.std(values))
    metrics[f"{key}_per_seed"] = values
  metrics["final_loss_per_seed"] = [r["final_loss"] for r in per_seed]
  metrics.update(
      param_count=macs_lib.param_count(params),
      processor_param_count=proc_count,
      macs=cost.macs,
      macs_nb_nodes=cost.nb_nodes,
  )
  seconds = phases.seconds
  steps = profile.train_steps * len(seeds)
  by_set = {name: round(seconds.get(f"eval:{name}", 0.0), 3)
            for name in data_lib.EVAL_SET_NAMES}
  seconds["eval"] = sum(by_set.values())
  for phase in ("compile", "init", "train", "eval", "data", "load"):
    metrics[f"{phase}_seconds"] = round(seconds.get(phase, 0.0), 3)
  metrics["eval_seconds_by_set"] = by_set
  metrics["step_seconds"] = round(seconds.get("train", 0.0) / steps, 5)
  metrics["train_cpu_seconds"] = round(phases.cpu_seconds.get("train", 0.0), 3)
  metrics["total_seconds"] = round(time.perf_counter() - start, 3)
  usage = resource.getrusage(resource.RUSAGE_SELF)
  metrics["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
  metrics["peak_rss_mb"] = round(usage.ru_maxrss / 1024.0, 1)
  metrics["compile_seconds_by_phase"] = {
      phase: round(value, 3) for phase, value in phases.compile_by_phase.items() if value}
  stats = jax.devices()[0].memory_stats() or {}  # None on CPU.
  metrics["peak_device_mb"] = (round(stats["peak_bytes_in_use"] / 2**20, 1)
                               if "peak_bytes_in_use" in stats else None)
  metrics["device"] = jax.devices()[0].platform
  metrics["fast_compile"] = fast_compile
  metrics["profile_config"] = profile.to_dict()
  return metrics


def child_main(payload: dict[str, Any]) -> dict[str, Any]:
  """Sandbox target: ``{"program", "profile" (EvalProfile fields), "seeds",
  "visible_device"?}`` -> metrics of :func:`evaluate_program` plus ``startup_seconds``
  (process start to here: interpreter, imports)."""
  startup = time.time() - psutil.Process().create_time()
  profile = profiles_lib.EvalProfile(**payload["profile"])
  metrics = evaluate_program(payload["program"], profile, payload["seeds"],
                             visible_device=payload.get("visible_device"))
  metrics["startup_seconds"] = round(startup, 3)
  return metrics


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Outcome of a sandboxed evaluation.

  Attributes:
    status: the sandbox status (``ok``, ``error``, ``timeout``, ``crashed``, ``memory``,
      ``output_limit``).
    metrics: :func:`evaluate_program`'s metrics when ok, else None.
    reason: one line saying what went wrong (empty when ok).
    wall_seconds: wall time of the child, process start to exit.
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


def default_limits(profile: profiles_lib.EvalProfile, num_seeds: int = 1) -> sandbox.Limits:
  """Generous limits for one evaluation: 10 min + 10 s per training step per seed, and
  at most 16 GiB (or 80 % of this machine's memory)."""
  memory_mb = int(min(16384, 0.8 * psutil.virtual_memory().total / 2**20))
  return sandbox.Limits(timeout_s=num_seeds * (600.0 + 10.0 * profile.train_steps),
                        memory_mb=memory_mb)


def evaluate(program_path: str | pathlib.Path, profile: profiles_lib.EvalProfile,
             seeds: Sequence[int], *, workdir: pathlib.Path,
             limits: sandbox.Limits | None = None, worker: sandbox.Worker | None = None,
             visible_device: str | None = None,
             extra_env: Mapping[str, str] | None = None) -> EvalResult:
  """Evaluates a program in a sandboxed child (parent side; never loads the program).

  Args:
    program_path: program file or seed name.
    profile: evaluation protocol.
    seeds: training seeds.
    workdir: the child's private directory (cwd, HOME, TMPDIR).
    limits: sandbox limits; default :func:`default_limits`.
    worker: a warm ``sandbox.Worker`` to fork from instead of starting a fresh Python.
    visible_device: accelerator id the child may use (e.g. "0").
    extra_env: non-secret environment of a fresh child (e.g. ``JAX_COMPILATION_CACHE_DIR``);
      a warm ``worker`` has its own, given when it was made.

  Raises:
    processors.ProgramLoadError: ``program_path`` is neither a file nor a seed name.
  """
  path = processors.resolve(program_path)
  payload = {"program": str(path), "profile": profile.to_dict(),
             "seeds": [int(s) for s in seeds], "visible_device": visible_device}
  limits = limits or default_limits(profile, len(payload["seeds"]))
  if worker is not None:
    result = worker.run(CHILD_TARGET, payload, workdir=workdir, limits=limits)
  else:
    result = sandbox.run_in_child(CHILD_TARGET, payload, workdir=workdir, limits=limits,
                                  extra_env=extra_env)
  return EvalResult(status=result.status, metrics=result.value, reason=result.reason,
                    wall_seconds=result.wall_seconds, peak_rss_mb=result.peak_rss_mb,
                    stderr_tail=result.stderr_tail)


__all__ = ["ACCURACY_KEYS", "CHILD_TARGET", "EvalResult", "build_model", "child_main",
           "default_limits", "evaluate", "evaluate_program", "make_initializer",
           "processor_params", "score", "configure_jax"]
