"""UCB1 over factors: the router's fallback when the LLM gives no usable scope (SPEC §1.2).

Each factor is an arm; its rewards are the gains of past proposals scoped to it,
divided by the largest gain seen so far (so rewards lie in [0, 1] whatever the
fitness scale). An arm never pulled is pulled first; otherwise the arm with the
highest ``mean + c * sqrt(2 ln(total) / pulls)`` wins, ties broken by the rng.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class BanditChoice:
  """The chosen arm and the score of every arm (``inf`` for an unpulled arm)."""

  arm: str
  scores: dict[str, float]
  pulls: dict[str, int]


def ucb_choose(arms: Sequence[str], gains: Mapping[str, Sequence[float]],
               rng: np.random.Generator, c: float = 1.0) -> BanditChoice:
  """Picks an arm by UCB1 over normalised gains."""
  if not arms:
    raise ValueError("ucb_choose needs at least one arm; configure at least one factor")
  pulls = {a: len(gains.get(a, ())) for a in arms}
  top = max((g for a in arms for g in gains.get(a, ())), default=0.0)
  scale = top if top > 0 else 1.0
  total = sum(pulls.values())
  scores: dict[str, float] = {}
  for a in arms:
    if pulls[a] == 0:
      scores[a] = math.inf
      continue
    mean = sum(gains[a]) / pulls[a] / scale
    scores[a] = mean + c * math.sqrt(2.0 * math.log(max(total, 1)) / pulls[a])
  best = max(scores.values())
  tied = [a for a in arms if scores[a] == best]
  arm = tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]
  return BanditChoice(arm=arm, scores=scores, pulls=pulls)


__all__ = ["BanditChoice", "ucb_choose"]
