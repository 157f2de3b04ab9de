"""The search engine: controller loop, archive, run directory, summary, results.

``spark_clrs.search`` is both this package and, called, the function
:func:`spark_clrs.search.api.search` (so ``spark_clrs.search(...)`` works after any
``import spark_clrs.search...``); importing it loads no JAX.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
  """Lets ``spark_clrs.search(...)`` call the search function."""

  def __call__(self, flagfile: str | None = None, **overrides: Any) -> Any:
    from spark_clrs.search import api

    return api.search(flagfile, **overrides)


sys.modules[__name__].__class__ = _CallableModule
