"""The search archive: islands, MAP-Elites cells, elites and parent sampling (SPEC §5).

The archive stores what the search produced and chooses the next parent; it
never computes an evaluation metric and never calls an LLM (the only thing it
measures is a MAP-Elites coordinate on a program's text, when a strategy asks for
code features). Storage (SQLite, WAL) is in archive_db.py; this module is the
selection policy:

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
:meth:`Archive.configure`): OpenEvolve's three-way draw on an island and its grid over
code length and code diversity (binned min-max), FunSearch's uniformly drawn island and
clusters of equal (quantised) score sampled with replacement by a Boltzmann
distribution with its temperature schedule, shorter programs favoured inside a cluster,
EoH's rank-based selection and EvoPrompting's uniform draw from one fixed-size
population that changes only between generations (cut back by the strategy's score,
EoH keeping one program per score), migration to both neighbours (migrants staying
put) or none. The samplers themselves are pure functions in samplers.py. The archive
only reads the options' fields; it never knows which strategy set them.

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

from spark_clrs.programs import code_features
from spark_clrs.search import samplers
from spark_clrs.search.archive_db import PENDING_STATUSES, ArchiveDB, Candidate
from spark_clrs.search.samplers import score_signature  # noqa: F401  (re-exported)

DUPLICATE_STAGE = "duplicate"
SCORE_DECIMALS = 5  # Scores equal to this many decimals are one score (EoH).


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


@dataclasses.dataclass(frozen=True)
class Selection:
  """A sampled parent and how it was drawn (elite, exploitation, exploration, weighted,
  cluster, rank, uniform).

  ``companions`` are further programs the strategy's sampler drew with the parent (shown
  in the same prompt; a draw with replacement may repeat a program); empty for the
  default engine.
  """

  parent: Candidate
  island: int
  method: str
  companions: tuple[Candidate, ...] = ()


def _by_fitness(c: Candidate) -> tuple[float, int]:
  """Sort key: higher fitness first, then the earlier candidate (stable best-so-far)."""
  return (-(c.fitness if c.fitness is not None else -math.inf), c.id)


def _staging(island: int) -> int:
  """Where a generational island's children wait for their generation to close."""
  return -(island + 1)


