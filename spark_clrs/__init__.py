"""spark_clrs: SPARK factor-scoped LLM architecture search inside DeepMind's CLRS.

``import spark_clrs`` is cheap (no JAX, no TensorFlow): ``spark_clrs.search`` and
``spark_clrs.SearchResult`` are loaded on first use. ``spark_clrs.search`` is the
``spark_clrs.search`` package, which is callable (``spark_clrs.search(flagfile=...,
**flags)`` runs a search), so ``import spark_clrs.search.results`` keeps working after a call.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"search": "spark_clrs.search", "SearchResult": "spark_clrs.search.results",
         "SearchConfig": "spark_clrs.config"}


def __getattr__(name: str) -> Any:
  if name not in _LAZY:
    raise AttributeError(f"module 'spark_clrs' has no attribute {name!r}")
  module = importlib.import_module(_LAZY[name])
  value = module if name == "search" else getattr(module, name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted([*globals(), *_LAZY])


__all__ = ["SearchConfig", "SearchResult", "search", "__version__"]
