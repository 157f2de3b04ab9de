"""Best so far and gain over the parent: the one place they are decided.

The console's ``NEW BEST``, the best-so-far curve of the plots and the viewer, the
summary's best program, the per-scope gains and the outcome rows the prompts read all
come from here:

* :func:`decide` compares a newly evaluated candidate with the best so far by the paired
  difference of :mod:`spark_clrs.evaluation.statistics`; only a clear gain (the 95%
  interval's lower bound above 0) makes it the new best. The decision is stored with the
  candidate (``Candidate.comparison``) when it is recorded, so the curve replays exactly
  what the console said.
* :func:`best_so_far` replays those decisions in the order candidates finished; a
  candidate recorded before decisions were stored (an older archive) is decided on the
  fly by the same rule, and :func:`undecided` lists them so a resumed search stores them.
* :func:`gain` is the gain over the parent: the same paired difference, child − parent.

The seed program (candidate 0) is the first best; its repeated trainings give the
training-seed spread (:func:`seed_spread`) that single-seed candidates borrow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from spark_clrs.evaluation import noise, statistics
from spark_clrs.evaluation.statistics import Difference, Estimate, Samples, SeedSpread
from spark_clrs.search.archive_db import PENDING_STATUSES, Candidate

FITNESS = noise.FITNESS
SEED_ID = 0
DUPLICATE_STAGE = "duplicate"


def seed_spread(candidates: Sequence[Candidate] | Candidate | None,
                name: str = FITNESS) -> SeedSpread | None:
  """The training-seed spread of the seed program's ``name`` (``None`` with one seed)."""
  if isinstance(candidates, Candidate) or candidates is None:
    seed = candidates
  else:
    seed = next((c for c in candidates if c.id == SEED_ID), None)
  if seed is None or not seed.can_be_parent:
    return None
  return noise.spread_of(seed.metrics, name)


def interval(c: Candidate | None, spread: SeedSpread | None, name: str = FITNESS) -> Estimate:
  """A candidate's metric with its interval: as stored at recording, else computed now."""
  if c is None:
    return Estimate(None)
  stored = c.metrics.get(name + noise.INTERVAL_SUFFIX)
  if isinstance(stored, dict) and stored.get("value") is not None:
    return Estimate.from_json(stored)
  return noise.compute(c.metrics, name, spread)


def is_contender(c: Candidate) -> bool:
  """Evaluated with a finite fitness and not a duplicate (a twin's metrics are not news)."""
  return c.can_be_parent and c.stage != DUPLICATE_STAGE


def gain(child: Candidate, parent: Candidate | None,
         spread: SeedSpread | None) -> Difference | None:
  """The child's gain over its parent (paired difference child − parent), if both scored."""
  if parent is None or not child.can_be_parent or not parent.can_be_parent:
    return None
  return statistics.difference(Samples.of(child.metrics, FITNESS),
                               Samples.of(parent.metrics, FITNESS), spread)


def decide(metrics: dict[str, Any], best: Candidate | None,
           spread: SeedSpread | None) -> dict[str, Any]:
  """The comparison stored with a new candidate: against the best so far, and its verdict.

  ``new_best`` is True for the first candidate (no best yet) and for a clear gain.
  """
  if best is None:
    return {"against": None, "new_best": True, "verdict": statistics.BETTER,
            "text": "first evaluated program"}
  d = statistics.difference(Samples.of(metrics, FITNESS), Samples.of(best.metrics, FITNESS),
                            spread)
  if d is None:
    return {"against": best.id, "new_best": False, "verdict": statistics.TIE,
            "text": "no fitness to compare"}
  return {"against": best.id, **d.to_json(), "new_best": d.verdict == statistics.BETTER,
          "text": noise.verdict_text(d, _name(best))}


def _name(c: Candidate) -> str:
  return "the seed" if c.id == SEED_ID else f"candidate {c.id}"


def record_order(candidates: Sequence[Candidate]) -> list[Candidate]:
  """Finished candidates in the order they were recorded (finish time, then id)."""
  finished = [c for c in candidates if c.status not in PENDING_STATUSES]
  return sorted(finished, key=lambda c: (c.finished_at or 0.0, c.id))


@dataclasses.dataclass(frozen=True)
class Step:
  """The best so far after one finished candidate.

  Attributes:
    index: finished candidates so far, this one included, minus one (the seed is 0).
    candidate_id: the candidate that finished.
    best_id: the best so far after it (``None`` before anything was evaluated).
    best_fitness: that best's fitness.
    new_best: whether this candidate became the best.
  """

  index: int
  candidate_id: int
  best_id: int | None
  best_fitness: float | None
  new_best: bool


def _replay(candidates: Sequence[Candidate]
            ) -> tuple[list[Step], dict[int, dict[str, Any]]]:
  """The steps, and the decisions computed now for contenders recorded without one."""
  spread = seed_spread(candidates)
  steps: list[Step] = []
  computed: dict[int, dict[str, Any]] = {}
  best: Candidate | None = None
  for i, c in enumerate(record_order(candidates)):
    new = False
    if is_contender(c):
      decision = c.comparison or decide(c.metrics, best, spread)
      if not c.comparison:
        computed[c.id] = decision
      new = bool(decision.get("new_best")) or best is None
      if new:
        best = c
    steps.append(Step(i, c.id, None if best is None else best.id,
                      None if best is None else best.fitness, new))
  return steps, computed


def best_so_far(candidates: Sequence[Candidate]) -> list[Step]:
  """One :class:`Step` per finished candidate, in recording order."""
  return _replay(candidates)[0]


def current_best(candidates: Sequence[Candidate]) -> Candidate | None:
  """The best so far: the last candidate a paired decision made the best."""
  steps = best_so_far(candidates)
  if not steps or steps[-1].best_id is None:
    return None
  return next(c for c in candidates if c.id == steps[-1].best_id)


def undecided(candidates: Sequence[Candidate]) -> dict[int, dict[str, Any]]:
  """Decisions for contenders recorded without one (older archives), as the replay makes them."""
  return _replay(candidates)[1]


__all__ = ["SEED_ID", "Step", "best_so_far", "current_best", "decide", "gain", "interval",
           "is_contender", "record_order", "seed_spread", "undecided"]
