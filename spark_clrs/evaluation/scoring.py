"""The trusted scorer: accuracies from a jailed trainer's predictions (SPEC §9).

The process that runs candidate code never holds the outputs (labels) of OOD-val,
OOD-test or val. It gets only what CLRS's prediction reads (``data.export_features``),
and writes back, into its workdir, the ``.npz`` files :mod:`protocol` describes. This
module, which never loads a candidate, computes every number from them:

* **Safe reading** is :mod:`spark_clrs.isolation.exchange`'s: no link followed, regular
  files only, bounded reads, every array header checked against the protocol's
  expectation before any array is allocated.
* **Validation.** Predictions must be exactly the spec's output names, float32, of the
  outputs' shapes, and finite; anything else fails the evaluation with a one-line
  :class:`~spark_clrs.isolation.exchange.BoundaryError` naming what was wrong.
* **Scoring** is CLRS's own ``clrs.evaluate`` on the concatenated outputs and
  predictions, exactly as CLRS's ``examples/run.py`` scores a split; each graph is also
  scored alone (``*_per_graph``, per training seed) for paired comparisons.
* **Bootstrap over evaluation graphs**: :data:`BOOTSTRAP_RESAMPLES` resamples of the
  graphs with replacement from a fixed RNG seed, each scored by ``clrs.evaluate`` on the
  selected graphs; the reported ``*_ci`` is the half-width of the 95 % percentile
  interval. The same resampled graphs are used for every training seed, so the interval
  of the seeds' mean is over the same graphs.
* **Budget numbers from data**: parameter counts are counted from the returned arrays.
* **Best-checkpoint selection** (:class:`CheckpointSelector`): a thread scores each val
  checkpoint as it appears and deletes all but the best, so the workdir holds a few
  checkpoints at any time.

Everything here is numpy and CLRS's numpy scoring: no JAX backend is started.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import clrs
import numpy as np

from spark_clrs.evaluation import data as data_lib
from spark_clrs.evaluation import protocol
from spark_clrs.evaluation.protocol import prediction_key
from spark_clrs.isolation import exchange
from spark_clrs.isolation.exchange import BoundaryError

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


# ---------------------------------------------------------------------------- params


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  """Scalars in the whole model's parameters and in the processor's."""

  param_count: int
  processor_param_count: int


def count_params(arrays: Mapping[str, np.ndarray], what: str) -> ParamCounts:
  """Counts the parameters of a returned state file; they must be finite floats.

  Raises:
    BoundaryError: no parameters, a non-float or a non-finite parameter.
  """
  params = protocol.unflatten_params(arrays)
  if not params:
    raise BoundaryError(f"{what} holds no parameters")
  total = processor = 0
  for module, values in params.items():
    for name, value in values.items():
      if value.dtype.kind != "f":
        raise BoundaryError(f"{what}: parameter {exchange.clean(module)}/"
                            f"{exchange.clean(name)} has dtype {value.dtype}, expected a float")
      if not np.all(np.isfinite(value)):
        raise BoundaryError(f"nonfinite: {what}: parameter {exchange.clean(module)}/"
                            f"{exchange.clean(name)} has NaN or infinite values")
      total += int(value.size)
      if clrs.processors.PROCESSOR_TAG in module:
        processor += int(value.size)
  return ParamCounts(total, processor)



# ----------------------------------------------------------------------- predictions


def truth(eval_set: data_lib.EvalSet) -> tuple[clrs.DataPoint, ...]:
  """The set's outputs, concatenated over its batches (trusted side only)."""
  first = eval_set.batches[0].outputs
  return tuple(
      clrs.DataPoint(dp.name, dp.location, dp.type_,
                     np.concatenate([b.outputs[i].data for b in eval_set.batches], axis=0))
      for i, dp in enumerate(first))


def output_shapes(outputs: Sequence[clrs.DataPoint]) -> list[tuple[str, tuple[int, ...]]]:
  """``(name, shape)`` of each output: what a prediction of it must be."""
  return [(dp.name, tuple(dp.data.shape)) for dp in outputs]


