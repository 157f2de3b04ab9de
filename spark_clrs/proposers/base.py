"""The proposer interface: what the search controller hands a strategy, and what it gets back.

A proposer turns one parent program into one child program. The controller gives it
the parent (:class:`ParentInfo`), the search's past outcomes (:class:`ProposalHistory`)
and a seeded random generator; it returns a :class:`Proposal` holding the child text
(or the reason there is none), the scope it was allowed to edit, the directive, every
decision it took and every LLM call it made. Proposers never train, check or store
anything: the controller does that with the proposal.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spark_clrs.llm import LLMRecord


@dataclasses.dataclass(frozen=True)
class ProposerConfig:
  """Strategy settings (from the search flags).

  Attributes:
    task: CLRS algorithm name; selects the task card ``prompts/tasks/<task>.md``.
    sar_output: ``program`` (the rewriter returns the whole program, the paper's mode)
      or ``region`` (only the new body of the selected region).
    router_retries: re-asks after an unusable router reply before the bandit decides.
    ucb_c: exploration constant of the fallback bandit.
    lineage_window: lineage rows shown to the router.
    tried_window: tried directives shown to the refiner.
    scope_router: ``rc_sar``'s scope: ``all`` (every factor), ``random`` or ``bandit``.
    edit_format: ``openevolve``'s edits: ``diff`` (SEARCH/REPLACE blocks) or ``rewrite``.
  """

  task: str = "dfs"
  sar_output: str = "program"
  router_retries: int = 2
  ucb_c: float = 1.0
  lineage_window: int = 8
  tried_window: int = 12
  scope_router: str = "all"
  edit_format: str = "diff"


VERDICTS = ("better", "tie", "worse")  # Paired verdicts of search.standing / statistics.


@dataclasses.dataclass(frozen=True)
class Outcome:
  """One finished proposal, as later proposals see it.

  Attributes:
    iteration: the search iteration that made it.
    scope: the factors the proposal was allowed to edit (``None`` = unscoped).
    directive: the refiner directive, if any.
    feasible: whether the child passed every check (and was evaluated).
    stage: the rejecting stage (``parse``, ``scope``, ``entangled``, ``shape``, ...,
      ``proposal`` when no child was produced), ``"ok"`` when feasible.
    reason: one line explaining a rejection or failure.
    fitness: the child's selection fitness (``ood_val_acc``) when evaluated.
    parent_fitness: the parent's fitness.
    program_id: the child's id, if it has one.
    parent_id: the parent's id.
    gain: the paired difference with the parent (``search.standing.gain`` as JSON: ``diff``,
      its interval, ``verdict`` ``better`` | ``tie`` | ``worse``, ``text``), when known.
    new_best: whether the search announced the child as a new best (its paired decision
      against the best so far), when known.
  """

  iteration: int
  scope: tuple[str, ...] | None
  directive: str | None = None
  feasible: bool = False
  stage: str = "ok"
  reason: str | None = None
  fitness: float | None = None
  parent_fitness: float | None = None
  program_id: str | None = None
  parent_id: str | None = None
  gain: Mapping[str, Any] | None = None
  new_best: bool | None = None

  @classmethod
  def coerce(cls, row: Outcome | Mapping[str, Any]) -> Outcome:
    """Accepts an :class:`Outcome` or a dict with the same keys (extra keys ignored)."""
    if isinstance(row, Outcome):
      return row
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in row.items() if k in names}
    scope = values.get("scope")
    if isinstance(scope, str):
      values["scope"] = tuple(s for s in scope.split(",") if s)
    elif scope is not None:
      values["scope"] = tuple(scope)
    return cls(**values)

  @property
  def fitness_delta(self) -> float | None:
    if self.fitness is None or self.parent_fitness is None:
      return None
    return self.fitness - self.parent_fitness

  @property
  def verdict(self) -> str | None:
    """The paired verdict against the parent (``better``, ``tie``, ``worse``), if known."""
    verdict = (self.gain or {}).get("verdict") if self.feasible else None
    return verdict if verdict in VERDICTS else None

  @property
  def label(self) -> str:
    """``improved``, ``tie``, ``unchanged``, ``worse``, ``not evaluated`` or ``rejected (<stage>)``.

    With a paired verdict a child is ``improved`` only when clearly better than its
    parent and ``tie`` when the difference is within noise; without one, by the sign of
    the fitness change (``unchanged`` when equal).
    """
    if not self.feasible:
      return f"rejected ({self.stage})"
    delta = self.fitness_delta
    if delta is None:
      return "not evaluated"
    if self.verdict is not None:
      return {"better": "improved", "tie": "tie", "worse": "worse"}[self.verdict]
    return "improved" if delta > 0 else ("unchanged" if delta == 0 else "worse")

  @property
  def gained(self) -> float:
    """The gain credited to its scope: the fitness change when clearly better, else 0."""
    delta = self.fitness_delta
    if not self.feasible or delta is None or not math.isfinite(delta):
      return 0.0
    return max(0.0, delta) if self.verdict in (None, "better") else 0.0


@dataclasses.dataclass(frozen=True)
class Plateau:
  """How long the search has gone without a new best.

  Attributes:
    evaluations: finished proposals so far.
    since_best: proposals since the best fitness last strictly improved.
    best_fitness: the best fitness so far (``None`` before any evaluation).
  """

  evaluations: int
  since_best: int
  best_fitness: float | None


@dataclasses.dataclass(frozen=True)
class ProposalHistory:
  """Every finished proposal of the search so far, oldest first."""

  outcomes: tuple[Outcome, ...] = ()

  @classmethod
  def of(cls, rows: Sequence[Outcome | Mapping[str, Any]]) -> ProposalHistory:
    return cls(tuple(Outcome.coerce(r) for r in rows))

  def in_scope(self, scope: str) -> list[Outcome]:
    """Outcomes of proposals whose scope included ``scope``."""
    return [o for o in self.outcomes if o.scope and scope in o.scope]

  def plateau(self) -> Plateau:
    """The best moves where the search announced a new best (``Outcome.new_best``); for
    rows without that decision, on a higher fitness that is not a tie with the parent."""
    best: float | None = None
    since = 0
    for o in self.outcomes:
      if best is None and o.parent_fitness is not None:
        best = o.parent_fitness
      higher = o.feasible and o.fitness is not None and (best is None or o.fitness > best)
      new = o.new_best if o.new_best is not None else higher and o.verdict in (None, "better")
      if new and o.feasible and o.fitness is not None:
        best, since = o.fitness, 0
      else:
        since += 1
    return Plateau(evaluations=len(self.outcomes), since_best=since, best_fitness=best)

  def scope_gains(self, factors: Sequence[str]) -> dict[str, list[float]]:
    """Per factor, the gain of each proposal scoped to it (:attr:`Outcome.gained`).

    Rejected or unevaluated proposals, and ties within noise, gain 0, so a factor that
    keeps failing looks no better than one that keeps producing worse children.
    """
    gains: dict[str, list[float]] = {f: [] for f in factors}
    for o in self.outcomes:
      if o.scope and len(o.scope) == 1 and o.scope[0] in gains:
        gains[o.scope[0]].append(o.gained)
    return gains


# Why a program other than the parent is in a prompt (``ParentInfo.source``).
SOURCES = ("parent", "top", "diverse", "island", "population")

# Metrics a proposer may receive: the selection set (OOD-val, and in-distribution val) and
# the program's cost. The reported test metrics (``ood_acc``, its per-seed, per-graph and
# interval fields, anything ``test_*``) and run bookkeeping (timings, workdirs) are never
# handed to a proposer, so no prompt can show them and no strategy can select on them.
PROPOSER_METRICS = ("ood_val_acc", "val_acc", "param_count", "processor_param_count", "macs",
                    "macs_nb_nodes", "check_param_count", "check_macs")
PROPOSER_METRIC_PREFIXES = ("ood_val_acc_", "val_acc_")


def proposer_may_see(name: str) -> bool:
  """Whether metric ``name`` may reach a proposer (:data:`PROPOSER_METRICS` and their
  ``ood_val_acc_*`` / ``val_acc_*`` details)."""
  return name in PROPOSER_METRICS or name.startswith(PROPOSER_METRIC_PREFIXES)


@dataclasses.dataclass(frozen=True)
class ParentInfo:
  """The parent a proposal starts from (or another archived program shown with it).

  Attributes:
    program_id: its archive id.
    text: its full program text.
    metrics: its evaluation metrics a proposer may see (``ood_val_acc``, ``macs``, ...):
      on construction every metric :func:`proposer_may_see` refuses (``ood_acc`` and the
      other test metrics, timings) is dropped, whatever the caller passed.
    lineage: outcomes along its ancestry (the edits that led to it and failed
      attempts from its ancestors), oldest first; dicts are accepted too.
    decision: the decision recorded when it was proposed (e.g. EoH's ``thought``).
    source: ``parent``, or why the controller added it to ``inspirations``: ``top``
      (fittest overall), ``diverse`` (another MAP-Elites cell of the parent's island),
      ``island`` (a member of the parent's island, or a program the strategy's sampler
      drew with the parent) or ``population`` (the parent island's members, for a
      strategy that checks its child against them; not meant for the prompt).
    cell: its MAP-Elites cell on the parent's island, when known.
    inspirations: other archived programs for population-based strategies, as asked
      for by :attr:`Proposer.context_request`; empty when none were supplied.
  """

  program_id: str
  text: str
  metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  lineage: Sequence[Outcome | Mapping[str, Any]] = ()
  decision: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  source: str = "parent"
  cell: tuple[int, ...] | None = None
  inspirations: Sequence[ParentInfo] = ()

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"ParentInfo.source={self.source!r}; use one of {SOURCES}")
    object.__setattr__(self, "metrics", {k: v for k, v in dict(self.metrics).items()
                                         if proposer_may_see(k)})

  def lineage_outcomes(self) -> list[Outcome]:
    return [Outcome.coerce(r) for r in self.lineage]

  @property
  def fitness(self) -> float | None:
    """``ood_val_acc`` when it is a finite number, else ``None``."""
    value = self.metrics.get("ood_val_acc")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      return None
    return float(value)

  def from_source(self, source: str) -> list[ParentInfo]:
    """The inspirations the controller added for ``source`` (``top``, ``diverse``, ``island``)."""
    return [p for p in self.inspirations if p.source == source]


@dataclasses.dataclass(frozen=True)
class ContextRequest:
  """Which archived programs besides the parent a strategy wants in its prompt.

  The controller satisfies it from the archive (``proposers.population.inspirations``)
  and passes them as ``ParentInfo.inspirations``; the parent itself is never repeated.

  Attributes:
    top: up to this many of the fittest evaluated programs of the whole run, best first.
    diverse: up to this many elites of the parent island's MAP-Elites cells, those farthest
      (in cells) from the parent's own cell first, none of them a ``top`` program.
    island: up to this many of the fittest members of the parent's island.
    population: up to this many members of the parent's island, fittest first, as
      source ``population`` (EoH checks a child against its population); these may
      repeat programs of the other groups.
  """

  top: int = 0
  diverse: int = 0
  island: int = 0
  population: int = 0

  def __post_init__(self):
    for name in ("top", "diverse", "island", "population"):
      if getattr(self, name) < 0:
        raise ValueError(f"ContextRequest.{name} must be >= 0, got {getattr(self, name)}")

  @property
  def empty(self) -> bool:
    return not (self.top or self.diverse or self.island or self.population)


@dataclasses.dataclass(frozen=True)
class IslandReset:
  """A periodic island reset the strategy asks the controller for (FunSearch).

  Every ``interval`` proposals (``interval`` x the number of islands with
  ``per_island``, so that each island has received ``interval`` proposals on average
  since the last reset), the ``fraction`` of islands whose best fitness is lowest are
  emptied and each restarts from the best program of a randomly chosen surviving island.
  """

  interval: int
  fraction: float = 0.5
  per_island: bool = False

  def __post_init__(self):
    if self.interval < 1 or not 0.0 < self.fraction < 1.0:
      raise ValueError(f"IslandReset needs interval >= 1 and 0 < fraction < 1, got "
                       f"interval={self.interval}, fraction={self.fraction}")

  def period(self, islands: int = 1) -> int:
    """Proposals between two resets of a search with ``islands`` islands."""
    return self.interval * (max(1, islands) if self.per_island else 1)

  def due(self, iteration: int, islands: int = 1) -> bool:
    """Whether the reset runs after proposal ``iteration`` (1-based)."""
    return iteration > 0 and iteration % self.period(islands) == 0


@dataclasses.dataclass
class Proposal:
  """What one proposal produced.

  Attributes:
    child_text: the child program, ``None`` when no usable child came back.
    scope: the factors the child may differ in (``None`` = unscoped, e.g. free-form
      strategies); the controller's scope check enforces it.
    directive: the refinement directive given to the rewriter, if any.
    decision: how it was decided, e.g. ``{"scope_source": "llm" | "fallback", ...}``.
    calls: every LLM call made, in order.
    error: one line saying why there is no child (``None`` when there is one).
  """

  child_text: str | None
  scope: tuple[str, ...] | None
  directive: str | None = None
  decision: dict[str, Any] = dataclasses.field(default_factory=dict)
  calls: list[LLMRecord] = dataclasses.field(default_factory=list)
  error: str | None = None

  @property
  def ok(self) -> bool:
    return self.child_text is not None and self.error is None


class Proposer(abc.ABC):
  """A strategy that proposes one child per call.

  Attributes:
    name: the ``--strategy`` name.
    context_request: the archived programs it wants besides the parent (none by default).
    island_reset: the island reset it asks the controller to run, if any.
    compare_note: one paragraph for compare's notes: how the strategy departs from its
      source where a mechanism cannot be reproduced here (empty when it does not).
  """

  name: str = "proposer"
  context_request: ContextRequest = ContextRequest()
  island_reset: IslandReset | None = None
  compare_note: str = ""

  @abc.abstractmethod
  def propose(self, parent: ParentInfo, history: ProposalHistory,
              rng: np.random.Generator) -> Proposal:
    """Proposes one child of ``parent``; never raises for a bad LLM reply."""


__all__ = ["ContextRequest", "IslandReset", "Outcome", "PROPOSER_METRICS", "ParentInfo", "Plateau",
           "Proposal", "ProposalHistory", "Proposer", "ProposerConfig", "SOURCES", "VERDICTS",
           "proposer_may_see"]
