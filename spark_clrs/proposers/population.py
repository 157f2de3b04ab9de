"""Population context for baseline strategies: archived programs beside the parent.

OpenEvolve shows top and diverse programs, EvoPrompting crosses over several parents,
FunSearch and EoH sample from the parent's island. A strategy states what it wants as a
:class:`~spark_clrs.proposers.base.ContextRequest`; the controller calls
:func:`inspirations` with the archive and attaches the result to the parent as
``ParentInfo.inspirations``. Selection here is deterministic (no rng draw), so adding
context never changes the random stream the controller and proposers share.

The other half, :func:`ranked` and :func:`sample_ranked`, is the proposer side: ordering
and drawing from parent + inspirations when the prompt is built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from spark_clrs.proposers.base import ContextRequest, ParentInfo


class _Candidate(Protocol):
  id: int
  code: str | None
  metrics: dict[str, Any]
  decision: dict[str, Any]
  fitness: float | None
  features: dict[str, float]

  @property
  def can_be_parent(self) -> bool: ...


class _Archive(Protocol):
  def parents(self) -> list[Any]: ...
  def island_members(self, island: int) -> list[Any]: ...
  def grid(self, island: int) -> dict[tuple[int, ...], int]: ...
  def cell(self, features: dict[str, float]) -> tuple[int, ...]: ...
  def get(self, candidate_id: int) -> Any: ...


def _fitness_key(c: _Candidate) -> tuple[float, int]:
  """Best first, earlier candidate first on ties (as the archive orders elites)."""
  return (-(c.fitness if c.fitness is not None else -math.inf), c.id)


def as_info(c: _Candidate, source: str, cell: tuple[int, ...] | None = None) -> ParentInfo:
  """One archived candidate as prompt context."""
  return ParentInfo(program_id=str(c.id), text=c.code or "", metrics=dict(c.metrics),
                    decision=dict(c.decision), source=source, cell=cell)


def inspirations(archive: _Archive, parent: _Candidate, island: int,
                 request: ContextRequest) -> tuple[ParentInfo, ...]:
  """The programs ``request`` asks for, from ``archive``, never including ``parent``.

  Args:
    archive: the run's ``spark_clrs.search.archive.Archive``.
    parent: the sampled parent candidate.
    island: the island the parent was sampled for.
    request: the proposer's ``context_request``.

  Returns:
    ``top`` programs (best first), then ``diverse`` ones (farthest cell first), then
    ``island`` ones (best first); a program appears once among these three groups, under
    its first. Then ``population`` members (best first), which may repeat them.
  """
  if request.empty:
    return ()
  taken = {parent.id}
  out: list[ParentInfo] = []

  def usable(c: Any) -> bool:
    return c is not None and c.id not in taken and c.can_be_parent and bool(c.code)

  if request.top:
    best = [c for c in sorted(archive.parents(), key=_fitness_key) if usable(c)]
    for c in best[:request.top]:
      taken.add(c.id)
      out.append(as_info(c, "top"))
  if request.diverse:
    home = archive.cell(parent.features)
    holders = []
    for cell, cid in archive.grid(island).items():
      c = archive.get(cid)
      if usable(c) and tuple(cell) != tuple(home):
        distance = sum(abs(a - b) for a, b in zip(cell, home, strict=True))
        holders.append((-distance, _fitness_key(c), tuple(cell), c))
    for _, _, cell, c in sorted(holders, key=lambda h: h[:2])[:request.diverse]:
      taken.add(c.id)
      out.append(as_info(c, "diverse", cell))
  if request.island:
    members = sorted((c for c in archive.island_members(island) if usable(c)), key=_fitness_key)
    for c in members[:request.island]:
      taken.add(c.id)
      out.append(as_info(c, "island"))
  if request.population:
    members = sorted((c for c in archive.island_members(island)
                      if c is not None and c.id != parent.id and c.can_be_parent and c.code),
                     key=_fitness_key)
    out.extend(as_info(c, "population") for c in members[:request.population])
  return tuple(out)


def ranked(programs: Sequence[ParentInfo]) -> list[ParentInfo]:
  """Programs by fitness, best first (unevaluated last), without repeated ids."""
  unique: dict[str, ParentInfo] = {}
  for p in programs:
    unique.setdefault(p.program_id, p)
  return sorted(unique.values(),
                key=lambda p: -(p.fitness if p.fitness is not None else -math.inf))


def sample_ranked(pool: Sequence[ParentInfo], k: int, rng: np.random.Generator,
                  *, temperature: float | None = None) -> list[ParentInfo]:
  """Draws up to ``k`` distinct programs of ``pool`` (kept in pool order).

  With ``temperature`` the draw is a softmax over fitness (FunSearch's sampling);
  without it, uniform.
  """
  if k <= 0 or not pool:
    return []
  k = min(k, len(pool))
  if temperature is None:
    p = None
  else:
    scores = np.array([p.fitness if p.fitness is not None else 0.0 for p in pool], dtype=float)
    logits = (scores - scores.max()) / max(temperature, 1e-9)
    weights = np.exp(logits)
    p = weights / weights.sum()
    if np.count_nonzero(p) < k:  # Too peaked to draw k distinct programs.
      p = None
  chosen = sorted(rng.choice(len(pool), size=k, replace=False, p=p).tolist())
  return [pool[i] for i in chosen]


__all__ = ["as_info", "inspirations", "ranked", "sample_ranked"]
