"""What crosses the jail boundary during an evaluation: file names, array names, shapes.

The jailed trainer (:mod:`spark_clrs.evaluation.trainer`) and the trusted side
(:mod:`spark_clrs.evaluation.evaluate`, :mod:`spark_clrs.evaluation.scoring`) agree here
on the layout of ``workdir/exchange/`` and on what each ``.npz`` in it may hold, so the
trusted side can state, before reading a file, exactly which arrays it accepts
(``exchange.load_npz(expect=...)``):

* ``inputs_<phase>.npz`` (parent -> jail): ``data.export_features`` of the sets the phase
  predicts, written before the jail starts;
* ``predictions_<phase>.npz``: ``SET|SEED|OUTPUT`` -> float32 hard predictions, of each
  output's shape (:func:`prediction_spec`);
* ``state/seed<S>.npz``: ``params|MODULE|NAME`` float arrays and one ``key|SET`` uint32[2]
  PRNG key per evaluation set (:func:`check_state_array`);
* ``ckpt/seed<S>_step<K>.params.npz`` then ``ckpt/seed<S>_step<K>.val.npz`` (val
  predictions and a bool ``finite``) at each evaluation step, with checkpoint selection.

The processor's cost does not cross here: it is the checks' (``checks.Verdict.cost``).

Plain numpy: importable on either side without JAX, and free of any LLM code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spark_clrs.isolation.exchange import BoundaryError, clean

CHILD_TARGET = "spark_clrs.evaluation.trainer:child_main"  # The jailed entry point.
EXCHANGE_DIR = "exchange"  # Inside the jail's workdir.
STATE_NAME = "state"  # In the exchange directory; kept for a deferred test.
STATE_DIR = f"{EXCHANGE_DIR}/{STATE_NAME}"
CKPT_DIR = f"{EXCHANGE_DIR}/ckpt"
EVAL_SET_NAMES = ("ood_val", "test", "val")  # As data.EVAL_SET_NAMES.
SET_FOR_KEY = {"ood_val_acc": "ood_val", "ood_acc": "test", "val_acc": "val"}
KEY_FOR_SET = {v: k for k, v in SET_FOR_KEY.items()}
ACCURACY_KEYS = tuple(SET_FOR_KEY)
PARAM_PREFIX = "params|"
KEY_PREFIX = "key|"
MAX_STATE_BYTES = 256 << 20  # Largest parameter file (64 M float32 parameters).
_MEMBER_OVERHEAD = 1024  # Zip entry + .npy header bytes allowed per array.

Spec = dict[str, tuple[tuple[int, ...], Any]]


def in_exchange(name: str) -> str:
  """The workdir-relative path of a file directly in the exchange directory."""
  return f"{EXCHANGE_DIR}/{name}"


def state_file_name(seed: int) -> str:
  """The name (in :data:`STATE_DIR`) of a seed's trained state."""
  return f"seed{int(seed)}.npz"


def state_file(seed: int) -> str:
  """The workdir-relative path of a seed's trained state."""
  return f"{STATE_DIR}/{state_file_name(seed)}"


def checkpoint_names(seed: int, step: int) -> tuple[str, str]:
  """File names (in :data:`CKPT_DIR`) of one checkpoint's params and val predictions;
  the jail writes the params first, then the val predictions."""
  stem = f"seed{int(seed)}_step{int(step)}"
  return f"{stem}.params.npz", f"{stem}.val.npz"


def prediction_key(set_name: str, seed: int, output: str) -> str:
  return f"{set_name}|{int(seed)}|{output}"


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


# ------------------------------------------------------------------- what is accepted


def prediction_spec(shapes: Mapping[str, Sequence[tuple[str, tuple[int, ...]]]],
                    seeds: Sequence[int]) -> Spec:
  """Expectation of a predictions file: exactly one float32 array per set, seed and output.

  Args:
    shapes: set name -> ``(output name, shape)`` of each of its outputs.
    seeds: training seeds.
  """
  return {prediction_key(name, seed, output): (tuple(shape), np.float32)
          for name, outputs in shapes.items() for seed in seeds for output, shape in outputs}


def checkpoint_spec(shapes: Sequence[tuple[str, tuple[int, ...]]], seed: int) -> Spec:
  """Expectation of a val checkpoint: the val predictions of ``seed`` and a bool ``finite``."""
  return {**prediction_spec({"val": shapes}, [seed]), "finite": ((), np.bool_)}


def spec_bytes(spec: Spec) -> int:
  """A size bound for a file of the arrays of ``spec``: twice their bytes plus zip
  overhead, so that a wrongly typed or shaped array is refused by name (its header
  disagrees with ``spec``) rather than for its size, while the parent's memory stays
  bounded by what it expects."""
  total = _MEMBER_OVERHEAD
  for shape, dtype in spec.values():
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize + _MEMBER_OVERHEAD
  return 2 * total


def check_params_array(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
  """Expectation of a parameter checkpoint: ``params|MODULE|NAME`` float arrays only.

  Raises:
    BoundaryError: any other array.
  """
  if not name.startswith(PARAM_PREFIX) or name.count("|") != 2:
    raise BoundaryError(f"unexpected array {clean(name)!r} among the parameters")
  if dtype.kind != "f":
    raise BoundaryError(f"parameter {clean(name)} has dtype {dtype.name}, expected a float")


def check_state_array(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
  """Expectation of a state file: float parameters and one uint32[2] PRNG key per
  evaluation set.

  Raises:
    BoundaryError: any other array.
  """
  if name.startswith(KEY_PREFIX) and name[len(KEY_PREFIX):] in EVAL_SET_NAMES:
    if shape != (2,) or dtype != np.uint32:
      raise BoundaryError(f"{clean(name)} is {dtype.name}{list(shape)}, expected a uint32[2] "
                          "PRNG key")
    return
  check_params_array(name, shape, dtype)


__all__ = ["ACCURACY_KEYS", "CHILD_TARGET", "CKPT_DIR", "EVAL_SET_NAMES", "EXCHANGE_DIR",
           "KEY_FOR_SET", "KEY_PREFIX", "MAX_STATE_BYTES", "PARAM_PREFIX", "SET_FOR_KEY", "STATE_DIR", "STATE_NAME", "Spec",
           "check_params_array", "check_state_array",
           "checkpoint_names", "checkpoint_spec", "flatten_params", "in_exchange",
           "prediction_key", "prediction_spec", "spec_bytes", "state_file", "state_file_name",
           "unflatten_params"]
