"""Colours fixed by name: a factor or a strategy has the same colour on every page and plot.

Colours assigned in order of appearance change from run to run (OPERATOR orange in one
run page, green in the next), so a reader cannot carry a colour from one figure to
another. Here the well-known names have fixed colours and any other name gets one from a
hash of its text, which is the same in every process; run pages, compare pages (through
their JSON data) and the matplotlib plots all ask this module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

# Factors as the viewer and reports name them (scopes of one or several regions).
FACTOR_COLORS = {
    "seed": "#111111",
    "OPERATOR": "#ff7f0e",
    "ACTION": "#1f77b4",
    "ACTION+OPERATOR": "#9467bd",
    "unscoped": "#7f7f7f",
    "none": "#7f7f7f",
    "several": "#8c564b",
}
STRATEGY_COLORS = {
    "spark": "#1f77b4",
    "asr_only": "#17becf",
    "rc_sar": "#9467bd",
    "openevolve": "#2ca02c",
    "evoprompting": "#e377c2",
    "funsearch": "#bcbd22",
    "eoh": "#8c564b",
    "mutation": "#d62728",
}
# For names not above: none of these is a fixed colour's near twin.
_SPARE = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#31a354",
          "#756bb1", "#636363", "#e6550d", "#969696", "#6baed6")


def _hashed(name: str) -> str:
  digest = hashlib.sha256(name.encode("utf-8")).digest()
  return _SPARE[int.from_bytes(digest[:4], "big") % len(_SPARE)]


def factor_key(name: str | None) -> str:
  """One spelling per factor set: ``OPERATOR,ACTION`` and ``ACTION+OPERATOR`` are one key."""
  if not name:
    return "none"
  parts = [p for p in re.split(r"[+,]", str(name)) if p]
  return "+".join(sorted(parts)) if len(parts) > 1 else str(name)


def factor_color(name: str | None) -> str:
  """The colour of a factor (a scope, ``seed``, ``unscoped``, ``several``) as ``#rrggbb``."""
  key = factor_key(name)
  return FACTOR_COLORS.get(key) or _hashed(key)


def strategy_color(name: str) -> str:
  """The colour of a strategy (a group label's strategy) as ``#rrggbb``."""
  return STRATEGY_COLORS.get(name) or _hashed(name)


def factor_colors(names: Iterable[str | None]) -> dict[str, str]:
  """``{name: colour}`` for the given names, as the page data carries it."""
  return {str(n if n else "none"): factor_color(n) for n in names}


__all__ = ["FACTOR_COLORS", "STRATEGY_COLORS", "factor_color", "factor_colors", "factor_key",
           "strategy_color"]
