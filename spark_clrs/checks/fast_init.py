"""Parameters for the ``finite`` stage drawn with numpy instead of a compiled ``init``.

Compiling a jitted Haiku ``init`` takes seconds on a CPU, most of it the XLA RNG program.
Haiku's common initializers are drawn here with numpy from the same distributions, so the
check child compiles only the forward pass. Anything else (a custom initializer, a traced
stddev) falls back to the real initializer. Runs in the jailed check child.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import haiku as hk
import jax.numpy as jnp
import numpy as np


def initial_value(init: Any, shape: Sequence[int], dtype: Any,
                  rng: np.random.Generator) -> np.ndarray | None:
  """A numpy draw from one of Haiku's common initializers (None: not one of them)."""
  shape = tuple(shape)
  if not np.issubdtype(np.dtype(dtype), np.floating):
    return None
  try:
    if init is jnp.zeros:
      return np.zeros(shape, dtype)
    if init is jnp.ones:
      return np.ones(shape, dtype)
    if type(init) is hk.initializers.Constant:
      return np.broadcast_to(np.asarray(init.constant, dtype), shape).copy()
    if type(init) is hk.initializers.RandomNormal:
      draw = rng.standard_normal(shape)
      return (float(init.mean) + float(init.stddev) * draw).astype(dtype)
    if type(init) is hk.initializers.RandomUniform:
      return rng.uniform(float(init.minval), float(init.maxval), shape).astype(dtype)
    if type(init) is hk.initializers.TruncatedNormal:
      lower, upper = float(init.lower), float(init.upper)
      draw = rng.standard_normal(shape)
      bad = (draw < lower) | (draw > upper)
      while bad.any():
        draw[bad] = rng.standard_normal(int(bad.sum()))
        bad = (draw < lower) | (draw > upper)
      return (float(init.mean) + float(init.stddev) * draw).astype(dtype)
  except (TypeError, ValueError):  # e.g. a traced stddev: use the real initializer.
    return None
  return None


def creator() -> Any:
  """A Haiku param creator drawing common initializers with numpy, others as usual."""
  rng = np.random.default_rng(0)

  def create(next_creator, shape, dtype, init, context):
    del context
    value = initial_value(init, shape, dtype, rng)
    return next_creator(shape, dtype, init) if value is None else jnp.asarray(value)

  return create


def draw_params(initializers: Mapping[tuple[str, str], tuple[Any, tuple[int, ...], Any]]
                ) -> dict[str, dict[str, np.ndarray]] | None:
  """Haiku parameters drawn from recorded initializers (None: one of them is not common).

  Args:
    initializers: ``(module, name) -> (initializer, shape, dtype)`` as the ``shape``
      stage recorded them.
  """
  rng = np.random.default_rng(0)
  params: dict[str, dict[str, np.ndarray]] = {}
  for (module, name), (init, shape, dtype) in initializers.items():
    value = initial_value(init, shape, dtype, rng)
    if value is None:
      return None
    params.setdefault(module, {})[name] = value
  return params


__all__ = ["creator", "draw_params", "initial_value"]
