"""How the baselines' engines draw a parent and its companions from one island.

Pure functions over the island's members (evaluated candidates, sorted by id) and the
caller's numpy Generator; :class:`spark_clrs.search.archive.Archive` picks one according
to the strategy's ``EngineOptions.sampler`` and wraps the result in a ``Selection``.
Each returns ``(parent, companions)``; companions are shown in the same prompt and, where
the source draws with replacement, may repeat a program (the parent included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from spark_clrs.search.archive_db import Candidate

# FunSearch's programs database (Romera-Paredes et al. 2023): cluster sampling
# temperature T = T_INIT * (1 - (n mod PERIOD) / PERIOD), n = programs on the island;
# inside a cluster, softmax(-normalised length) at temperature 1.
CLUSTER_TEMPERATURE_INIT = 0.1
CLUSTER_TEMPERATURE_PERIOD = 30_000
WEIGHT_FLOOR = 0.001  # OpenEvolve's fitness-weighted draw gives every program at least this.

Key = Callable[[Candidate], tuple[float, int]]
Drawn = tuple[Candidate, tuple[Candidate, ...]]


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
  z = (logits - logits.max()) / max(temperature, 1e-9)
  w = np.exp(z)
  return w / w.sum()


def score_signature(c: Candidate, step: float | None = None) -> tuple[float, ...]:
  """FunSearch's cluster key: the scores per training seed, or the quantised fitness.

  With ``step`` the key is the fitness rounded to a multiple of ``step``, so that
  programs whose scores differ by less than the measurement can resolve share a cluster.
  """
  if step:
    return (round(round(float(c.fitness) / step) * step, 9),)
  per_seed = c.metrics.get("ood_val_acc_per_seed")
  values = per_seed if isinstance(per_seed, list) and per_seed else [c.fitness]
  return tuple(round(float(v), 6) for v in values)


def clusters(members: Sequence[Candidate], rng: np.random.Generator, *, draws: int,
             step: float | None) -> Drawn:
  """FunSearch: ``draws`` clusters WITH replacement by Boltzmann over score, a short
  program from each.

  Clusters group the programs by :func:`score_signature`; a cluster's score is its
  key's mean. As in FunSearch the same cluster (and program) may be drawn twice, and at
  most as many clusters as exist are drawn. The drawn programs are sorted by ascending
  score and the best becomes the parent (the version the prompt asks the model to
  improve).
  """
  groups: dict[tuple[float, ...], list[Candidate]] = {}
  for c in members:
    groups.setdefault(score_signature(c, step), []).append(c)
  keys = sorted(groups, key=lambda k: (sum(k) / len(k), k))
  scores = np.array([sum(k) / len(k) for k in keys], dtype=float)
  period = CLUSTER_TEMPERATURE_PERIOD
  temperature = CLUSTER_TEMPERATURE_INIT * (1 - (len(members) % period) / period)
  picked = rng.choice(len(keys), size=min(len(keys), draws), replace=True,
                      p=softmax(scores, temperature))
  chosen = []
  for i in (int(j) for j in picked):
    programs = sorted(groups[keys[i]], key=lambda c: c.id)
    lengths = np.array([len(c.code or "") for c in programs], dtype=float)
    normalised = (lengths - lengths.min()) / (lengths.max() + 1e-6)
    program = programs[int(rng.choice(len(programs), p=softmax(-normalised, 1.0)))]
    chosen.append((float(scores[i]), program))
  chosen.sort(key=lambda sc: (sc[0], sc[1].fitness))
  return chosen[-1][1], tuple(c for _, c in chosen[:-1])


def rank(members: Sequence[Candidate], rng: np.random.Generator, *, draws: int,
         key: Key) -> Drawn:
  """EoH: ``draws`` draws WITH replacement, p(rank r) ∝ 1 / (r + 1 + N), ranked by ``key``.

  As in EoH the second parent may be the first one again.
  """
  ranked = sorted(members, key=key)
  weights = np.array([1.0 / (r + 1 + len(ranked)) for r in range(len(ranked))])
  picks = rng.choice(len(ranked), size=draws, replace=True, p=weights / weights.sum())
  return ranked[int(picks[0])], tuple(ranked[int(i)] for i in picks[1:])


def uniform(members: Sequence[Candidate], rng: np.random.Generator, *, draws: int,
            key: Key) -> Drawn:
  """EvoPrompting: ``draws`` distinct members drawn uniformly; the best by ``key`` is the
  parent, the others (weakest first) its companions."""
  k = min(len(members), draws)
  drawn = sorted((members[int(i)] for i in rng.choice(len(members), size=k, replace=False)),
                 key=key, reverse=True)
  return drawn[-1], tuple(drawn[:-1])


def island(members: Sequence[Candidate], elites: Sequence[Candidate], rng: np.random.Generator,
           *, exploration: float, exploitation: float) -> tuple[Candidate, str]:
  """OpenEvolve: a member uniformly (``exploration``), a global elite that lives on the
  island or, when none does, any elite (``exploitation``), else a member with
  probability proportional to its fitness (the remaining share); and the draw's name."""
  draw = rng.random()
  if draw < exploration:
    return members[int(rng.integers(len(members)))], "exploration"
  if draw < exploration + exploitation:
    ids = {c.id for c in members}
    pool = sorted([c for c in elites if c.id in ids] or elites, key=lambda c: c.id)
    return pool[int(rng.integers(len(pool)))], "exploitation"
  weights = np.array([max(c.fitness if c.fitness is not None and math.isfinite(c.fitness)
                          else 0.0, WEIGHT_FLOOR) for c in members])
  return members[int(rng.choice(len(members), p=weights / weights.sum()))], "weighted"


__all__ = ["CLUSTER_TEMPERATURE_INIT", "CLUSTER_TEMPERATURE_PERIOD", "WEIGHT_FLOOR", "clusters",
           "island", "rank", "score_signature", "softmax", "uniform"]
