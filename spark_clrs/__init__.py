"""spark_clrs: SPARK factor-scoped LLM architecture search inside DeepMind's CLRS.

``import spark_clrs`` is cheap (no JAX, no TensorFlow): ``spark_clrs.search`` and
``spark_clrs.SearchResult`` are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"search": "spark_clrs.search.api", "SearchResult": "spark_clrs.search.api",
         "SearchConfig": "spark_clrs.config"}


def __getattr__(name: str) -> Any:
  if name not in _LAZY:
    raise AttributeError(f"module 'spark_clrs' has no attribute {name!r}")
  value = getattr(importlib.import_module(_LAZY[name]), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted([*globals(), *_LAZY])


__all__ = ["SearchConfig", "SearchResult", "search", "__version__"]
