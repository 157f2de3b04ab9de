"""What a strategy needs from the search engine, stated by the strategy itself.

The baselines differ not only in their prompts but in how their population is kept:
FunSearch samples only inside an island by clusters of equal score, never migrates and
periodically resets its weaker islands; OpenEvolve exploits the island's own elites and
migrates to both neighbours; EoH keeps a fixed-size population and picks parents by
rank. A proposer states these needs as its :attr:`engine_options` (an
:class:`EngineOptions`); the archive and the controller read them, so no engine code
ever tests a strategy's name.
"""

from __future__ import annotations

import dataclasses

from spark_clrs.proposers.base import IslandReset

# How the parent (and its companions) are drawn for an iteration on island i.
SAMPLERS = (
    "archive",   # SPEC §5: island best / global elites / island MAP-Elites cells.
    "island",    # The same three draws, with the elites restricted to island i (OpenEvolve).
    "clusters",  # FunSearch: Boltzmann over score clusters of island i, short programs first.
    "rank",      # EoH: p(rank r) proportional to 1 / (r + 1 + N) over island i.
)
MIGRATIONS = ("ring", "both", "none")  # To the next island, to both neighbours, never.


@dataclasses.dataclass(frozen=True)
class EngineOptions:
  """Engine behaviour a strategy asks for.

  Attributes:
    sampler: one of :data:`SAMPLERS`.
    companions: further programs the sampler draws from the parent's island beside the
      parent, shown in the prompt as ``island`` inspirations (FunSearch's k-1 other
      versions, EoH's second parent). With ``clusters`` the parent is the best of the
      drawn programs, so the child is credited to the version the prompt asks it to
      improve.
    migration: one of :data:`MIGRATIONS` (every ``--migration_interval`` iterations).
    island_reset: a periodic reset of the weaker islands (FunSearch), or ``None``.
    population: a fixed island size kept by fitness alone (EoH's population
      management); ``None`` = the archive's capacity with MAP-Elites cell holders kept.
  """

  sampler: str = "archive"
  companions: int = 0
  migration: str = "ring"
  island_reset: IslandReset | None = None
  population: int | None = None

  def __post_init__(self):
    if self.sampler not in SAMPLERS:
      raise ValueError(f"EngineOptions.sampler={self.sampler!r}; use one of {SAMPLERS}")
    if self.migration not in MIGRATIONS:
      raise ValueError(f"EngineOptions.migration={self.migration!r}; use one of {MIGRATIONS}")
    if self.companions < 0 or (self.population is not None and self.population < 1):
      raise ValueError(f"EngineOptions needs companions >= 0 and population >= 1, got "
                       f"companions={self.companions}, population={self.population}")


DEFAULT = EngineOptions()


def of(proposer: object) -> EngineOptions:
  """The proposer's options (the default engine when it states none)."""
  options = getattr(proposer, "engine_options", None)
  if options is None:
    reset = getattr(proposer, "island_reset", None)
    return EngineOptions(island_reset=reset) if reset is not None else DEFAULT
  return options


__all__ = ["DEFAULT", "EngineOptions", "MIGRATIONS", "SAMPLERS", "of"]
