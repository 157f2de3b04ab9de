"""The jail side of an evaluation: train a candidate with CLRS's own BaselineModel.

:func:`child_main` runs in the jailed child (``protocol.CHILD_TARGET``). It loads the
candidate program, builds the ``clrs.models.BaselineModel`` CLRS's ``examples/run.py``
builds around the candidate's processor factory (hints ``encoded_decoded``,
``xavier_on_scalars`` encoders, no LSTM, Adam with global-norm clipping, soft hint
re-prediction), trains it per training seed and writes what :mod:`protocol` describes:
predictions, parameters and PRNG keys, val checkpoints. (The processor's cost is the
checks' own measurement, never this process's word.)

It holds no labels: its inputs are ``data.export_features`` of the evaluation sets
(inputs, lengths, the first hint step), and it returns no accuracy. It imports no LLM
code and holds no key. What it reports (timings, losses, which raw outputs were
non-finite) is informational; the trusted side computes every number it selects on.

The model object (and so its jit caches) is reused across seeds: only the first seed
pays for compilation. Each evaluation must see exactly one device: with several,
dm-clrs 2.0.3 takes a pmap path that calls ``jax.device_put_replicated``, which current
JAX removed (:func:`configure_jax`).
"""

from __future__ import annotations

import math
import os
import pathlib
import time
from collections.abc import Callable, Sequence
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
from spark_clrs.evaluation import protocol
from spark_clrs.evaluation.timing import Phases, timing_metrics
from spark_clrs.isolation import channel, exchange

FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
_LOG_EVERY = 50  # Training steps between loss log lines (each one a host sync).
_PROGRESS_EVERY_S = 1.0  # Seconds between progress records of the training loop.
_MAX_INPUT_BYTES = 4 << 30  # The parent's inputs file (spark's: ~72 MB unpacked).


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
                       "jax.device_put_replicated); run it through spark_clrs.evaluation."
                       "evaluate or set CUDA_VISIBLE_DEVICES to a single device")
  return fresh and fast_compile


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


