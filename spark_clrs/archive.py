"""The search archive: islands, MAP-Elites cells, elites and parent sampling (SPEC §5).

The archive stores what the search produced and chooses the next parent; it
never computes a metric and never calls an LLM. Storage (SQLite, WAL) is in
archive_db.py; this module is the selection policy:

* Islands: the population is split into ``num_islands`` islands; the seed
  starts on every island, a child joins its parent's island, and every
  ``migration_interval`` iterations (decided by the controller) each island's
  best programs are copied to the next island of the ring.
* MAP-Elites: on each island, a grid over ``feature_dims`` (default MACs and
  parameter count, binned on a log scale relative to the seed) keeps the
  fittest program per cell.
* Elites: the ``archive_size`` fittest programs overall.
* Parent sampling: with ``elite_selection_ratio`` the island's best, with
  ``exploitation_ratio`` a uniform draw from the elites, otherwise a uniform
  draw from the island's occupied cells (exploration).

Fitness is ``ood_val_acc``. Only evaluated candidates with a finite fitness
ever enter an island, so infeasible or failed ones are recorded but never
sampled as parents. All randomness comes from the caller's numpy Generator.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from spark_clrs.archive_db import PENDING_STATUSES, ArchiveDB, Candidate


@dataclasses.dataclass(frozen=True)
class ArchiveSettings:
  """Selection parameters (the archive flags of SearchConfig)."""

  num_islands: int = 4
  population_size: int = 100
  archive_size: int = 20
  migration_rate: float = 0.1
  exploration_ratio: float = 0.2
  exploitation_ratio: float = 0.7
  elite_selection_ratio: float = 0.1
  feature_dims: tuple[str, ...] = ("macs", "param_count")
  feature_bins: int = 10
  feature_octaves: float = 3.0  # Bins span 2**-octaves .. 2**octaves times the seed's value.

  @classmethod
  def from_config(cls, config: Any) -> ArchiveSettings:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{n: getattr(config, n) for n in names if hasattr(config, n)})

  @property
  def island_capacity(self) -> int:
    return math.ceil(self.population_size / self.num_islands)


@dataclasses.dataclass(frozen=True)
class Selection:
  """A sampled parent and how it was drawn (elite, exploitation or exploration)."""

  parent: Candidate
  island: int
  method: str


def _by_fitness(c: Candidate) -> tuple[float, int]:
  """Sort key: higher fitness first, then the earlier candidate (stable best-so-far)."""
  return (-(c.fitness if c.fitness is not None else -math.inf), c.id)


class Archive:
  """Candidates of one run plus the island / MAP-Elites state used to pick parents."""

  def __init__(self, path: str | pathlib.Path, settings: ArchiveSettings | None = None):
    self.settings = settings or ArchiveSettings()
    self.db = ArchiveDB(path)

  def close(self) -> None:
    self.db.close()

  # Recording ---------------------------------------------------------------
  def record_proposal(self, candidate_id: int, *, parent_id: int | None, island: int | None,
                      strategy: str, scope: Sequence[str] | None, directive: str | None,
                      decision: dict[str, Any], code: str | None,
                      changed_factors: Sequence[str] = (), entangled: bool | None = None,
                      llm_calls: Sequence[dict[str, Any]] = (), status: str = "proposed",
                      stage: str | None = None, reason: str | None = None) -> None:
    """Stores a new candidate and the LLM calls that produced it, atomically."""
    with self.db.transaction():
      self.db.insert_candidate(
          candidate_id=candidate_id, parent_id=parent_id, island=island, strategy=strategy,
          scope=scope, directive=directive, decision=decision, code=code,
          changed_factors=changed_factors, entangled=entangled, status=status, stage=stage,
          reason=reason)
      for call in llm_calls:
        self.db.insert_llm_call(candidate_id, call)

  def mark_evaluating(self, candidate_id: int) -> None:
    self.db.update_candidate(candidate_id, status="evaluating")

  def record_rejection(self, candidate_id: int, stage: str, reason: str,
                       metrics: dict[str, Any] | None = None) -> None:
    """A candidate stopped before training (a check failed, or it was entangled)."""
    self.db.update_candidate(candidate_id, status="rejected", stage=stage, reason=reason,
                             metrics=metrics)

  def record_failure(self, candidate_id: int, stage: str, reason: str,
                     metrics: dict[str, Any] | None = None) -> None:
    """A candidate passed the checks but its training or evaluation failed."""
    self.db.update_candidate(candidate_id, status="failed", stage=stage, reason=reason,
                             metrics=metrics)

  def record_result(self, candidate_id: int, metrics: dict[str, Any], fitness: float,
                    features: dict[str, float]) -> Candidate:
    """Stores an evaluated candidate and places it on its island (all islands for a root)."""
    with self.db.transaction():
      self.db.update_candidate(candidate_id, status="evaluated", stage="ok", reason="",
                               metrics=metrics, fitness=fitness, features=features)
      candidate = self.db.get(candidate_id)
      assert candidate is not None
      if not candidate.can_be_parent:
        return candidate
      if candidate.parent_id is None and self.db.get_meta("feature_reference") is None:
        self.db.set_meta("feature_reference", features)
      if candidate.parent_id is None or candidate.island is None:
        islands = range(self.settings.num_islands)
      else:
        islands = [candidate.island % self.settings.num_islands]
      for island in islands:
        self._place(island, candidate)
    return candidate

  # Queries -----------------------------------------------------------------
  def get(self, candidate_id: int) -> Candidate | None:
    return self.db.get(candidate_id)

  def candidates(self) -> list[Candidate]:
    return self.db.candidates()

  def pending(self) -> list[Candidate]:
    """Candidates proposed but not finished (e.g. evaluating when the search was killed)."""
    marks = ",".join("?" * len(PENDING_STATUSES))
    return self.db.candidates(f"status IN ({marks})", PENDING_STATUSES)

  def parents(self) -> list[Candidate]:
    return [c for c in self.db.candidates("status = 'evaluated'") if c.can_be_parent]

  def best(self) -> Candidate | None:
    """The fittest evaluated candidate; ties go to the earliest (best-so-far only rises)."""
    pool = self.parents()
    return min(pool, key=_by_fitness) if pool else None

  def elites(self) -> list[Candidate]:
    """The ``archive_size`` fittest candidates, best first."""
    return sorted(self.parents(), key=_by_fitness)[:self.settings.archive_size]

  def island_members(self, island: int) -> list[Candidate]:
    ids = self.db.island_member_ids(island)
    return [c for c in (self.db.get(i) for i in ids) if c is not None]

  def grid(self, island: int) -> dict[tuple[int, ...], int]:
    """Occupied MAP-Elites cells of an island: cell -> candidate id."""
    return self.db.grid(island)

  def lineage(self, candidate_id: int, limit: int = 10) -> list[Candidate]:
    """Recent finished proposals made from ``candidate_id`` or its ancestors, oldest first.

    This is the lineage's history a router reads: which scopes were tried from
    this line of programs and how each attempt ended.
    """
    ancestors: list[int] = []
    cursor = self.db.get(candidate_id)
    while cursor is not None:
      ancestors.append(cursor.id)
      cursor = self.db.get(cursor.parent_id) if cursor.parent_id is not None else None
    marks = ",".join("?" * len(ancestors))
    pending = ",".join("?" * len(PENDING_STATUSES))
    children = self.db.candidates(f"parent_id IN ({marks}) AND status NOT IN ({pending})",
                                  [*ancestors, *PENDING_STATUSES], order="id DESC")
    return list(reversed(children[:limit]))

  # Selection ---------------------------------------------------------------
  def sample_parent(self, island: int, rng: np.random.Generator) -> Selection:
    """Draws a parent for an iteration working on ``island``."""
    island %= self.settings.num_islands
    members = sorted((c for c in self.island_members(island) if c.can_be_parent),
                     key=lambda c: c.id)
    if not members:  # Only before the seed is evaluated, or if an island lost everyone.
      members = self.parents()
    if not members:
      raise LookupError("the archive has no evaluated candidate to sample a parent from; "
                        "evaluate the seed program first")
    s = self.settings
    draw = rng.random()
    if draw < s.elite_selection_ratio:
      return Selection(min(members, key=_by_fitness), island, "elite")
    if draw < s.elite_selection_ratio + s.exploitation_ratio:
      elites = sorted(self.elites(), key=lambda c: c.id)
      return Selection(elites[int(rng.integers(len(elites)))], island, "exploitation")
    occupants = sorted(set(self.grid(island).values()))
    pool = [c for c in members if c.id in occupants] or members
    return Selection(pool[int(rng.integers(len(pool)))], island, "exploration")

  def migrate(self, iteration: int) -> list[tuple[int, int, int]]:
    """Ring migration for ``iteration``; runs at most once per iteration (safe on resume).

    Returns:
      (source island, destination island, candidate id) for every program copied.
    """
    s = self.settings
    moves: list[tuple[int, int, int]] = []
    with self.db.transaction():
      if self.db.get_meta("last_migration", -1) >= iteration:
        return moves
      if s.num_islands > 1:
        snapshot = [sorted((c for c in self.island_members(i) if c.can_be_parent),
                           key=_by_fitness) for i in range(s.num_islands)]
        for source, members in enumerate(snapshot):
          target = (source + 1) % s.num_islands
          present = set(self.db.island_member_ids(target))
          count = max(1, math.ceil(s.migration_rate * len(members))) if members else 0
          for migrant in members[:count]:
            if migrant.id not in present:
              self._place(target, migrant)
              moves.append((source, target, migrant.id))
      self.db.set_meta("last_migration", iteration)
    return moves

  def reset_islands(self, iteration: int, fraction: float,
                    rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """FunSearch's island reset for ``iteration``; at most once per iteration.

    The ``fraction`` of islands with the lowest best fitness are emptied, and each
    restarts from the best program of a randomly chosen surviving island.

    Returns:
      (reset island, surviving island it was seeded from, program id) per reset.
    """
    s = self.settings
    resets: list[tuple[int, int, int]] = []
    with self.db.transaction():
      if self.db.get_meta("last_reset", -1) >= iteration:
        return resets
      if s.num_islands > 1:
        bests = {}
        for i in range(s.num_islands):
          members = [c for c in self.island_members(i) if c.can_be_parent]
          bests[i] = min(members, key=_by_fitness) if members else None
        order = sorted(range(s.num_islands),
                       key=lambda i: (bests[i].fitness if bests[i] else -math.inf, i))
        count = min(s.num_islands - 1, max(1, int(fraction * s.num_islands)))
        losers, survivors = order[:count], sorted(order[count:])
        for island in losers:
          source = survivors[int(rng.integers(len(survivors)))]
          founder = bests[source]
          self.db.clear_island(island)
          if founder is not None:
            self._place(island, founder)
            resets.append((island, source, founder.id))
      self.db.set_meta("last_reset", iteration)
    return resets

  # Internals ---------------------------------------------------------------
  def cell(self, features: dict[str, float]) -> tuple[int, ...]:
    """MAP-Elites cell of a feature vector (log2 ratio to the seed, clipped to the grid)."""
    s = self.settings
    reference = self.db.get_meta("feature_reference") or {}
    out = []
    for dim in s.feature_dims:
      value = float(features.get(dim, 0.0) or 0.0)
      ref = float(reference.get(dim, 0.0) or 0.0)
      x = math.log2(value + 1.0) - math.log2(ref + 1.0)
      fraction = (x + s.feature_octaves) / (2.0 * s.feature_octaves)
      out.append(min(s.feature_bins - 1, max(0, math.floor(fraction * s.feature_bins))))
    return tuple(out)

  def _place(self, island: int, candidate: Candidate) -> None:
    """Adds a candidate to an island, its MAP-Elites cell, and trims the island."""
    self.db.add_member(island, candidate.id)
    cell = self.cell(candidate.features)
    grid = self.db.grid(island)
    occupant = self.db.get(grid[cell]) if cell in grid else None
    if occupant is None or _by_fitness(candidate) < _by_fitness(occupant):
      self.db.set_cell(island, cell, candidate.id)
    self._trim(island)

  def _trim(self, island: int) -> None:
    """Evicts the least fit members beyond the island's capacity.

    The island's best and the MAP-Elites cell holders are kept when possible;
    an evicted cell holder frees its cell.
    """
    members = sorted(self.island_members(island), key=_by_fitness)
    excess = len(members) - self.settings.island_capacity
    if excess <= 0:
      return
    grid = self.db.grid(island)
    holders = set(grid.values())
    best = members[0].id
    order = ([c for c in reversed(members) if c.id not in holders and c.id != best] +
             [c for c in reversed(members) if c.id in holders and c.id != best])
    for victim in order[:excess]:
      self.db.remove_member(island, victim.id)
      for cell, holder in grid.items():
        if holder == victim.id:
          self.db.delete_cell(island, cell)