class Archive:
  """Candidates of one run plus the island / MAP-Elites state used to pick parents."""

  def __init__(self, path: str | pathlib.Path, settings: ArchiveSettings | None = None,
               options: Any = None):
    self.settings = settings or ArchiveSettings()
    self.db = ArchiveDB(path)
    self.options = options

  def configure(self, options: Any) -> None:
    """Uses a strategy's ``EngineOptions`` (sampler, islands, population, features, ...)."""
    self.options = options

  def _option(self, name: str, default: Any) -> Any:
    value = getattr(self.options, name, None)
    return default if value is None else value

  @property
  def num_islands(self) -> int:
    """The islands in use: the strategy's own number, else ``--num_islands``."""
    return int(self._option("islands", self.settings.num_islands))

  @property
  def feature_dims(self) -> tuple[str, ...]:
    return tuple(self._option("feature_dims", self.settings.feature_dims))

  def score(self, c: Candidate) -> float:
    """The strategy's selection score (higher is better; the fitness by default)."""
    fn = self._option("score", None)
    value = fn(c.metrics) if fn is not None and c.fitness is not None else c.fitness
    return float(value) if value is not None and math.isfinite(value) else -math.inf

  def _key(self, c: Candidate) -> tuple[float, int]:
    """Sort key by :meth:`score`: best first, then the earlier candidate."""
    return (-self.score(c), c.id)

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
    """Stores an evaluated candidate and places it on its island (all islands for a root).

    A child of a generational strategy waits (staged) until its generation closes.
    """
    with self.db.transaction():
      features = {**features, **self._code_features(candidate_id)}
      self.db.update_candidate(candidate_id, status="evaluated", stage="ok", reason="",
                               metrics=metrics, fitness=fitness, features=features)
      candidate = self.db.get(candidate_id)
      assert candidate is not None
      if not candidate.can_be_parent:
        return candidate
      if candidate.parent_id is None and self.db.get_meta("feature_reference") is None:
        self.db.set_meta("feature_reference", features)
      self._widen_feature_range(features)
      if candidate.parent_id is None or candidate.island is None:
        for island in range(self.num_islands):
          self._place(island, candidate)
      elif self._option("generation", None):
        self.db.add_member(_staging(candidate.island % self.num_islands), candidate.id)
      else:
        self._place(candidate.island % self.num_islands, candidate)
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
    """Draws a parent for the next proposal, on ``island`` (or a uniformly drawn one)."""
    if self._option("island_choice", "cycle") == "uniform":
      island = int(rng.integers(self.num_islands))  # FunSearch: a random island per prompt.
    island %= self.num_islands
    self._close_generation()
    members = sorted((c for c in self.island_members(island) if c.can_be_parent),
                     key=lambda c: c.id)
    if not members:  # Only before the seed is evaluated, or if an island lost everyone.
      members = self.parents()
    if not members:
      raise LookupError("the archive has no evaluated candidate to sample a parent from; "
                        "evaluate the seed program first")
    sampler = self._option("sampler", "archive")
    draws = 1 + int(self._option("companions", 0))
    s = self.settings
    if sampler == "island":
      parent, method = samplers.island(members, self.elites(), rng,
                                       exploration=s.exploration_ratio,
                                       exploitation=s.exploitation_ratio)
      return Selection(parent, island, method)
    if sampler == "clusters":
      parent, companions = samplers.clusters(members, rng, draws=draws,
                                             step=self._option("cluster_step", None))
      return Selection(parent, island, "cluster", companions)
    if sampler == "rank":
      parent, companions = samplers.rank(members, rng, draws=draws, key=self._key)
      return Selection(parent, island, "rank", companions)
    if sampler == "uniform":
      parent, companions = samplers.uniform(members, rng, draws=draws, key=self._key)
      return Selection(parent, island, "uniform", companions)
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
    """Migration for ``iteration``; runs at most once per iteration (safe on resume).

    The options' ``migration`` says where: ``ring`` (the next island, the default),
    ``both`` (the next and the previous island, OpenEvolve) or ``none`` (FunSearch).
    With ``remigrate=False`` only an island's own programs (those proposed on it) leave
    it: a migrant never migrates again.

    Returns:
      (source island, destination island, candidate id) for every program copied.
    """
    s, n = self.settings, self.num_islands
    moves: list[tuple[int, int, int]] = []
    mode = self._option("migration", "ring")
    native_only = not self._option("remigrate", True)
    with self.db.transaction():
      if self.db.get_meta("last_migration", -1) >= iteration:
        return moves
      if n > 1 and mode != "none":
        snapshot = [sorted((c for c in self.island_members(i) if c.can_be_parent),
                           key=_by_fitness) for i in range(n)]
        for source, members in enumerate(snapshot):
          targets = [(source + 1) % n]
          if mode == "both" and (source - 1) % n not in targets:
            targets.append((source - 1) % n)
          count = max(1, math.ceil(s.migration_rate * len(members))) if members else 0
          migrants = [c for c in members[:count] if not native_only or (
              c.island is not None and c.island % n == source)]
          for target in targets:
            present = set(self.db.island_member_ids(target))
            for migrant in migrants:
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
    n = self.num_islands
    resets: list[tuple[int, int, int]] = []
    with self.db.transaction():
      if self.db.get_meta("last_reset", -1) >= iteration:
        return resets
      if n > 1:
        bests = {}
        for i in range(n):
          members = [c for c in self.island_members(i) if c.can_be_parent]
          bests[i] = min(members, key=_by_fitness) if members else None
        order = sorted(range(n), key=lambda i: (bests[i].fitness if bests[i] else -math.inf, i))
        count = min(n - 1, max(1, int(fraction * n)))
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
    """MAP-Elites cell of a feature vector.

    Dimensions measured on the code are binned between the smallest and largest value
    seen so far (OpenEvolve's min-max scaling); the others by their log2 ratio to the
    seed's value, clipped to the grid.
    """
    s = self.settings
    reference = self.db.get_meta("feature_reference") or {}
    ranges = self.db.get_meta("feature_range") or {}
    out = []
    for dim in self.feature_dims:
      value = float(features.get(dim, 0.0) or 0.0)
      if dim in code_features.FEATURES:
        low, high = ranges.get(dim, (value, value))
        fraction = 0.5 if high <= low else (value - low) / (high - low)
      else:
        ref = float(reference.get(dim, 0.0) or 0.0)
        x = math.log2(value + 1.0) - math.log2(ref + 1.0)
        fraction = (x + s.feature_octaves) / (2.0 * s.feature_octaves)
      out.append(min(s.feature_bins - 1, max(0, math.floor(fraction * s.feature_bins))))
    return tuple(out)

  def _code_features(self, candidate_id: int) -> dict[str, float]:
    """The code-measured dimensions among :attr:`feature_dims` for one candidate.

    ``diversity`` is measured against the first evaluated programs of the run (at most
    ``code_features.REFERENCE_SIZE``), a reference set that stops changing once full.
    """
    dims = [d for d in self.feature_dims if d in code_features.FEATURES]
    c = self.db.get(candidate_id)
    if not dims or c is None or not c.code:
      return {}
    references = []
    if "diversity" in dims:
      earlier = sorted((p for p in self.parents() if p.id != candidate_id and p.code),
                       key=lambda p: p.id)
      references = [p.code for p in earlier[:code_features.REFERENCE_SIZE]]
    return {d: code_features.measure(d, c.code, references) for d in dims}

  def _widen_feature_range(self, features: dict[str, float]) -> None:
    """Widens the seen range of the code-measured dimensions (for :meth:`cell`)."""
    ranges = dict(self.db.get_meta("feature_range") or {})
    changed = False
    for dim in (d for d in self.feature_dims if d in code_features.FEATURES and d in features):
      value = float(features[dim])
      low, high = ranges.get(dim, (value, value))
      new = [min(low, value), max(high, value)]
      changed |= new != list(ranges.get(dim, ()))
      ranges[dim] = new
    if changed:
      self.db.set_meta("feature_range", ranges)

  def _close_generation(self) -> None:
    """Closes the generations that ended before the next proposal (generational engines).

    The next proposal is candidate ``max id + 1``; with ``generation = G`` it belongs to
    generation ``(id - 1) // G``, whose parents come from the population once the
    children of every earlier generation have joined it. A child still training when
    its generation closes joins at the next close.
    """
    size = self._option("generation", None)
    if not size:
      return
    upcoming = (self.db.max_candidate_id() or 0) + 1
    bound = ((upcoming - 1) // size) * size
    with self.db.transaction():
      if self.db.get_meta("generation_bound", 0) >= bound:
        return
      for island in range(self.num_islands):
        staged = [i for i in self.db.island_member_ids(_staging(island)) if i <= bound]
        for cid in staged:
          self.db.remove_member(_staging(island), cid)
          self._place(island, self.db.get(cid), trim=False)
        self._trim(island)
      self.db.set_meta("generation_bound", bound)

  def _place(self, island: int, candidate: Candidate, trim: bool = True) -> None:
    """Adds a candidate to an island, its MAP-Elites cell, and trims the island."""
    self.db.add_member(island, candidate.id)
    cell = self.cell(candidate.features)
    grid = self.db.grid(island)
    occupant = self.db.get(grid[cell]) if cell in grid else None
    if occupant is None or self._key(candidate) < self._key(occupant):
      self.db.set_cell(island, cell, candidate.id)
    if trim:
      self._trim(island)

  def _trim(self, island: int) -> None:
    """Evicts the least fit members beyond the island's capacity.

    With the default engine the island's best and the MAP-Elites cell holders are kept
    when possible; a fixed ``population`` is kept by :meth:`score` alone, first dropping
    every program whose score equals a better-ranked one's with ``distinct_scores``.
    An evicted cell holder frees its cell.
    """
    members = sorted(self.island_members(island), key=self._key)
    population = self._option("population", None)
    victims: list[Candidate] = []
    if self._option("distinct_scores", False):
      seen: set[float] = set()
      unique = []
      for c in members:
        score = round(self.score(c), SCORE_DECIMALS)
        (victims if score in seen else unique).append(c)
        seen.add(score)
      members = unique
    capacity = math.ceil(self.settings.population_size / self.num_islands)
    excess = len(members) - (population or capacity)
    if excess > 0:
      grid = self.db.grid(island)
      holders = set(grid.values()) if population is None else set()
      best = members[0].id
      order = ([c for c in reversed(members) if c.id not in holders and c.id != best] +
               [c for c in reversed(members) if c.id in holders and c.id != best])
      victims += order[:excess]
    if not victims:
      return
    grid = self.db.grid(island)
    for victim in victims:
      self.db.remove_member(island, victim.id)
      for cell, holder in grid.items():
        if holder == victim.id:
          self.db.delete_cell(island, cell)