def predictions_for(arrays: Mapping[str, np.ndarray], outputs: Sequence[clrs.DataPoint],
                    set_name: str, seed: int, *, what: str = "predictions"
                    ) -> dict[str, clrs.DataPoint]:
  """Validated predictions of one set and seed, as ``clrs.evaluate`` takes them.

  Expected: one float32 array per output, named ``SET|SEED|OUTPUT``, of the output's
  shape (CLRS's hard-postprocessed predictions have their truth's shape), all finite.

  Raises:
    BoundaryError: a missing, misshapen, mistyped or non-finite prediction.
  """
  preds = {}
  for dp in outputs:
    key = prediction_key(set_name, seed, dp.name)
    if key not in arrays:
      raise BoundaryError(f"{what}: no prediction {key!r} (output {dp.name} of set "
                          f"{set_name}, seed {seed})")
    value = arrays[key]
    if value.shape != dp.data.shape:
      raise BoundaryError(f"{what}: {key} has shape {value.shape}, expected "
                          f"{dp.data.shape}")
    if value.dtype != np.float32:
      raise BoundaryError(f"{what}: {key} has dtype {value.dtype}, expected float32")
    if not np.all(np.isfinite(value)):
      raise BoundaryError(f"nonfinite: {what}: {key} has NaN or infinite predictions")
    preds[dp.name] = clrs.DataPoint(dp.name, dp.location, dp.type_, value)
  return preds


def score(outputs: Sequence[clrs.DataPoint], preds: Mapping[str, clrs.DataPoint]) -> float:
  """CLRS's own score of ``preds`` against ``outputs``."""
  return float(clrs.evaluate(tuple(outputs), dict(preds))["score"])


def _take(dps: Any, idx: np.ndarray) -> Any:
  if isinstance(dps, Mapping):
    return {k: clrs.DataPoint(v.name, v.location, v.type_, v.data[idx]) for k, v in dps.items()}
  return tuple(clrs.DataPoint(v.name, v.location, v.type_, v.data[idx]) for v in dps)


def _half_width(values: np.ndarray) -> float:
  tail = 100.0 * (1.0 - CI_LEVEL) / 2.0
  low, high = np.percentile(values, [tail, 100.0 - tail])
  return float((high - low) / 2.0)


def bootstrap_half_widths(outputs: Sequence[clrs.DataPoint],
                          preds_per_seed: Sequence[Mapping[str, clrs.DataPoint]], *,
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
                          ) -> tuple[float, list[float]]:
  """95 % bootstrap half-widths over evaluation graphs: of the seeds' mean, and per seed.

  Each resample draws the graphs with replacement (one RNG of fixed ``seed``, the same
  draws for every training seed) and scores them with ``clrs.evaluate``.
  """
  n = int(outputs[0].data.shape[0])
  rng = np.random.default_rng(seed)
  scores = np.empty((resamples, len(preds_per_seed)))
  for r in range(resamples):
    idx = rng.integers(0, n, n)
    picked = _take(outputs, idx)
    for s, preds in enumerate(preds_per_seed):
      scores[r, s] = score(picked, _take(preds, idx))
  return _half_width(scores.mean(axis=1)), [_half_width(scores[:, s])
                                            for s in range(scores.shape[1])]


def per_graph_scores(outputs: Sequence[clrs.DataPoint],
                     preds: Mapping[str, clrs.DataPoint]) -> list[float]:
  """CLRS's score of each graph alone, in the set's order.

  For outputs CLRS scores as an average over nodes or edges (pointers, categoricals,
  ``mask_one``; dfs's ``pi``) of graphs of one size, their mean is the set's score; for
  F1-scored masks and scalars it is close but not equal.
  """
  n = int(outputs[0].data.shape[0])
  return [score(_take(outputs, np.array([i])), _take(preds, np.array([i])))
          for i in range(n)]


def accuracy_metrics(metric: str, outputs: Sequence[clrs.DataPoint],
                     preds_per_seed: Sequence[Mapping[str, clrs.DataPoint]]
                     ) -> dict[str, Any]:
  """``METRIC`` (mean over seeds), ``_std``, ``_per_seed``, ``_ci``, ``_ci_per_seed`` and
  ``_per_graph`` (per seed, each graph's score: what paired comparisons pair on)."""
  values = [score(outputs, preds) for preds in preds_per_seed]
  ci, ci_per_seed = bootstrap_half_widths(outputs, preds_per_seed)
  return {metric: float(np.mean(values)), f"{metric}_std": float(np.std(values)),
          f"{metric}_per_seed": values, f"{metric}_ci": ci,
          f"{metric}_ci_per_seed": ci_per_seed,
          f"{metric}_per_graph": [per_graph_scores(outputs, p) for p in preds_per_seed]}


ACCURACY_SUFFIXES = ("", "_std", "_per_seed", "_ci", "_ci_per_seed", "_per_graph")


def empty_accuracy_metrics(metric: str) -> dict[str, Any]:
  """The same fields, all None: the set was not scored (e.g. deferred test)."""
  return {f"{metric}{suffix}": None for suffix in ACCURACY_SUFFIXES}


# ------------------------------------------------------------ best-checkpoint selection

_CKPT_NAME = re.compile(r"seed(\d{1,9})_step(\d{1,9})\.val\.npz")


