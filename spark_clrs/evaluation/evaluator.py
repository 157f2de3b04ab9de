"""Train and score one program with CLRS's own BaselineModel (SPEC §4, §9).

Two sides. The jailed child (:func:`child_main`, run through ``sandbox.run_in_child`` or
a warm ``sandbox.Worker``) loads the candidate program, trains it and writes
predictions; the trusted parent (:func:`evaluate`, :func:`evaluate_test`), which never
loads the candidate, samples the evaluation sets, gives the child only what CLRS's
prediction reads (``data.export_features``: inputs, lengths, the first hint step) and
computes every accuracy from the returned ``.npz`` files with CLRS's own scoring
(``spark_clrs.evaluation.scoring``). The child never holds the outputs of OOD-val, OOD-test or val.

Per training seed the model is trained exactly as CLRS's ``examples/run.py`` trains it
(hints ``encoded_decoded``, ``xavier_on_scalars`` encoders, no LSTM, Adam with global-norm
clipping, soft hint re-prediction), then scored with ``clrs.evaluate`` on the profile's
OOD-val (fitness), OOD-test (reported) and in-distribution val sets, each with a 95 %
bootstrap interval over graphs (``*_ci``). With ``profile.eval_every > 0`` the child
writes val predictions and a parameter checkpoint at every evaluation step; the parent
scores them while the child runs (``scoring.CheckpointSelector``), keeps each seed's best
(CLRS's best checkpoint) and a second jailed phase predicts the final sets from it.
With ``score_test=False`` OOD-test is not predicted; the trained parameters stay in the
workdir and :func:`evaluate_test` scores OOD-test later from them (predict only).

Files in the workdir (``exchange/``): ``inputs_<phase>.npz`` (written by the parent),
``predictions_<phase>.npz``, ``state/seed<S>.npz`` (parameters and evaluation PRNG keys
per seed), ``ckpt/`` and ``processor.export`` + ``processor_params.npz`` (the exported
processor step, from which the parent counts MACs with ``macs.cost_from_export``).

:func:`evaluate_program` is the in-process path for trusted programs (``--in_process``):
the same training and prediction code, scored in memory on the full sets.

Timings: XLA compilation is measured from JAX's own compile events
(``jax.monitoring``: trace + lowering + backend compile) and reported as
``compile_seconds`` (and per phase); ``init_seconds``, ``train_seconds`` and
``eval_seconds`` are the wall time of those phases minus the compilation inside them.
``train_seconds`` is the whole training loop, drawing its batches included: like
``run.py`` the loop never waits for a step's loss (only every 50th, to log it), so each
batch is sampled while the device runs the previous step; ``data_seconds`` is building
the samplers (and, in process, the evaluation sets). The model object (and so its jit
caches) is reused across seeds: only the first seed pays for compilation. Timings come
from the child and are informational; accuracies, parameter counts and MACs are computed
by the parent.

Each evaluation must see exactly one device: with several, dm-clrs 2.0.3 takes a pmap
path that calls ``jax.device_put_replicated``, which current JAX removed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import resource
import shutil
import threading
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
from clrs._src import decoders

import processors
from spark_clrs.evaluation import data as data_lib
from spark_clrs.evaluation import macs as macs_lib
from spark_clrs.evaluation import profiles as profiles_lib
from spark_clrs.evaluation import scoring
from spark_clrs.isolation import sandbox

CHILD_TARGET = "spark_clrs.evaluation.evaluator:child_main"
ACCURACY_KEYS = ("ood_val_acc", "ood_acc", "val_acc")
_SET_FOR_KEY = {"ood_val_acc": "ood_val", "ood_acc": "test", "val_acc": "val"}
_KEY_FOR_SET = {v: k for k, v in _SET_FOR_KEY.items()}
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
    self.start = time.perf_counter()
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
                       "jax.device_put_replicated); run it through spark_clrs.evaluation.evaluator."
                       "evaluate or set CUDA_VISIBLE_DEVICES to a single device")
  return fresh and fast_compile


def _concat(trees: list[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *x: np.concatenate(x, axis=0), *trees)


def score(model: clrs.models.BaselineModel, eval_set: data_lib.EvalSet,
          key: jax.Array) -> float:
  """``clrs.evaluate`` of ``model.predict`` on a whole evaluation set, in this process.

  The reference the trusted path is tested against (same keys, same numbers); the
  evaluation itself uses :class:`_Trainer`'s predictor and ``spark_clrs.evaluation.scoring``.
  """
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


def make_predictor(model: clrs.models.BaselineModel, spec: clrs.Spec
                   ) -> Callable[[Any, jax.Array, clrs.Features], tuple[Any, jax.Array]]:
  """``BaselineModel.predict``'s computation, also saying whether the raw outputs are finite.

  The same ops as CLRS's ``_predict`` (``net_fn.apply`` with ``repred=True``, then hard
  ``postprocess`` with 50 Sinkhorn steps), plus one flag: hard postprocessing turns NaN
  logits into finite-looking pointers and masks, so finiteness is checked before it.
  The predictions are bit-identical to ``model.predict``'s (tested).
  """
  def predict(params: Any, key: jax.Array, features: clrs.Features) -> tuple[Any, jax.Array]:
    outs, _ = model.net_fn.apply(params, key, [features], repred=True, algorithm_index=0,
                                 return_hints=False, return_all_outputs=False)
    leaves = jax.tree_util.tree_leaves(outs)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
    post = decoders.postprocess(spec, outs, sinkhorn_temperature=0.1, sinkhorn_steps=50,
                                hard=True)
    return post, finite

  return jax.jit(predict)


def processor_params(params: hk.Params) -> hk.Params:
  """The parameters CLRS treats as the processor's (module path has 'clrs_processor')."""
  tag = clrs.processors.PROCESSOR_TAG
  return hk.data_structures.filter(lambda module, name, value: tag in module, params)


