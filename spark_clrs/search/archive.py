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

A strategy may ask for another engine (``proposers.options.EngineOptions``, set with
:meth:`Archive.configure`): island-local elites (OpenEvolve), FunSearch's clusters of
equal score sampled by a Boltzmann distribution with its temperature schedule and
shorter programs favoured inside a cluster, EoH's rank-based selection over a
fixed-size population, migration to both neighbours or none. The archive only reads
the options' fields; it never knows which strategy set them.

Duplicates (a child whose AST equals an archived program's) are stored with that
program's metrics and stage ``duplicate``; they are never parents and never join an
island, so no population holds the same program twice.

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

from spark_clrs.search.archive_db import PENDING_STATUSES, ArchiveDB, Candidate

# FunSearch's programs database (Romera-Paredes et al. 2023): cluster sampling
# temperature T = T_INIT * (1 - (n mod PERIOD) / PERIOD), n = programs on the island;
# inside a cluster, softmax(-normalised length) at temperature 1.
CLUSTER_TEMPERATURE_INIT = 0.1
CLUSTER_TEMPERATURE_PERIOD = 30_000
DUPLICATE_STAGE = "duplicate"


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
  """A sampled parent and how it was drawn (elite, exploitation, exploration, cluster, rank).

  ``companions`` are further programs the strategy's sampler drew with the parent (shown
  in the same prompt); empty for the default engine.
  """

  parent: Candidate
  island: int
  method: str
  companions: tuple[Candidate, ...] = ()


def _by_fitness(c: Candidate) -> tuple[float, int]:
  """Sort key: higher fitness first, then the earlier candidate (stable best-so-far)."""
  return (-(c.fitness if c.fitness is not None else -math.inf), c.id)


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
  z = (logits - logits.max()) / max(temperature, 1e-9)
  w = np.exp(z)
  return w / w.sum()


def score_signature(c: Candidate) -> tuple[float, ...]:
  """FunSearch's cluster key: the scores per training seed (the fitness with one seed)."""
  per_seed = c.metrics.get("ood_val_acc_per_seed")
  values = per_seed if isinstance(per_seed, list) and per_seed else [c.fitness]
  return tuple(round(float(v), 6) for v in values)


class Archive:
  """Candidates of one run plus the island / MAP-Elites state used to pick parents."""

  def __init__(self, path: str | pathlib.Path, settings: ArchiveSettings | None = None,
               options: Any = None):
    self.settings = settings or ArchiveSettings()
    self.db = ArchiveDB(path)
    self.options = options

  def configure(self, options: Any) -> None:
    """Uses a strategy's ``EngineOptions`` (sampler, companions, migration, population)."""
    self.options = options

  def _option(self, name: str, default: Any) -> Any:
    value = getattr(self.options, name, None)
    return default if value is None else value

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

  def record_duplicate(self, candidate_id: int, original: Candidate) -> None:
    """A child whose program equals ``original``'s: its metrics, no training, no island."""
    self.db.update_candidate(
        candidate_id, status="evaluated", stage=DUPLICATE_STAGE,
        reason=f"same program as candidate {original.id} (AST equal); its metrics reused",
        metrics={**original.metrics, "duplicate_of": original.id, "train_seconds": 0.0},
        fitness=original.fitness, features=dict(original.features))

  def update_metrics(self, candidate_id: int, metrics: dict[str, Any]) -> Candidate:
    """Adds metrics measured later (OOD-test scored after selection); nothing else changes."""
    c = self.db.get(candidate_id)
    if c is None:
      raise KeyError(f"no candidate {candidate_id}")
    self.db.update_candidate(candidate_id, status=c.status, stage=c.stage, reason=c.reason,
                             metrics={**c.metrics, **metrics}, fitness=c.fitness,
                             features=c.features)
    return self.db.get(candidate_id)

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
    """Evaluated candidates with a finite fitness, duplicates left out."""
    return [c for c in self.db.candidates("status = 'evaluated'")
            if c.can_be_parent and c.stage != DUPLICATE_STAGE]

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
    sampler = self._option("sampler", "archive")
    if sampler == "clusters":
      return self._sample_clusters(island, members, rng)
    if sampler == "rank":
      return self._sample_rank(island, members, rng)
    s = self.settings
    draw = rng.random()
    if draw < s.elite_selection_ratio:
      return Selection(min(members, key=_by_fitness), island, "elite")
    if draw < s.elite_selection_ratio + s.exploitation_ratio:
      if sampler == "island":  # OpenEvolve: exploit the island's own elites.
        pool = sorted(members, key=_by_fitness)[:s.archive_size]
        elites = sorted(pool, key=lambda c: c.id)
      else:
        elites = sorted(self.elites(), key=lambda c: c.id)
      return Selection(elites[int(rng.integers(len(elites)))], island, "exploitation")
    occupants = sorted(set(self.grid(island).values()))
    pool = [c for c in members if c.id in occupants] or members
    return Selection(pool[int(rng.integers(len(pool)))], island, "exploration")

  def _sample_clusters(self, island: int, members: list[Candidate],
                       rng: np.random.Generator) -> Selection:
    """FunSearch: 1 + companions clusters by Boltzmann over score, a short program in each.

    Clusters group the island's programs by :func:`score_signature`; a cluster's score
    is its programs' fitness. The drawn programs are sorted by ascending score and the
    best becomes the parent (the version the prompt asks the model to improve).
    """
    clusters: dict[tuple[float, ...], list[Candidate]] = {}
    for c in members:
      clusters.setdefault(score_signature(c), []).append(c)
    keys = sorted(clusters, key=lambda k: (sum(k) / len(k), k))
    scores = np.array([sum(k) / len(k) for k in keys], dtype=float)
    period = CLUSTER_TEMPERATURE_PERIOD
    temperature = CLUSTER_TEMPERATURE_INIT * (1 - (len(members) % period) / period)
    k = min(len(keys), 1 + int(self._option("companions", 0)))
    picked = rng.choice(len(keys), size=k, replace=False, p=_softmax(scores, temperature))
    chosen = []
    for i in sorted(int(j) for j in picked):
      programs = sorted(clusters[keys[i]], key=lambda c: c.id)
      lengths = np.array([len(c.code or "") for c in programs], dtype=float)
      normalised = (lengths - lengths.min()) / (lengths.max() + 1e-6)
      chosen.append(programs[int(rng.choice(len(programs), p=_softmax(-normalised, 1.0)))])
    chosen.sort(key=lambda c: (c.fitness, -c.id))
    return Selection(chosen[-1], island, "cluster", tuple(chosen[:-1]))

  def _sample_rank(self, island: int, members: list[Candidate],
                   rng: np.random.Generator) -> Selection:
    """EoH: 1 + companions draws (with replacement) with p(rank r) ∝ 1 / (r + 1 + N)."""
    ranked = sorted(members, key=_by_fitness)
    weights = np.array([1.0 / (r + 1 + len(ranked)) for r in range(len(ranked))])
    draws = rng.choice(len(ranked), size=1 + int(self._option("companions", 0)), replace=True,
                       p=weights / weights.sum())
    parent = ranked[int(draws[0])]
    others: list[Candidate] = []
    for i in draws[1:]:
      c = ranked[int(i)]
      if c.id != parent.id and c not in others:
        others.append(c)
    return Selection(parent, island, "rank", tuple(others))

  def migrate(self, iteration: int) -> list[tuple[int, int, int]]:
    """Migration for ``iteration``; runs at most once per iteration (safe on resume).

    The options' ``migration`` says where: ``ring`` (the next island, the default),
    ``both`` (the next and the previous island, OpenEvolve) or ``none`` (FunSearch).

    Returns:
      (source island, destination island, candidate id) for every program copied.
    """
    s = self.settings
    moves: list[tuple[int, int, int]] = []
    mode = self._option("migration", "ring")
    with self.db.transaction():
      if self.db.get_meta("last_migration", -1) >= iteration:
        return moves
      if s.num_islands > 1 and mode != "none":
        snapshot = [sorted((c for c in self.island_members(i) if c.can_be_parent),
                           key=_by_fitness) for i in range(s.num_islands)]
        for source, members in enumerate(snapshot):
          targets = [(source + 1) % s.num_islands]
          if mode == "both" and (source - 1) % s.num_islands not in targets:
            targets.append((source - 1) % s.num_islands)
          count = max(1, math.ceil(s.migration_rate * len(members))) if members else 0
          for target in targets:
            present = set(self.db.island_member_ids(target))
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
    population = self._option("population", None)
    excess = len(members) - (population or self.settings.island_capacity)
    if excess <= 0:
      return
    grid = self.db.grid(island)
    holders = set(grid.values()) if population is None else set()  # EoH: fitness alone.
    best = members[0].id
    order = ([c for c in reversed(members) if c.id not in holders and c.id != best] +
             [c for c in reversed(members) if c.id in holders and c.id != best])
    for victim in order[:excess]:
      self.db.remove_member(island, victim.id)
      for cell, holder in grid.items():
        if holder == victim.id:
          self.db.delete_cell(island, cell)