@dataclasses.dataclass
class _Best:
  step: int
  score: float
  params_name: str


class CheckpointSelector:
  """Scores val checkpoints as the jail writes them; keeps only each seed's best.

  The jail writes ``seedS_stepK.params.npz`` then ``seedS_stepK.val.npz`` (val
  predictions, plus a ``finite`` flag array) into ``root/reldir`` at every evaluation
  step. Each val file is scored (in step order) with CLRS's scoring; as in CLRS's
  ``run.py`` a checkpoint replaces the best only when strictly better (a non-finite one
  scores -inf); every other params file is deleted. Run :meth:`start` before the jail
  starts and :meth:`stop` after it exited (a final sweep).

  Raises (from :meth:`stop`, :meth:`best_params`): :class:`BoundaryError`.
  """

  def __init__(self, root: pathlib.Path, reldir: str, outputs: Sequence[clrs.DataPoint],
               seeds: Sequence[int], *, poll_s: float = 0.2, max_checkpoints: int = 100_000):
    self._root = pathlib.Path(root)
    self._dir = reldir
    self._outputs = tuple(outputs)
    self._seeds = {int(s) for s in seeds}
    self._poll_s = poll_s
    self._max = max_checkpoints
    self._best: dict[int, _Best] = {}
    self._done: set[tuple[int, int]] = set()
    self._error: BoundaryError | None = None
    self._stop = threading.Event()
    self._lock = threading.Lock()
    self._thread = threading.Thread(target=self._loop, name="checkpoint-selector",
                                    daemon=True)
    self.scores: dict[int, list[tuple[int, float]]] = {s: [] for s in self._seeds}

  def start(self) -> None:
    self._thread.start()

  def _loop(self) -> None:
    while not self._stop.wait(self._poll_s):
      self.sweep()

  def sweep(self) -> None:
    """Scores every checkpoint that appeared since the last sweep."""
    with self._lock:
      if self._error is not None:
        return
      try:
        self._sweep_locked()
      except BoundaryError as e:
        self._error = e

  def _sweep_locked(self) -> None:
    found = []
    for name in exchange.list_names(self._root, self._dir):
      match = _CKPT_NAME.fullmatch(name)
      if match:
        seed, step = int(match.group(1)), int(match.group(2))
        if (seed, step) not in self._done:
          found.append((seed, step))
    for seed, step in sorted(found):
      if seed not in self._seeds:
        raise BoundaryError(f"checkpoint for seed {seed}, which is not a training seed")
      if len(self._done) >= self._max:
        raise BoundaryError(f"more than {self._max} val checkpoints")
      self._done.add((seed, step))
      params_name, val_name = protocol.checkpoint_names(seed, step)
      spec = protocol.checkpoint_spec(output_shapes(self._outputs), seed)
      arrays = exchange.load_npz(self._root, f"{self._dir}/{val_name}",
                                 max_bytes=protocol.spec_bytes(spec), expect=spec)
      preds = predictions_for(arrays, self._outputs, "val", seed,
                              what=f"val checkpoint of seed {seed} step {step}")
      value = score(self._outputs, preds) if bool(arrays["finite"]) else -np.inf
      self.scores[seed].append((step, value))
      best = self._best.get(seed)
      exchange.unlink(self._root, f"{self._dir}/{val_name}")
      if best is None or value > best.score:
        if best is not None:
          exchange.unlink(self._root, f"{self._dir}/{best.params_name}")
        self._best[seed] = _Best(step, value, params_name)
      else:
        exchange.unlink(self._root, f"{self._dir}/{params_name}")

  def stop(self) -> None:
    """Stops the thread and scores what is left; raises the first error seen."""
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()
    self.sweep()
    if self._error is not None:
      raise self._error

  def best_step(self, seed: int) -> int:
    if seed not in self._best:
      raise BoundaryError(f"no val checkpoint for seed {seed}")
    return self._best[seed].step

  def best_params(self, seed: int) -> dict[str, np.ndarray]:
    """The best checkpoint's parameter arrays of ``seed``."""
    best = self._best.get(seed)
    if best is None:
      raise BoundaryError(f"no val checkpoint for seed {seed}")
    return exchange.load_npz(self._root, f"{self._dir}/{best.params_name}",
                             max_bytes=protocol.MAX_STATE_BYTES,
                             expect=protocol.check_params_array)


__all__ = ["ACCURACY_SUFFIXES", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "CheckpointSelector",
           "ParamCounts", "accuracy_metrics", "bootstrap_half_widths", "count_params",
           "empty_accuracy_metrics", "output_shapes", "per_graph_scores", "predictions_for",
           "score", "truth"]