def finite_or_none(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


class Trainer:
  """One loaded program: its BaselineModel, initialiser and predictor.

  ``dummy`` sizes the model (like run.py, a val batch; in the jail its outputs are zero
  placeholders). With ``first_seed`` the model is initialised once from
  ``first_seed + 1`` (one init compile; parameter values depend on the seed and shapes
  only) and the processor's parameters are checked to be where CLRS trains them.
  ``count_cost`` counts the processor's MACs in this process (the in-process path; the
  trusted side takes the checks' cost and checks that its parameter count is the trained
  processor's).
  """

  def __init__(self, program_path: str, profile: profiles_lib.EvalProfile,
               spec: clrs.Spec, dummy: clrs.Feedback, phases: Phases, *,
               first_seed: int | None, count_cost: bool = False):
    self.profile = profile
    self.phases = phases
    self.dummy = dummy
    channel.report_progress(stage="load")
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
      channel.report_progress(stage="init")
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
          channel.report_progress(stage="train", seed=seed, step=step)
          reported = now
      jax.block_until_ready(loss)

    phases.run("train", train)
    keys = {}
    for set_name in protocol.EVAL_SET_NAMES:  # ood_val, test, val: the old scoring order.
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


# ---------------------------------------------------------------------- the jailed child


def _inputs(payload: dict[str, Any], root: pathlib.Path
            ) -> tuple[list[int], dict[str, Any], Any, dict[str, Any]]:
  """The seeds, manifest, spec and evaluation inputs a phase reads."""
  arrays = exchange.load_npz(root, protocol.in_exchange(payload["inputs"]),
                             max_bytes=_MAX_INPUT_BYTES)
  manifest = payload["manifest"]
  spec, sets = data_lib.import_features(arrays, manifest)
  return [int(s) for s in payload["seeds"]], manifest, spec, sets


def _predict_sets(trainer: Trainer, sets: dict[str, Any], names: Sequence[str], seed: int,
                  keys: dict[str, Any], predictions: dict[str, np.ndarray],
                  nonfinite: list[str]) -> None:
  channel.report_progress(stage="eval", seed=seed)
  for name in names:
    values, finite = trainer.predict(sets[name], jnp.asarray(keys[name]), name)
    if not finite:
      nonfinite.append(f"{name}|{seed}")
    predictions.update({protocol.prediction_key(name, seed, k): v for k, v in values.items()})


def _train_phase(payload: dict[str, Any], profile: profiles_lib.EvalProfile,
                 phases: Phases, root: pathlib.Path) -> dict[str, Any]:
  """Phase ``train``: trains per seed, writes state, checkpoints and predictions."""
  seeds, manifest, spec, sets = _inputs(payload, root)
  dummy = data_lib.placeholder_feedback(sets["val"][0], manifest["sets"]["val"])
  trainer = Trainer(payload["program"], profile, spec, dummy, phases, first_seed=seeds[0])
  predictions: dict[str, np.ndarray] = {}
  losses: list[float | None] = []
  nonfinite: list[str] = []
  for seed in seeds:
    def on_eval(step: int, key: jax.Array, seed: int = seed) -> None:
      values, finite = trainer.predict(sets["val"], key, "val")
      params_name, val_name = protocol.checkpoint_names(seed, step)

      def write() -> None:
        exchange.save_npz(root, f"{protocol.CKPT_DIR}/{params_name}",
                          protocol.flatten_params(trainer.model.params), parents=True)
        exchange.save_npz(root, f"{protocol.CKPT_DIR}/{val_name}", {
            **{protocol.prediction_key("val", seed, k): v for k, v in values.items()},
            "finite": np.asarray(finite)})
      phases.run("checkpoint", write)

    loss, keys = trainer.train(seed, on_eval if payload.get("checkpoints") else None)
    losses.append(finite_or_none(loss))
    state = protocol.flatten_params(trainer.model.params)
    state.update({f"{protocol.KEY_PREFIX}{name}": np.asarray(k) for name, k in keys.items()})
    phases.run("checkpoint", lambda s=state, seed=seed: exchange.save_npz(
        root, protocol.state_file(seed), s, parents=True))
    _predict_sets(trainer, sets, payload["predict_sets"], seed, keys, predictions, nonfinite)
  exchange.save_npz(root, protocol.in_exchange(payload["predictions"]), predictions)
  out: dict[str, Any] = {"final_loss_per_seed": losses, "nonfinite_outputs": nonfinite}
  out.update(timing_metrics(phases, profile.train_steps * len(seeds)))
  return out


def _predict_phase(payload: dict[str, Any], profile: profiles_lib.EvalProfile,
                   phases: Phases, root: pathlib.Path) -> dict[str, Any]:
  """Phase ``predict``: predicts the payload's sets from each seed's saved state."""
  seeds, manifest, spec, sets = _inputs(payload, root)
  dummy = data_lib.placeholder_feedback(sets[payload["dummy_set"]][0],
                                        manifest["sets"][payload["dummy_set"]])
  trainer = Trainer(payload["program"], profile, spec, dummy, phases, first_seed=None)
  predictions: dict[str, np.ndarray] = {}
  nonfinite: list[str] = []
  for seed in seeds:
    state = exchange.load_npz(root, protocol.state_file(seed),
                              max_bytes=protocol.MAX_STATE_BYTES)
    trainer.model.params = protocol.unflatten_params(state)
    keys = {name: state[f"{protocol.KEY_PREFIX}{name}"] for name in payload["predict_sets"]}
    _predict_sets(trainer, sets, payload["predict_sets"], seed, keys, predictions, nonfinite)
  exchange.save_npz(root, protocol.in_exchange(payload["predictions"]), predictions)
  out: dict[str, Any] = {"nonfinite_outputs": nonfinite}
  out.update(timing_metrics(phases, 0))
  return out


def child_main(payload: dict[str, Any]) -> dict[str, Any]:
  """The jailed target (runs candidate code, never sees any output/label).

  Payload: ``{"phase": "train" | "predict", "program", "profile" (EvalProfile fields),
  "seeds", "visible_device"?, "inputs" (``.npz`` name in the exchange directory),
  "manifest" (of ``data.export_features``), "predict_sets", "predictions" (``.npz`` name
  to write), "checkpoints"?, "dummy_set"?}``; files relative to the cwd (the
  workdir). Returns timings and what only the child can see (losses, non-finite raw
  outputs), plus ``startup_seconds`` (process start to here: interpreter, imports); the
  parent trusts none of it for scoring.
  """
  startup = time.time() - psutil.Process().create_time()
  phases = Phases()
  profile = profiles_lib.EvalProfile(**payload["profile"])
  seeds = [int(s) for s in payload["seeds"]]
  if not seeds:
    raise ValueError("no training seeds given; pass at least one, e.g. seeds=[0]")
  fast_compile = configure_jax(payload.get("visible_device"), profile.fast_compile)
  root = pathlib.Path.cwd()
  if payload.get("phase", "train") == "train":
    out = _train_phase(payload, profile, phases, root)
  else:
    out = _predict_phase(payload, profile, phases, root)
  out["fast_compile"] = fast_compile
  out["startup_seconds"] = round(startup, 3)
  return out


__all__ = ["FAST_COMPILE_FLAG", "Trainer", "build_model", "child_main", "configure_jax",
           "finite_or_none", "make_initializer", "make_predictor", "processor_params"]
