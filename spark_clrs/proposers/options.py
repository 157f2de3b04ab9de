"""What a strategy needs from the search engine, stated by the strategy itself.

The baselines differ not only in their prompts but in how their population is kept:
FunSearch samples inside a uniformly drawn island by clusters of equal score, never
migrates and periodically resets its weaker islands; OpenEvolve mixes exploration,
exploitation and fitness-weighted draws on an island whose MAP-Elites grid is over code
length and code diversity, and migrates (once per program) to both neighbours; EoH and
EvoPrompting keep one fixed-size population that changes only between generations. A
proposer states these needs as its :attr:`engine_options` (an :class:`EngineOptions`);
the archive and the controller read them, so no engine code ever tests a strategy's
name, and every mechanism's parameters live in the strategy's own module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from spark_clrs.programs import code_features
from spark_clrs.proposers.base import IslandReset

# How the parent (and its companions) are drawn for an iteration on island i.
SAMPLERS = (
    "archive",   # SPEC §5: island best / global elites / island MAP-Elites cells.
    "island",    # OpenEvolve: uniform island member / global elite on the island /
                 # fitness-weighted island member.
    "clusters",  # FunSearch: Boltzmann over score clusters of island i, short programs first.
    "rank",      # EoH: p(rank r) proportional to 1 / (r + 1 + N) over island i.
    "uniform",   # EvoPrompting: distinct members of island i drawn uniformly.
)
MIGRATIONS = ("ring", "both", "none")  # To the next island, to both neighbours, never.
ISLAND_CHOICES = ("cycle", "uniform")  # Iteration k on island k mod n, or a uniform draw.
# MAP-Elites dimensions the archive measures on the program text itself (OpenEvolve's
# built-in defaults): ``complexity`` = length in characters, ``diversity`` = mean code
# distance to a fixed reference set of early programs (spark_clrs.programs.code_features).
CODE_FEATURES = code_features.FEATURES


@dataclasses.dataclass(frozen=True)
class EngineOptions:
  """Engine behaviour a strategy asks for.

  Attributes:
    sampler: one of :data:`SAMPLERS`.
    companions: further programs the sampler draws from the parent's island beside the
      parent, shown in the prompt as ``island`` inspirations (FunSearch's k-1 other
      versions, EoH's second parent, EvoPrompting's second few-shot example). With
      ``clusters`` the parent is the best of the drawn programs, so the child is
      credited to the version the prompt asks it to improve.
    migration: one of :data:`MIGRATIONS` (every ``--migration_interval`` iterations).
    remigrate: whether a program copied onto an island may be copied on from there
      (``False``: only an island's own programs migrate, as in OpenEvolve).
    island_reset: a periodic reset of the weaker islands (FunSearch), or ``None``.
    island_choice: one of :data:`ISLAND_CHOICES`: the controller's ``k mod n``
      (``cycle``), or an island drawn uniformly for every prompt (``uniform``).
    islands: the number of islands, overriding ``--num_islands`` (1 = one population).
    population: a fixed island size kept by :attr:`score` alone (EoH, EvoPrompting);
      ``None`` = the archive's capacity with MAP-Elites cell holders kept.
    generation: proposals per generation; the parents of a generation are drawn from
      the population as it stood when the previous generation closed, and the
      generation's children join it (then the population is cut back to
      ``population``) when the next one starts. ``None`` = steady state: a child joins
      as soon as it is evaluated.
    distinct_scores: keep at most one program per score (rounded to 5 decimals, as EoH
      rounds its objectives) when the population is cut back (EoH).
    score: the selection score of a program from its metrics, higher is better, used
      to rank a population and to cut it back; ``None`` = the fitness (``ood_val_acc``).
    cluster_step: with ``clusters``, programs whose fitness rounds to the same multiple
      of this step share a cluster; ``None`` = the score per training seed.
    feature_dims: MAP-Elites dimensions replacing ``--feature_dims``; names in
      :data:`CODE_FEATURES` are measured by the archive on the program and binned
      between the smallest and largest value seen so far (OpenEvolve's min-max scaling).
  """

  sampler: str = "archive"
  companions: int = 0
  migration: str = "ring"
  remigrate: bool = True
  island_reset: IslandReset | None = None
  island_choice: str = "cycle"
  islands: int | None = None
  population: int | None = None
  generation: int | None = None
  distinct_scores: bool = False
  score: Callable[[Mapping[str, Any]], float | None] | None = None
  cluster_step: float | None = None
  feature_dims: tuple[str, ...] | None = None

  def __post_init__(self):
    for name, value, allowed in (("sampler", self.sampler, SAMPLERS),
                                 ("migration", self.migration, MIGRATIONS),
                                 ("island_choice", self.island_choice, ISLAND_CHOICES)):
      if value not in allowed:
        raise ValueError(f"EngineOptions.{name}={value!r}; use one of {allowed}")
    positive = {"islands": self.islands, "population": self.population,
                "generation": self.generation, "cluster_step": self.cluster_step}
    bad = {k: v for k, v in positive.items() if v is not None and v <= 0}
    if self.companions < 0 or bad:
      raise ValueError(f"EngineOptions needs companions >= 0 and positive {', '.join(positive)} "
                       f"when set, got companions={self.companions}, {bad}")
    if self.feature_dims is not None and not self.feature_dims:
      raise ValueError("EngineOptions.feature_dims is empty; leave it None for --feature_dims")


DEFAULT = EngineOptions()


def of(proposer: object) -> EngineOptions:
  """The proposer's options (the default engine when it states none)."""
  options = getattr(proposer, "engine_options", None)
  if options is None:
    reset = getattr(proposer, "island_reset", None)
    return EngineOptions(island_reset=reset) if reset is not None else DEFAULT
  return options


__all__ = ["CODE_FEATURES", "DEFAULT", "EngineOptions", "ISLAND_CHOICES", "MIGRATIONS",
           "SAMPLERS", "of"]