def _finite_or_none(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


class _Trainer:
  """One loaded program: its BaselineModel, initialiser and predictor (child side).

  ``dummy`` sizes the model (like run.py, a val batch; here its outputs may be zero
  placeholders). With ``initialize`` the model is initialised once from
  ``first_seed + 1`` (one init compile; parameter values depend on the seed and shapes
  only) and the processor's parameters are checked to be where CLRS trains them.
  """

  def __init__(self, program_path: str, profile: profiles_lib.EvalProfile,
               spec: clrs.Spec, dummy: clrs.Feedback, phases: _Phases, *,
               first_seed: int | None, count_cost: bool = True):
    self.profile = profile
    self.phases = phases
    self.dummy = dummy
    sandbox.report_progress(stage="load")
    self.factory = phases.run("load", lambda: processors.load(
        program_path, use_ln=profile.use_ln, nb_triplet_fts=profile.nb_triplet_fts))
    self.cost = None
    if count_cost:
      self.cost = phases.run("load", lambda: macs_lib.processor_cost(
          self.factory, hidden=profile.hidden, nb_nodes=profile.macs_nb_nodes))
    self.model = build_model(profile, self.factory, spec, dummy, checkpoint_path=os.getcwd())
    self._init = make_initializer(self.model)
    self._predict = make_predictor(self.model, spec)
    if first_seed is not None:
      sandbox.report_progress(stage="init")
      phases.run("init", lambda: self._init(dummy.features, first_seed + 1))
      proc_count = macs_lib.param_count(processor_params(self.model.params))
      if self.cost is not None and self.cost.param_count and not proc_count:
        raise ValueError("the processor's parameters are not under a module whose name "
                         "contains 'clrs_processor', so CLRS would not train them; name "
                         "the processor module '<something>_clrs_processor'")

  def train(self, seed: int, on_eval: Callable[[int, jax.Array], None] | None = None
            ) -> tuple[float, dict[str, jax.Array]]:
    """Trains from scratch with training seed ``seed``.

    Seeding follows run.py: ``RandomState(seed)`` draws the step PRNG key and the data
    seeds; the model is initialised with ``seed + 1``. With ``profile.eval_every`` it
    calls ``on_eval(step, key)`` every ``eval_every`` steps (the model holds that
    step's parameters).

    Returns:
      The last step's loss and the PRNG key of each evaluation set's prediction.
    """
    profile, phases, model = self.profile, self.phases, self.model
    rng = np.random.RandomState(seed)
    key = jax.random.PRNGKey(rng.randint(2**32))
    _, stream = phases.run("data", lambda: data_lib.make_train_stream(
        profile.algorithm, profile.train_lengths, profile.batch_size, rng.randint(2**32)))
    phases.run("init", lambda: self._init(self.dummy.features, seed + 1))
    loss: Any = math.nan

    def train() -> None:
      # As run.py: no host sync per step, so each batch is drawn while the device runs
      # the previous step; the loss is read only when it is logged.
      nonlocal key, loss
      reported = -math.inf
      for step in range(profile.train_steps):
        batch = next(stream)
        key, step_key = jax.random.split(key)
        loss = model.feedback(step_key, batch)
        if profile.eval_every and step % profile.eval_every == 0:
          key, eval_key = jax.random.split(key)
          if on_eval is not None:
            on_eval(step, eval_key)
          logging.info("seed %d step %d loss %.4f", seed, step, float(loss))
        elif step % _LOG_EVERY == 0:
          logging.info("seed %d step %d loss %.4f", seed, step, float(loss))
        now = time.monotonic()
        if now - reported >= _PROGRESS_EVERY_S:
          sandbox.report_progress(stage="train", seed=seed, step=step)
          reported = now
      jax.block_until_ready(loss)

    phases.run("train", train)
    keys = {}
    for set_name in _SET_FOR_KEY.values():  # ood_val, test, val: the old scoring order.
      key, keys[set_name] = jax.random.split(key)
    return float(loss), keys

  def predict(self, batches: Sequence[clrs.Features], key: jax.Array, set_name: str
              ) -> tuple[dict[str, np.ndarray], bool]:
    """Hard predictions of every output over ``batches`` (concatenated), and whether the
    raw outputs were all finite. Keys are split per batch as CLRS's evaluation does."""
    def run() -> tuple[dict[str, np.ndarray], bool]:
      nonlocal key
      parts, finite = [], True
      params = self.model._device_params  # pylint: disable=protected-access
      for features in batches:
        key, sub = jax.random.split(key)
        pred, ok = self._predict(params, sub, features)
        pred, ok = jax.device_get((pred, ok))
        parts.append({name: np.asarray(dp.data) for name, dp in pred.items()})
        finite = finite and bool(ok)
      return {name: np.concatenate([p[name] for p in parts], axis=0)
              for name in parts[0]}, finite
    return self.phases.run(f"eval:{set_name}", run)


def _as_datapoints(preds: Mapping[str, np.ndarray], outputs: Sequence[clrs.DataPoint]
                   ) -> dict[str, clrs.DataPoint]:
  return {dp.name: clrs.DataPoint(dp.name, dp.location, dp.type_, preds[dp.name])
          for dp in outputs}


def _timing_metrics(phases: _Phases, steps: int, start: float) -> dict[str, Any]:
  """Timings of this process (the child's, or the in-process evaluation's)."""
  seconds = phases.seconds
  by_set = {name: round(seconds[f"eval:{name}"], 3) for name in data_lib.EVAL_SET_NAMES
            if f"eval:{name}" in seconds}
  metrics: dict[str, Any] = {}
  seconds["eval"] = sum(by_set.values())
  for phase in ("compile", "init", "train", "eval", "data", "load", "checkpoint"):
    metrics[f"{phase}_seconds"] = round(seconds.get(phase, 0.0), 3)
  metrics["eval_seconds_by_set"] = by_set
  metrics["step_seconds"] = round(seconds.get("train", 0.0) / steps, 5) if steps else 0.0
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
  return metrics


# ------------------------------------------------------------------ in process (trusted)


def evaluate_program(program_path: str, profile: profiles_lib.EvalProfile,
                     seeds: Sequence[int], *, visible_device: str | None = None
                     ) -> dict[str, Any]:
  """Trains ``program_path``'s processor under ``profile`` once per seed and scores it,
  all in this process (trusted programs only: nothing is jailed).

  Args:
    program_path: a program file or a seed name (see ``processors.load``).
    profile: the evaluation protocol.
    seeds: training seeds (>= 1); accuracies are reported as mean, std and per seed.
    visible_device: optional accelerator id to restrict the process to.

  Returns:
    JSON-able metrics: ``ood_val_acc`` (fitness), ``ood_acc`` (test), ``val_acc``, each
    with ``_std``, ``_per_seed``, ``_ci`` (95 % bootstrap half-width over graphs, of
    the mean) and ``_ci_per_seed``; ``param_count`` (whole model),
    ``processor_param_count``, ``macs`` at ``macs_nb_nodes`` and ``macs_source``;
    ``compile_seconds``, ``init_seconds``, ``train_seconds``, ``step_seconds``,
    ``eval_seconds`` (and ``eval_seconds_by_set``), ``data_seconds``, ``load_seconds``,
    ``total_seconds``; ``cpu_seconds`` (user + system of this process so far: robust to
    other load) and ``train_cpu_seconds`` (of the training loop, compilation excluded);
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
  sandbox.report_progress(stage="data")
  spec, eval_sets = phases.run("data", lambda: data_lib.build_eval_sets(profile))
  dummy = eval_sets["val"].batches[0]
  trainer = _Trainer(str(program_path), profile, spec, dummy, phases, first_seed=seeds[0])
  truths = {name: scoring.truth(s) for name, s in eval_sets.items()}
  features = {name: [b.features for b in s.batches] for name, s in eval_sets.items()}
  preds: dict[str, list[dict[str, clrs.DataPoint]]] = {name: [] for name in eval_sets}
  losses = []
  for seed in seeds:
    best: dict[str, Any] = {"val": -math.inf, "params": None}

    def on_eval(step: int, key: jax.Array, seed: int = seed, best: dict = best) -> None:
      values, _ = trainer.predict(features["val"], key, "val")
      val = scoring.score(truths["val"], _as_datapoints(values, truths["val"]))
      logging.info("seed %d step %d val %.4f", seed, step, val)
      if val > best["val"] or best["params"] is None:
        best["val"], best["params"] = val, trainer.model.params

    loss, keys = trainer.train(seed, on_eval)
    losses.append(_finite_or_none(loss))
    if best["params"] is not None:
      trainer.model.params = best["params"]
    sandbox.report_progress(stage="eval", seed=seed)
    for name in _SET_FOR_KEY.values():
      values, _ = trainer.predict(features[name], keys[name], name)
      preds[name].append(_as_datapoints(values, truths[name]))
  metrics: dict[str, Any] = {"program": str(program_path), "profile": profile.name,
                             "algorithm": profile.algorithm, "seeds": seeds}
  for key, name in _SET_FOR_KEY.items():
    metrics.update(scoring.accuracy_metrics(key, truths[name], preds[name]))
  metrics["final_loss_per_seed"] = losses
  params = trainer.model.params
  assert trainer.cost is not None
  metrics.update(param_count=macs_lib.param_count(params),
                 processor_param_count=macs_lib.param_count(processor_params(params)),
                 macs=trainer.cost.macs, macs_nb_nodes=trainer.cost.nb_nodes,
                 macs_source="in_process_jaxpr")
  metrics.update(_timing_metrics(phases, profile.train_steps * len(seeds), start))
  metrics["fast_compile"] = fast_compile
  metrics["profile_config"] = profile.to_dict()
  return metrics


# ---------------------------------------------------------------------- the jailed child


def _child_inputs(payload: dict[str, Any]) -> tuple[pathlib.Path, list[int], dict[str, Any],
                                                    Any, dict[str, Any]]:
  """The exchange dir, seeds, manifest, spec and evaluation inputs a child phase reads."""
  exchange = pathlib.Path.cwd() / payload["exchange"]
  manifest = payload["manifest"]
  with np.load(exchange / payload["inputs"], allow_pickle=False) as npz:
    arrays = {k: npz[k] for k in npz.files}
  spec, sets = data_lib.import_features(arrays, manifest)
  return exchange, [int(s) for s in payload["seeds"]], manifest, spec, sets


def _child_train(payload: dict[str, Any], profile: profiles_lib.EvalProfile,
                 phases: _Phases) -> dict[str, Any]:
  """Phase ``train``: trains per seed, writes state, checkpoints and predictions."""
  exchange, seeds, manifest, spec, sets = _child_inputs(payload)
  dummy = data_lib.placeholder_feedback(sets["val"][0], manifest["sets"]["val"])
  trainer = _Trainer(payload["program"], profile, spec, dummy, phases, first_seed=seeds[0],
                     count_cost=not payload.get("export"))
  out: dict[str, Any] = {}
  if payload.get("export"):
    flat, blob = phases.run("load", lambda: macs_lib.export_processor(
        trainer.factory, hidden=profile.hidden, nb_nodes=profile.macs_nb_nodes))
    scoring.save_npz(exchange / "processor_params.npz", flat)
    (exchange / "processor.export").write_bytes(blob)
  else:
    assert trainer.cost is not None
    out.update(jail_macs=trainer.cost.macs, macs_nb_nodes=trainer.cost.nb_nodes)
  predictions: dict[str, np.ndarray] = {}
  losses, nonfinite = [], []
  for seed in seeds:
    def on_eval(step: int, key: jax.Array, seed: int = seed) -> None:
      values, finite = trainer.predict(sets["val"], key, "val")
      params_name, val_name = scoring.checkpoint_names(seed, step)

      def write() -> None:
        ckpt = exchange / "ckpt"
        scoring.save_npz(ckpt / params_name, scoring.flatten_params(trainer.model.params))
        scoring.save_npz(ckpt / val_name, {
            **{scoring.prediction_key("val", seed, k): v for k, v in values.items()},
            "finite": np.asarray(finite)})
      phases.run("checkpoint", write)

    loss, keys = trainer.train(seed, on_eval if payload.get("checkpoints") else None)
    losses.append(_finite_or_none(loss))
    state = scoring.flatten_params(trainer.model.params)
    state.update({f"{scoring.KEY_PREFIX}{name}": np.asarray(k) for name, k in keys.items()})
    phases.run("checkpoint", lambda s=state, seed=seed: scoring.save_npz(
        exchange / "state" / f"seed{seed}.npz", s))
    sandbox.report_progress(stage="eval", seed=seed)
    for name in payload["predict_sets"]:
      values, finite = trainer.predict(sets[name], keys[name], name)
      if not finite:
        nonfinite.append(f"{name}|{seed}")
      predictions.update({scoring.prediction_key(name, seed, k): v for k, v in values.items()})
  scoring.save_npz(exchange / payload["predictions"], predictions)
  out.update(final_loss_per_seed=losses, nonfinite_outputs=nonfinite)
  out.update(_timing_metrics(phases, profile.train_steps * len(seeds), phases.start))
  return out


def _child_predict(payload: dict[str, Any], profile: profiles_lib.EvalProfile,
                   phases: _Phases) -> dict[str, Any]:
  """Phase ``predict``: predicts the payload's sets from each seed's saved state."""
  exchange, seeds, manifest, spec, sets = _child_inputs(payload)
  dummy = data_lib.placeholder_feedback(sets[payload["dummy_set"]][0],
                                        manifest["sets"][payload["dummy_set"]])
  trainer = _Trainer(payload["program"], profile, spec, dummy, phases, first_seed=None,
                     count_cost=False)
  predictions: dict[str, np.ndarray] = {}
  nonfinite = []
  for seed in seeds:
    with np.load(exchange / "state" / f"seed{seed}.npz", allow_pickle=False) as npz:
      state = {k: npz[k] for k in npz.files}
    trainer.model.params = scoring.unflatten_params(state)
    sandbox.report_progress(stage="eval", seed=seed)
    for name in payload["predict_sets"]:
      key = jnp.asarray(state[f"{scoring.KEY_PREFIX}{name}"])
      values, finite = trainer.predict(sets[name], key, name)
      if not finite:
        nonfinite.append(f"{name}|{seed}")
      predictions.update({scoring.prediction_key(name, seed, k): v for k, v in values.items()})
  scoring.save_npz(exchange / payload["predictions"], predictions)
  out: dict[str, Any] = {"nonfinite_outputs": nonfinite}
  out.update(_timing_metrics(phases, 0, phases.start))
  return out


def child_main(payload: dict[str, Any]) -> dict[str, Any]:
  """Sandbox target (runs candidate code, never sees any output/label).

  Payload: ``{"phase": "train" | "predict", "program", "profile" (EvalProfile fields),
  "seeds", "visible_device"?, "exchange" (directory relative to the cwd), "inputs"
  (``.npz`` name there), "manifest" (of ``data.export_features``), "predict_sets",
  "predictions" (``.npz`` name to write), "checkpoints"?, "export"?, "dummy_set"?}``.
  Returns timings and what only the child can see (losses, non-finite raw outputs), plus
  ``startup_seconds`` (process start to here: interpreter, imports); the parent trusts
  none of it for scoring.
  """
  startup = time.time() - psutil.Process().create_time()
  profile = profiles_lib.EvalProfile(**payload["profile"])
  seeds = [int(s) for s in payload["seeds"]]
  if not seeds:
    raise ValueError("no training seeds given; pass at least one, e.g. seeds=[0]")
  fast_compile = configure_jax(payload.get("visible_device"), profile.fast_compile)
  phases = _Phases()
  if payload.get("phase", "train") == "train":
    out = _child_train(payload, profile, phases)
  else:
    out = _child_predict(payload, profile, phases)
  out["fast_compile"] = fast_compile
  out["startup_seconds"] = round(startup, 3)
  return out


# ------------------------------------------------------------------------ trusted parent


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Outcome of a sandboxed evaluation.

  Attributes:
    status: the sandbox status (``ok``, ``error``, ``timeout``, ``crashed``, ``memory``,
      ``output_limit``); ``error`` also when the returned files are missing, malformed
      or non-finite (the reason says which).
    metrics: the metrics (see :func:`evaluate_program`) when ok; on a failure after the
      child finished, its timings only (never an accuracy); else None.
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


def default_limits(profile: profiles_lib.EvalProfile, num_seeds: int = 1) -> sandbox.Limits:
  """Generous limits for one evaluation: 10 min + 10 s per training step per seed, and
  at most 16 GiB (or 80 % of this machine's memory)."""
  memory_mb = int(min(16384, 0.8 * psutil.virtual_memory().total / 2**20))
  return sandbox.Limits(timeout_s=num_seeds * (600.0 + 10.0 * profile.train_steps),
                        memory_mb=memory_mb)


_SETS_CACHE: dict[tuple, tuple[clrs.Spec, dict[str, data_lib.EvalSet]]] = {}
_SETS_LOCK = threading.Lock()
_SETS_CACHE_SIZE = 8


def trusted_eval_sets(profile: profiles_lib.EvalProfile
                      ) -> tuple[clrs.Spec, dict[str, data_lib.EvalSet]]:
  """``data.build_eval_sets(profile)``, cached per set definition (do not mutate).

  The sets are a function of the algorithm, their configs and the batch size; sampling
  the spark sets takes ~2 s, so concurrent evaluations of one run share one copy.
  """
  configs = data_lib.eval_set_configs(profile)
  key = (profile.algorithm, profile.eval_batch_size,
         tuple(dataclasses.astuple(c) for c in configs.values()))
  with _SETS_LOCK:
    if key not in _SETS_CACHE:
      if len(_SETS_CACHE) >= _SETS_CACHE_SIZE:
        _SETS_CACHE.pop(next(iter(_SETS_CACHE)))
      _SETS_CACHE[key] = data_lib.build_eval_sets(profile)
    return _SETS_CACHE[key]


# What the parent keeps of the child's report (all informational; types enforced).
_CHILD_NUMBERS = ("compile_seconds", "init_seconds", "train_seconds", "eval_seconds",
                  "data_seconds", "load_seconds", "checkpoint_seconds", "step_seconds",
                  "train_cpu_seconds", "total_seconds", "cpu_seconds", "peak_rss_mb",
                  "peak_device_mb", "startup_seconds", "jail_macs", "macs_nb_nodes")
_CHILD_NUMBER_DICTS = ("eval_seconds_by_set", "compile_seconds_by_phase")
_SHORT_WORD = 40


def _number(value: Any) -> float | int | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return value if math.isfinite(value) else None


def _child_report(value: Any, seeds: Sequence[int]) -> dict[str, Any]:
  """The child's report reduced to known fields of the right types (never an accuracy)."""
  value = value if isinstance(value, dict) else {}
  out: dict[str, Any] = {}
  for key in _CHILD_NUMBERS:
    out[key] = _number(value.get(key))
  for key in _CHILD_NUMBER_DICTS:
    items = value.get(key) if isinstance(value.get(key), dict) else {}
    out[key] = {scoring._clean(k, _SHORT_WORD): n for k, v in list(items.items())[:32]  # pylint: disable=protected-access
                if (n := _number(v)) is not None}
  losses = value.get("final_loss_per_seed")
  if isinstance(losses, list) and len(losses) == len(seeds):
    out["final_loss_per_seed"] = [_number(x) for x in losses]
  nonfinite = value.get("nonfinite_outputs")
  out["nonfinite_outputs"] = ([scoring._clean(x, _SHORT_WORD) for x in nonfinite[:16]]  # pylint: disable=protected-access
                              if isinstance(nonfinite, list) else [])
  device = value.get("device")
  out["device"] = scoring._clean(device, _SHORT_WORD) if isinstance(device, str) else None  # pylint: disable=protected-access
  out["fast_compile"] = value.get("fast_compile") is True
  return out


def _reset_exchange(workdir: pathlib.Path, keep_state: bool = False) -> pathlib.Path:
  """A fresh ``exchange`` directory (``rmtree`` never follows the jail's symlinks)."""
  exchange = workdir / scoring.EXCHANGE_DIR
  if exchange.is_symlink() or (exchange.exists() and not exchange.is_dir()):
    exchange.unlink()
  if exchange.exists() and not keep_state:
    shutil.rmtree(exchange)
  exchange.mkdir(parents=True, exist_ok=True)
  return exchange


def _write_inputs(exchange: pathlib.Path, name: str, spec: clrs.Spec,
                  sets: Mapping[str, data_lib.EvalSet]) -> dict[str, Any]:
  arrays, manifest = data_lib.export_features(sets, spec)
  scoring.save_npz(exchange / name, arrays, compress=True)
  return manifest


def _run_child(payload: dict[str, Any], *, workdir: pathlib.Path, limits: sandbox.Limits,
               worker: sandbox.Worker | None, extra_env: Mapping[str, str] | None
               ) -> sandbox.ChildResult:
  if worker is not None:
    return worker.run(CHILD_TARGET, payload, workdir=workdir, limits=limits)
  return sandbox.run_in_child(CHILD_TARGET, payload, workdir=workdir, limits=limits,
                              extra_env=extra_env)


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


def _failure(child: sandbox.ChildResult, reason: str, report: dict[str, Any] | None,
             wall: float = 0.0) -> EvalResult:
  return EvalResult(status="error", metrics=report, reason=f"error: {reason}",
                    wall_seconds=wall + child.wall_seconds, peak_rss_mb=child.peak_rss_mb,
                    stderr_tail=child.stderr_tail)


def _run_phase(payload: dict[str, Any], seeds: Sequence[int], *, workdir: pathlib.Path,
               limits: sandbox.Limits, worker: sandbox.Worker | None,
               extra_env: Mapping[str, str] | None, wall: float = 0.0,
               selector: scoring.CheckpointSelector | None = None) -> _Phase:
  """Runs one jailed phase and loads its predictions (raises :class:`_Failed`)."""
  scoring.unlink(workdir, f"{scoring.EXCHANGE_DIR}/{payload['predictions']}")
  if selector is not None:
    selector.start()
  try:
    child = _run_child(payload, workdir=workdir, limits=limits, worker=worker,
                       extra_env=extra_env)
  finally:
    selector_error = None
    if selector is not None:
      try:
        selector.stop()
      except scoring.ExchangeError as e:
        selector_error = e
  if not child.ok:
    raise _Failed(EvalResult(status=child.status, metrics=None, reason=child.reason,
                             wall_seconds=wall + child.wall_seconds,
                             peak_rss_mb=child.peak_rss_mb, stderr_tail=child.stderr_tail))
  report = _child_report(child.value, seeds)
  if selector_error is not None:
    raise _Failed(_failure(child, str(selector_error), report, wall))
  losses = report.get("final_loss_per_seed")
  if payload["phase"] == "train":
    if losses is None:
      raise _Failed(_failure(child, "the child did not report one training loss per seed",
                             report, wall))
    for seed, loss in zip(seeds, losses, strict=True):
      if loss is None:
        raise _Failed(_failure(child, f"nonfinite: the training loss of seed {seed} is "
                               "NaN or infinite", report, wall))
  if report["nonfinite_outputs"]:
    where = ", ".join(report["nonfinite_outputs"])
    raise _Failed(_failure(child, f"nonfinite: the model's raw outputs are NaN or infinite "
                           f"(set|seed: {where})", report, wall))
  try:
    predictions = (scoring.load_npz(workdir, f"{scoring.EXCHANGE_DIR}/"
                                    f"{payload['predictions']}")
                   if payload["predict_sets"] else {})
  except scoring.ExchangeError as e:
    raise _Failed(_failure(child, str(e), report, wall)) from None
  return _Phase(report, predictions, child)


def _score_sets(phase: _Phase, sets: Mapping[str, data_lib.EvalSet], names: Sequence[str],
                seeds: Sequence[int], what: str) -> dict[str, Any]:
  """Accuracy metrics of ``names`` from a phase's predictions (raises ExchangeError)."""
  metrics: dict[str, Any] = {}
  for name in names:
    outputs = scoring.truth(sets[name])
    preds = [scoring.predictions_for(phase.predictions, outputs, name, seed, what=what)
             for seed in seeds]
    metrics.update(scoring.accuracy_metrics(_KEY_FOR_SET[name], outputs, preds))
  expected = {scoring.prediction_key(n, s, dp.name) for n in names for s in seeds
              for dp in sets[n].batches[0].outputs}
  extra = sorted(set(phase.predictions) - expected)
  if extra:
    raise scoring.ExchangeError(f"{what}: unexpected array {scoring._clean(extra[0])!r} "  # pylint: disable=protected-access
                                f"({len(extra)} in all)")
  return metrics


def _state_counts(workdir: pathlib.Path, seeds: Sequence[int]) -> scoring.ParamCounts:
  """Parameter counts from the returned state files (the same structure for all seeds)."""
  counts = None
  for seed in seeds:
    arrays = scoring.load_npz(workdir, f"{scoring.EXCHANGE_DIR}/state/seed{seed}.npz")
    for name in _SET_FOR_KEY.values():
      key = arrays.get(f"{scoring.KEY_PREFIX}{name}")
      if key is None or key.shape != (2,) or key.dtype != np.uint32:
        raise scoring.ExchangeError(f"state of seed {seed}: no uint32[2] PRNG key for {name}")
    seed_counts = scoring.count_params(arrays, f"state of seed {seed}")
    if counts is not None and seed_counts != counts:
      raise scoring.ExchangeError(f"state of seed {seed} has {seed_counts.param_count} "
                                  f"parameters, seed {seeds[0]} {counts.param_count}")
    counts = seed_counts
  assert counts is not None
  return counts


def _trusted_cost(workdir: pathlib.Path, profile: profiles_lib.EvalProfile,
                  processor_count: int) -> dict[str, Any]:
  """MACs from the exported processor step (``macs.cost_from_export``), cross-checked
  against the trained model's processor parameter count."""
  blob = scoring.read_bytes(workdir, f"{scoring.EXCHANGE_DIR}/processor.export",
                            max_bytes=macs_lib.MAX_EXPORT_BYTES)
  flat = scoring.load_npz(workdir, f"{scoring.EXCHANGE_DIR}/processor_params.npz")
  try:
    cost = macs_lib.cost_from_export(blob, flat, hidden=profile.hidden,
                                     nb_nodes=profile.macs_nb_nodes)
  except macs_lib.ExportError as e:
    raise scoring.ExchangeError(f"processor export: {e}") from None
  if cost.param_count != processor_count:
    raise scoring.ExchangeError(
        f"the exported processor step has {cost.param_count} parameters but the trained "
        f"model's processor has {processor_count}")
  return {"macs": cost.macs, "macs_nb_nodes": cost.nb_nodes, "macs_source": "export"}


def _has_export() -> bool:
  return hasattr(macs_lib, "export_processor") and hasattr(macs_lib, "cost_from_export")


def _merge_reports(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
  """Timings of two phases: seconds added, per-set eval times from the later phase."""
  out = dict(first)
  for key in _CHILD_NUMBERS:
    a, b = first.get(key), second.get(key)
    if key.endswith("_seconds") and key != "step_seconds" and b is not None:
      out[key] = round((a or 0.0) + b, 3)
    elif key in ("peak_rss_mb", "peak_device_mb") and b is not None:
      out[key] = max(a or 0.0, b)
  # Per set: the final predictions (second phase); the first phase's val predictions of
  # every checkpoint are ``checkpoint_eval_seconds`` (both are in ``eval_seconds``).
  out["eval_seconds_by_set"] = dict(second.get("eval_seconds_by_set", {}))
  out["checkpoint_eval_seconds"] = first.get("eval_seconds_by_set", {}).get("val", 0.0)
  by_phase = dict(first.get("compile_seconds_by_phase", {}))
  for k, v in second.get("compile_seconds_by_phase", {}).items():
    by_phase[k] = round(by_phase.get(k, 0.0) + v, 3)
  out["compile_seconds_by_phase"] = by_phase
  return out


def evaluate(program_path: str | pathlib.Path, profile: profiles_lib.EvalProfile,
             seeds: Sequence[int], *, workdir: pathlib.Path,
             limits: sandbox.Limits | None = None, worker: sandbox.Worker | None = None,
             visible_device: str | None = None,
             extra_env: Mapping[str, str] | None = None,
             score_test: bool = True) -> EvalResult:
  """Evaluates a program in a jailed child; scores it here (never loads the program).

  Args:
    program_path: program file or seed name.
    profile: evaluation protocol.
    seeds: training seeds.
    workdir: the child's private directory (cwd, HOME, TMPDIR); ``exchange/`` in it
      holds the files crossing the boundary (see the module docstring).
    limits: sandbox limits of each phase; default :func:`default_limits`.
    worker: a warm ``sandbox.Worker`` to fork from instead of starting a fresh Python.
    visible_device: accelerator id the child may use (e.g. "0").
    extra_env: non-secret environment of a fresh child (e.g. ``JAX_COMPILATION_CACHE_DIR``);
      a warm ``worker`` has its own, given when it was made.
    score_test: False = do not predict OOD-test (``ood_acc*`` are None); the trained
      parameters stay in ``workdir`` for :func:`evaluate_test`.

  Raises:
    processors.ProgramLoadError: ``program_path`` is neither a file nor a seed name.
  """
  path = processors.resolve(program_path)
  seeds = [int(s) for s in seeds]
  limits = limits or default_limits(profile, len(seeds))
  workdir = pathlib.Path(workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  spec, sets = trusted_eval_sets(profile)
  exchange = _reset_exchange(workdir)
  select = profile.eval_every > 0
  final_sets = [n for n in _SET_FOR_KEY.values() if score_test or n != "test"]
  train_sets = [] if select else final_sets
  export = _has_export()
  base = {"program": str(path), "profile": profile.to_dict(), "seeds": seeds,
          "visible_device": visible_device, "exchange": scoring.EXCHANGE_DIR}
  manifest = _write_inputs(exchange, "inputs_train.npz", spec,
                           {n: sets[n] for n in dict.fromkeys(["val", *train_sets])})
  payload = {**base, "phase": "train", "inputs": "inputs_train.npz", "manifest": manifest,
             "predict_sets": train_sets, "predictions": "predictions_train.npz",
             "checkpoints": select, "export": export}
  selector = (scoring.CheckpointSelector(workdir, f"{scoring.EXCHANGE_DIR}/ckpt",
                                         scoring.truth(sets["val"]), seeds)
              if select else None)
  try:
    train = _run_phase(payload, seeds, workdir=workdir, limits=limits, worker=worker,
                       extra_env=extra_env, selector=selector)
    report, child, wall = train.report, train.child, train.child.wall_seconds
    try:
      counts = _state_counts(workdir, seeds)
      if export:
        cost = _trusted_cost(workdir, profile, counts.processor_param_count)
      else:
        cost = {"macs": report.get("jail_macs"), "macs_nb_nodes": report.get("macs_nb_nodes"),
                "macs_source": "jail_jaxpr"}
      if not select:
        accuracies = _score_sets(train, sets, final_sets, seeds, "predictions")
      else:
        assert selector is not None
        for seed in seeds:
          best = selector.best_params(seed)
          state = scoring.load_npz(workdir, f"{scoring.EXCHANGE_DIR}/state/seed{seed}.npz")
          keys = {k: v for k, v in state.items() if k.startswith(scoring.KEY_PREFIX)}
          best_counts = scoring.count_params(best, f"best checkpoint of seed {seed}")
          if best_counts != counts:
            raise scoring.ExchangeError(f"best checkpoint of seed {seed} has "
                                        f"{best_counts.param_count} parameters, the final "
                                        f"state {counts.param_count}")
          params = {k: v for k, v in best.items() if k.startswith(scoring.PARAM_PREFIX)}
          scoring.save_npz(exchange / "state" / f"seed{seed}.npz", {**params, **keys})
        report["best_step_per_seed"] = [selector.best_step(s) for s in seeds]
    except scoring.ExchangeError as e:
      return _failure(child, str(e), report)
    if select:
      manifest = _write_inputs(exchange, "inputs_predict.npz", spec,
                               {n: sets[n] for n in final_sets})
      payload = {**base, "phase": "predict", "inputs": "inputs_predict.npz",
                 "manifest": manifest, "predict_sets": final_sets, "dummy_set": "val",
                 "predictions": "predictions_predict.npz"}
      second = _run_phase(payload, seeds, workdir=workdir, limits=limits, worker=worker,
                          extra_env=extra_env, wall=wall)
      report = {**_merge_reports(report, second.report),
                "best_step_per_seed": report["best_step_per_seed"]}
      wall += second.child.wall_seconds
      child = second.child
      try:
        accuracies = _score_sets(second, sets, final_sets, seeds, "predictions")
      except scoring.ExchangeError as e:
        return _failure(child, str(e), report, wall - child.wall_seconds)
  except _Failed as failed:
    return failed.result
  metrics: dict[str, Any] = {"program": str(path), "profile": profile.name,
                             "algorithm": profile.algorithm, "seeds": seeds}
  if not score_test:
    metrics.update(scoring.empty_accuracy_metrics("ood_acc"))
  metrics.update(accuracies)
  metrics["final_loss_per_seed"] = report.pop("final_loss_per_seed")
  for key in ("nonfinite_outputs", "jail_macs", "macs_nb_nodes"):
    report.pop(key, None)
  metrics.update(param_count=counts.param_count,
                 processor_param_count=counts.processor_param_count, **cost)
  metrics.update(report)
  metrics["test_scored"] = score_test
  metrics["profile_config"] = profile.to_dict()
  return EvalResult(status="ok", metrics=metrics, reason="", wall_seconds=wall,
                    peak_rss_mb=child.peak_rss_mb, stderr_tail=child.stderr_tail)


def evaluate_test(program_path: str | pathlib.Path, profile: profiles_lib.EvalProfile,
                  seeds: Sequence[int], *, workdir: pathlib.Path,
                  limits: sandbox.Limits | None = None, worker: sandbox.Worker | None = None,
                  visible_device: str | None = None,
                  extra_env: Mapping[str, str] | None = None) -> EvalResult:
  """Scores OOD-test of an evaluation run earlier with ``score_test=False`` in ``workdir``.

  A jailed predict-only phase loads each seed's saved parameters (the best checkpoint
  with ``eval_every``) and predicts OOD-test; this process scores it. Metrics:
  ``ood_acc``, ``ood_acc_std``, ``ood_acc_per_seed``, ``ood_acc_ci``,
  ``ood_acc_ci_per_seed``, the child's timings (``eval_seconds_by_set`` has ``test``)
  and ``test_scored`` True.

  Raises:
    processors.ProgramLoadError: ``program_path`` is neither a file nor a seed name.
  """
  path = processors.resolve(program_path)
  seeds = [int(s) for s in seeds]
  limits = limits or default_limits(profile, len(seeds))
  workdir = pathlib.Path(workdir).resolve()
  present = set(scoring.list_names(workdir, f"{scoring.EXCHANGE_DIR}/state"))
  missing = [s for s in seeds if f"seed{s}.npz" not in present]
  if missing:
    return EvalResult(status="error", metrics=None, reason=(
        f"error: no saved parameters for seed(s) {missing} in {workdir}; run "
        "evaluate(..., score_test=False) with this workdir first"), wall_seconds=0.0,
        peak_rss_mb=0.0, stderr_tail="")
  spec, sets = trusted_eval_sets(profile)
  exchange = _reset_exchange(workdir, keep_state=True)
  manifest = _write_inputs(exchange, "inputs_test.npz", spec, {"test": sets["test"]})
  payload = {"program": str(path), "profile": profile.to_dict(), "seeds": seeds,
             "visible_device": visible_device, "exchange": scoring.EXCHANGE_DIR,
             "phase": "predict", "inputs": "inputs_test.npz", "manifest": manifest,
             "predict_sets": ["test"], "dummy_set": "test",
             "predictions": "predictions_test.npz"}
  try:
    phase = _run_phase(payload, seeds, workdir=workdir, limits=limits, worker=worker,
                       extra_env=extra_env)
  except _Failed as failed:
    return failed.result
  try:
    metrics = _score_sets(phase, sets, ["test"], seeds, "test predictions")
  except scoring.ExchangeError as e:
    return _failure(phase.child, str(e), phase.report)
  report = phase.report
  for key in ("final_loss_per_seed", "nonfinite_outputs", "jail_macs", "macs_nb_nodes"):
    report.pop(key, None)
  metrics.update(report)
  metrics["test_scored"] = True
  return EvalResult(status="ok", metrics=metrics, reason="",
                    wall_seconds=phase.child.wall_seconds,
                    peak_rss_mb=phase.child.peak_rss_mb, stderr_tail=phase.child.stderr_tail)


__all__ = ["ACCURACY_KEYS", "CHILD_TARGET", "EvalResult", "build_model", "child_main",
           "configure_jax", "default_limits", "evaluate", "evaluate_program",
           "evaluate_test", "make_initializer", "make_predictor", "processor_params",
           "score", "trusted_eval_sets"]
