"""The trusted scorer: accuracies from a jailed trainer's predictions (SPEC §9).

The process that runs candidate code never holds the outputs (labels) of OOD-val,
OOD-test or val. It gets only what CLRS's prediction reads (``data.export_features``),
and writes back, into its workdir, ``.npz`` files: predictions per set and seed,
parameters per seed, and (with best-checkpoint selection) val predictions plus a
parameter checkpoint at each evaluation step. This module, which never loads a
candidate, is the only reader of those files:

* **Safe reading.** Every file is opened component by component with ``O_NOFOLLOW``
  relative to the trusted workdir (no symlink, no FIFO or device, no path outside it),
  capped in size before it is parsed, and parsed with ``np.load(allow_pickle=False)``;
  only boolean, integer and float arrays are accepted. Names the jail chose are
  sanitised before they appear in a reason; file contents never do.
* **Validation.** Predictions must be exactly the spec's output names, float32, of the
  outputs' shapes, and finite; anything else fails the evaluation with a one-line
  :class:`ExchangeError` naming what was wrong.
* **Scoring** is CLRS's own ``clrs.evaluate`` on the concatenated outputs and
  predictions, exactly as CLRS's ``examples/run.py`` scores a split.
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
import os
import pathlib
import re
import stat
import threading
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import clrs
import numpy as np

from spark_clrs.evaluation import data as data_lib

EXCHANGE_DIR = "exchange"  # Inside the jail's workdir.
MAX_FILE_BYTES = 1 << 30  # Largest .npz the trusted side parses (uncompressed members).
MAX_ARRAYS = 100_000
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
PARAM_PREFIX = "params|"
KEY_PREFIX = "key|"
PROCESSOR_TAG = "clrs_processor"  # clrs.processors.PROCESSOR_TAG
_ACCEPTED_KINDS = "biuf"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.|:/~-]")


class ExchangeError(ValueError):
  """A file from the jail is missing, malformed or non-finite; the message is one line."""


def _clean(name: Any, limit: int = 80) -> str:
  """A jail-chosen name, safe to put in a reason (printable, short)."""
  text = _SAFE_NAME.sub("?", str(name))
  return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------------- file access


def _open_dir(root: pathlib.Path, parts: Sequence[str]) -> int:
  """fd of ``root/parts...``, each component opened without following symlinks."""
  fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
  try:
    for part in parts:
      if part in ("", ".", "..") or "/" in part:
        raise ExchangeError(f"bad path component {_clean(part)!r}")
      try:
        nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
      except FileNotFoundError:
        raise
      except OSError as e:
        raise ExchangeError(f"{_clean(part)} is not a plain directory ({e.strerror})") from None
      os.close(fd)
      fd = nxt
  except BaseException:
    os.close(fd)
    raise
  return fd


def _split(relpath: str) -> tuple[list[str], str]:
  parts = relpath.split("/")
  return parts[:-1], parts[-1]


def read_bytes(root: pathlib.Path, relpath: str, *, max_bytes: int = MAX_FILE_BYTES
               ) -> bytes:
  """Contents of the regular file ``root/relpath`` (no symlinks anywhere below root).

  Raises:
    ExchangeError: missing, not a regular file, or larger than ``max_bytes``.
  """
  dirs, name = _split(relpath)
  try:
    dir_fd = _open_dir(pathlib.Path(root), dirs)
  except FileNotFoundError:
    raise ExchangeError(f"{relpath} is missing") from None
  try:
    try:
      fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
      raise ExchangeError(f"{relpath} is missing") from None
    except OSError as e:
      raise ExchangeError(f"{relpath} cannot be opened as a plain file ({e.strerror})"
                          ) from None
    with os.fdopen(fd, "rb") as f:
      info = os.fstat(f.fileno())
      if not stat.S_ISREG(info.st_mode):
        raise ExchangeError(f"{relpath} is not a regular file")
      if info.st_size > max_bytes:
        raise ExchangeError(f"{relpath} has {info.st_size} bytes, over the {max_bytes} "
                            "byte limit")
      return f.read(max_bytes + 1)[:max_bytes + 1]
  finally:
    os.close(dir_fd)


def load_npz(root: pathlib.Path, relpath: str, *, max_bytes: int = MAX_FILE_BYTES
             ) -> dict[str, np.ndarray]:
  """Arrays of the ``.npz`` at ``root/relpath``, read safely (see module docstring).

  Raises:
    ExchangeError: missing, not a plain file, too large, not an npz of plain numeric
      arrays (pickled objects are refused).
  """
  import io  # pylint: disable=g-import-not-at-top

  raw = read_bytes(root, relpath, max_bytes=max_bytes)
  try:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
      infos = archive.infolist()
      if len(infos) > MAX_ARRAYS:
        raise ExchangeError(f"{relpath} holds {len(infos)} arrays, over {MAX_ARRAYS}")
      if sum(i.file_size for i in infos) > max_bytes:
        raise ExchangeError(f"{relpath} unpacks to more than {max_bytes} bytes")
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
      arrays = {name: npz[name] for name in npz.files}
  except ExchangeError:
    raise
  except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
    raise ExchangeError(f"{relpath} is not a valid .npz of plain arrays "
                        f"({type(e).__name__})") from None
  for name, value in arrays.items():
    if value.dtype.kind not in _ACCEPTED_KINDS:
      raise ExchangeError(f"{relpath}: array {_clean(name)} has dtype {_clean(value.dtype)}; "
                          "only bool, integer and float arrays are accepted")
  return arrays


def save_npz(path: pathlib.Path, arrays: Mapping[str, np.ndarray], *,
             compress: bool = False) -> None:
  """Writes ``arrays`` as an ``.npz``, atomically (tmp file + rename); ``compress`` for
  mostly-zero data such as blanked hints (spark's inputs: 72 MB raw)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  clean = {}
  for name, value in arrays.items():
    value = np.asarray(value)
    if value.dtype.kind not in _ACCEPTED_KINDS:
      raise ValueError(f"array {name!r} has dtype {value.dtype}; only numeric arrays cross "
                       "the jail boundary")
    clean[name] = value
  tmp = path.with_name(f".tmp-{path.name}")
  with open(tmp, "wb") as f:
    (np.savez_compressed if compress else np.savez)(f, **clean)
  os.replace(tmp, path)


def list_names(root: pathlib.Path, reldir: str) -> list[str]:
  """Entry names of the directory ``root/reldir`` (empty when it does not exist)."""
  try:
    fd = _open_dir(pathlib.Path(root), [p for p in reldir.split("/") if p])
  except FileNotFoundError:
    return []
  try:
    return os.listdir(fd)
  finally:
    os.close(fd)


def unlink(root: pathlib.Path, relpath: str) -> None:
  """Removes the file ``root/relpath`` (never through a symlinked directory)."""
  dirs, name = _split(relpath)
  try:
    fd = _open_dir(pathlib.Path(root), dirs)
  except (FileNotFoundError, ExchangeError):
    return
  try:
    os.unlink(name, dir_fd=fd)
  except (FileNotFoundError, IsADirectoryError, PermissionError):
    pass
  finally:
    os.close(fd)


# ---------------------------------------------------------------------------- params


def flatten_params(params: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Haiku params ``{module: {name: array}}`` as ``params|MODULE|NAME`` arrays."""
  out = {}
  for module, values in params.items():
    for name, value in values.items():
      if "|" in module or "|" in name:
        raise ValueError(f"parameter {module}/{name} has a '|' in its name")
      out[f"{PARAM_PREFIX}{module}|{name}"] = np.asarray(value)
  return out


def unflatten_params(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  """Inverse of :func:`flatten_params` (other arrays are ignored)."""
  params: dict[str, dict[str, np.ndarray]] = {}
  for key, value in arrays.items():
    if key.startswith(PARAM_PREFIX):
      module, _, name = key[len(PARAM_PREFIX):].rpartition("|")
      params.setdefault(module, {})[name] = value
  return params


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  """Scalars in the whole model's parameters and in the processor's."""

  param_count: int
  processor_param_count: int


def count_params(arrays: Mapping[str, np.ndarray], what: str) -> ParamCounts:
  """Counts the parameters of a returned state file; they must be finite floats.

  Raises:
    ExchangeError: no parameters, a non-float or a non-finite parameter.
  """
  params = unflatten_params(arrays)
  if not params:
    raise ExchangeError(f"{what} holds no parameters")
  total = processor = 0
  for module, values in params.items():
    for name, value in values.items():
      if value.dtype.kind != "f":
        raise ExchangeError(f"{what}: parameter {_clean(module)}/{_clean(name)} has dtype "
                            f"{value.dtype}, expected a float")
      if not np.all(np.isfinite(value)):
        raise ExchangeError(f"nonfinite: {what}: parameter {_clean(module)}/{_clean(name)} "
                            "has NaN or infinite values")
      total += int(value.size)
      if PROCESSOR_TAG in module:
        processor += int(value.size)
  return ParamCounts(total, processor)


def param_shapes(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
  return {k: tuple(v.shape) for k, v in arrays.items() if k.startswith(PARAM_PREFIX)}


# ----------------------------------------------------------------------- predictions


def prediction_key(set_name: str, seed: int, output: str) -> str:
  return f"{set_name}|{int(seed)}|{output}"


def truth(eval_set: data_lib.EvalSet) -> tuple[clrs.DataPoint, ...]:
  """The set's outputs, concatenated over its batches (trusted side only)."""
  first = eval_set.batches[0].outputs
  return tuple(
      clrs.DataPoint(dp.name, dp.location, dp.type_,
                     np.concatenate([b.outputs[i].data for b in eval_set.batches], axis=0))
      for i, dp in enumerate(first))


def predictions_for(arrays: Mapping[str, np.ndarray], outputs: Sequence[clrs.DataPoint],
                    set_name: str, seed: int, *, what: str = "predictions"
                    ) -> dict[str, clrs.DataPoint]:
  """Validated predictions of one set and seed, as ``clrs.evaluate`` takes them.

  Expected: one float32 array per output, named ``SET|SEED|OUTPUT``, of the output's
  shape (CLRS's hard-postprocessed predictions have their truth's shape), all finite.

  Raises:
    ExchangeError: a missing, misshapen, mistyped or non-finite prediction.
  """
  preds = {}
  for dp in outputs:
    key = prediction_key(set_name, seed, dp.name)
    if key not in arrays:
      raise ExchangeError(f"{what}: no prediction {key!r} (output {dp.name} of set "
                          f"{set_name}, seed {seed})")
    value = arrays[key]
    if value.shape != dp.data.shape:
      raise ExchangeError(f"{what}: {key} has shape {value.shape}, expected "
                          f"{dp.data.shape}")
    if value.dtype != np.float32:
      raise ExchangeError(f"{what}: {key} has dtype {value.dtype}, expected float32")
    if not np.all(np.isfinite(value)):
      raise ExchangeError(f"nonfinite: {what}: {key} has NaN or infinite predictions")
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


def accuracy_metrics(metric: str, outputs: Sequence[clrs.DataPoint],
                     preds_per_seed: Sequence[Mapping[str, clrs.DataPoint]]
                     ) -> dict[str, Any]:
  """``METRIC`` (mean over seeds), ``_std``, ``_per_seed``, ``_ci``, ``_ci_per_seed``."""
  values = [score(outputs, preds) for preds in preds_per_seed]
  ci, ci_per_seed = bootstrap_half_widths(outputs, preds_per_seed)
  return {metric: float(np.mean(values)), f"{metric}_std": float(np.std(values)),
          f"{metric}_per_seed": values, f"{metric}_ci": ci,
          f"{metric}_ci_per_seed": ci_per_seed}


def empty_accuracy_metrics(metric: str) -> dict[str, Any]:
  """The same fields, all None: the set was not scored (e.g. deferred test)."""
  return {metric: None, f"{metric}_std": None, f"{metric}_per_seed": None,
          f"{metric}_ci": None, f"{metric}_ci_per_seed": None}


# ------------------------------------------------------------ best-checkpoint selection

_CKPT_NAME = re.compile(r"seed(\d{1,9})_step(\d{1,9})\.val\.npz")


def checkpoint_names(seed: int, step: int) -> tuple[str, str]:
  """File names (in the checkpoint directory) of one checkpoint's params and val preds;
  the jail writes the params first, then the val predictions."""
  stem = f"seed{int(seed)}_step{int(step)}"
  return f"{stem}.params.npz", f"{stem}.val.npz"


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

  Raises (from :meth:`stop`, :meth:`best_params`): :class:`ExchangeError`.
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
    self._error: ExchangeError | None = None
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
      except ExchangeError as e:
        self._error = e

  def _sweep_locked(self) -> None:
    found = []
    for name in list_names(self._root, self._dir):
      match = _CKPT_NAME.fullmatch(name)
      if match:
        seed, step = int(match.group(1)), int(match.group(2))
        if (seed, step) not in self._done:
          found.append((seed, step))
    for seed, step in sorted(found):
      if seed not in self._seeds:
        raise ExchangeError(f"checkpoint for seed {seed}, which is not a training seed")
      if len(self._done) >= self._max:
        raise ExchangeError(f"more than {self._max} val checkpoints")
      self._done.add((seed, step))
      params_name, val_name = checkpoint_names(seed, step)
      arrays = load_npz(self._root, f"{self._dir}/{val_name}")
      preds = predictions_for(arrays, self._outputs, "val", seed,
                              what=f"val checkpoint of seed {seed} step {step}")
      finite = arrays.get("finite")
      value = score(self._outputs, preds)
      if finite is None or finite.shape != () or not bool(finite):
        value = -np.inf
      self.scores[seed].append((step, value))
      best = self._best.get(seed)
      unlink(self._root, f"{self._dir}/{val_name}")
      if best is None or value > best.score:
        if best is not None:
          unlink(self._root, f"{self._dir}/{best.params_name}")
        self._best[seed] = _Best(step, value, params_name)
      else:
        unlink(self._root, f"{self._dir}/{params_name}")

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
      raise ExchangeError(f"no val checkpoint for seed {seed}")
    return self._best[seed].step

  def best_params(self, seed: int) -> dict[str, np.ndarray]:
    """The best checkpoint's parameter arrays of ``seed``."""
    best = self._best.get(seed)
    if best is None:
      raise ExchangeError(f"no val checkpoint for seed {seed}")
    return load_npz(self._root, f"{self._dir}/{best.params_name}")


__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "CheckpointSelector", "EXCHANGE_DIR",
           "ExchangeError", "ParamCounts", "accuracy_metrics", "bootstrap_half_widths",
           "checkpoint_names", "count_params", "empty_accuracy_metrics", "flatten_params",
           "list_names", "load_npz", "param_shapes", "prediction_key", "predictions_for",
           "read_bytes", "save_npz", "score", "truth", "unflatten_params", "unlink"]
