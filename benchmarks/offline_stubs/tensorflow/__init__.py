"""Stand-in for TensorFlow on a machine where it cannot be installed (offline GPU box).

dm-clrs 2.0.3 imports TensorFlow at import time, but only uses it for its downloadable
dataset (``tf.data``, ``tfds``), its CLRS-text generator and one ``isinstance(x,
tf.Tensor)`` check; spark_clrs samples every batch on the fly and needs none of them.
``benchmarks/gpu_candidate.sh --offline`` puts this directory on ``PYTHONPATH`` only
when ``import tensorflow`` fails. It defines what dm-clrs touches while being imported;
anything else raises an AttributeError that says why.
"""

from __future__ import annotations

import types
from typing import Any

string, int32, bool = "string", "int32", "bool"  # noqa: A001  # dtype names (as tf.*).


class Tensor:
  """No TensorFlow tensor ever exists here, so ``isinstance(x, tf.Tensor)`` is False."""


def TensorSpec(shape: Any = None, dtype: Any = None) -> dict[str, Any]:  # noqa: N802
  """A description only (dm-clrs builds a spec dict of these at import time)."""
  return {"shape": shape, "dtype": dtype}


class _Dataset:
  """Only named in annotations at import time."""


data = types.SimpleNamespace(Dataset=_Dataset)


def __getattr__(name: str) -> Any:
  raise AttributeError(f"tensorflow.{name}: TensorFlow is not installed here; this is the "
                       "offline stand-in of benchmarks/gpu_candidate.sh, which supports "
                       "only what importing dm-clrs needs")
