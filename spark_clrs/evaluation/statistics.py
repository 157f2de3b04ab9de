"""One definition of uncertainty (SPEC §5): a fitness, its interval, paired differences.

A program's fitness is the mean over its K training seeds of its OOD-val accuracy; each
seed's accuracy is the mean over the G graphs of the fixed OOD-val set. Two things move
it: the training seed (initialisation and data order) and which graphs the set happens to
hold. Its standard error combines both::

    se² = s²_seed / K + s²_graph / G

``s²_seed`` is the sample variance (ddof 1) of the K seed accuracies and ``s²_graph`` that
of the G per-graph accuracies averaged over the seeds. With one seed ``s²_seed`` cannot be
measured, so it is *borrowed* from the seed program, which a run trains with several seeds
before any proposal (:class:`SeedSpread`). The 95% interval is ``value ± t·se`` with the
degrees of freedom of the least-known term, so a seed variance measured on three trainings
is not taken as exact (t = 4.3 for its 2 degrees of freedom instead of 1.96).

Two programs scored on the same graphs are compared by their *paired* difference
``d = F_a − F_b``::

    se² = seed term + var_g(d_g) / G

where ``d_g`` is the per-graph difference of the seed-averaged accuracies (graph difficulty
cancels), and the seed term is ``var_s(D_s) / K`` when both were trained with the same
K >= 2 seeds (paired over seeds too), else ``v_a / K_a + v_b / K_b`` with each ``v``
measured (K >= 2) or borrowed. The seed term already holds the graph-by-seed interaction
that ``var_g(d_g)`` holds again, so the interval errs wide, never narrow. ``a`` is *better*
than ``b`` only when the interval's lower bound is above 0, *worse* when its upper bound is
below 0, and otherwise the two *tie* within noise: a program that differs from its parent
only by its random initialisation ties with it.

Per-graph accuracies come in the metrics as ``<metric>_per_graph`` (one row per training
seed, graphs in the set's order). Without them (archives written before per-graph scores) the
graph term is the evaluator's bootstrap half-width over graphs, ``(ci / 1.96)²`` per side,
unpaired. When nothing about the spread is known the interval is ``None`` and a decision
is the sign of the difference, and says so.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

LEVEL = 0.95
Z = 1.959963984540054  # Two-sided 95% normal quantile.
BETTER, TIE, WORSE = "better", "tie", "worse"


def is_number(value: Any) -> bool:
  """A finite int or float (a bool is not a number here): what a metric must be to count."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _number(value: Any) -> float | None:
  return float(value) if is_number(value) else None


def _variance(values: Sequence[float]) -> float:
  """Sample variance (ddof 1); needs at least two values."""
  mean = sum(values) / len(values)
  return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


@functools.lru_cache(maxsize=256)
def t_quantile(df: float | None) -> float:
  """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom (normal: None)."""
  if df is None or df > 1e6:
    return Z
  from scipy import special  # Lazy: scipy comes with JAX; importing it takes a second.

  return float(special.stdtrit(max(df, 1.0), 0.5 + LEVEL / 2))


@dataclasses.dataclass(frozen=True)
class Samples:
  """What one program's metrics say about one accuracy.

  Attributes:
    value: the accuracy (the mean over training seeds).
    per_seed: each training seed's accuracy.
    per_graph: per training seed, the accuracy of each graph (``None`` when not reported).
    bootstrap: the evaluator's 95% bootstrap half-width over graphs (the fallback).
    seeds: the training seeds, when the metrics name them.
  """

  value: float | None
  per_seed: tuple[float, ...] = ()
  per_graph: tuple[tuple[float, ...], ...] | None = None
  bootstrap: float | None = None
  seeds: tuple[int, ...] | None = None

  @classmethod
  def of(cls, metrics: Mapping[str, Any] | None, name: str) -> Samples:
    metrics = metrics or {}
    per_seed = metrics.get(f"{name}_per_seed")
    per_seed = tuple(v for v in (_number(x) for x in per_seed) if v is not None) \
        if isinstance(per_seed, (list, tuple)) else ()
    rows = metrics.get(f"{name}_per_graph")
    per_graph = None
    if isinstance(rows, (list, tuple)) and rows and all(
        isinstance(r, (list, tuple)) and r and len(r) == len(rows[0]) for r in rows):
      clean = tuple(tuple(_number(x) for x in r) for r in rows)
      if all(x is not None for r in clean for x in r):
        per_graph = clean
    seeds = metrics.get("seeds")
    seeds = tuple(int(s) for s in seeds) if isinstance(seeds, (list, tuple)) else None
    value = _number(metrics.get(name))
    if per_graph is not None and not per_seed:
      per_seed = tuple(sum(r) / len(r) for r in per_graph)
    if value is None and per_seed:
      value = sum(per_seed) / len(per_seed)
    return cls(value=value, per_seed=per_seed, per_graph=per_graph,
               bootstrap=_number(metrics.get(f"{name}_ci")), seeds=seeds)

  @property
  def k(self) -> int:
    """Training seeds behind the value (1 when only the value is known)."""
    if self.per_graph is not None:
      return len(self.per_graph)
    return len(self.per_seed) or (1 if self.value is not None else 0)

  @property
  def graphs(self) -> int | None:
    return len(self.per_graph[0]) if self.per_graph is not None else None

  def graph_means(self) -> list[float] | None:
    """Per graph, the accuracy averaged over the training seeds."""
    if self.per_graph is None:
      return None
    k = len(self.per_graph)
    return [sum(col) / k for col in zip(*self.per_graph, strict=True)]

  def seed_means(self) -> tuple[float, ...]:
    if self.per_graph is not None:
      return tuple(sum(r) / len(r) for r in self.per_graph)
    return self.per_seed


@dataclasses.dataclass(frozen=True)
class SeedSpread:
  """Training-seed variance of one accuracy, measured on a program trained with K >= 2 seeds.

  A single-seed fitness borrows it (the seed program's, measured at the start of a run).
  """

  variance: float
  seeds: int

  @classmethod
  def of(cls, samples: Samples) -> SeedSpread | None:
    means = samples.seed_means()
    return cls(_variance(means), len(means)) if len(means) >= 2 else None

  def to_json(self) -> dict[str, Any]:
    return {"variance": self.variance, "std": math.sqrt(self.variance), "seeds": self.seeds}


@dataclasses.dataclass(frozen=True)
class _Term:
  """One variance component of a mean: its variance, its degrees of freedom, its source."""

  variance: float
  df: float | None  # None: treated as known (normal).
  source: str


def _combine(terms: Sequence[_Term]) -> tuple[float, float | None]:
  """(standard error, degrees of freedom): the least-known term's df, which errs wide.

  Welch–Satterthwaite's df, computed from the estimated variances, is liberal when one
  term rests on two or three seeds (a small draw of that term raises the df and narrows
  the interval just when it is too narrow already: 3.4% instead of 2.5% false gains in
  simulation), so the smallest df of the terms is used instead.
  """
  total = sum(t.variance for t in terms)
  dfs = [t.df for t in terms if t.df is not None]
  return math.sqrt(max(total, 0.0)), (min(dfs) if dfs else None)


def _seed_term(samples: Samples, spread: SeedSpread | None, side: str) -> _Term | None:
  """The seed part of a mean's variance: measured (K >= 2) or borrowed from ``spread``."""
  means = samples.seed_means()
  if len(means) >= 2:
    return _Term(_variance(means) / len(means), len(means) - 1, f"seeds:{side}")
  if spread is not None:
    return _Term(spread.variance / max(samples.k, 1), spread.seeds - 1, "seeds:borrowed")
  return None


def _graph_term(samples: Samples, side: str) -> _Term | None:
  means = samples.graph_means()
  if means is not None and len(means) >= 2:
    return _Term(_variance(means) / len(means), len(means) - 1, f"graphs:{side}")
  if samples.bootstrap is not None:
    return _Term((samples.bootstrap / Z) ** 2, None, f"graphs:{side}")
  return None


@dataclasses.dataclass(frozen=True)
class Estimate:
  """An accuracy with its 95% interval, and what the interval is made of.

  Attributes:
    value: the accuracy (mean over training seeds); ``None`` when not measured.
    half_width: the 95% interval's half-width; ``None`` when no spread is known.
    seeds: training seeds behind the value.
    graphs: evaluation graphs (``None`` when only a bootstrap half-width was reported).
    seed_term: ``measured`` (K >= 2), ``borrowed`` (from the seed program) or ``unknown``.
    df: degrees of freedom of the t quantile (``None``: normal).
  """

  value: float | None
  half_width: float | None = None
  seeds: int = 0
  graphs: int | None = None
  seed_term: str = "unknown"
  df: float | None = None

  @property
  def lo(self) -> float | None:
    return None if self.value is None or self.half_width is None else self.value - self.half_width

  @property
  def hi(self) -> float | None:
    return None if self.value is None or self.half_width is None else self.value + self.half_width

  def to_json(self) -> dict[str, Any]:
    return {"value": self.value, "half_width": self.half_width, "lo": self.lo, "hi": self.hi,
            "seeds": self.seeds, "graphs": self.graphs, "seed_term": self.seed_term,
            "df": self.df, "level": LEVEL}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> Estimate:
    return cls(value=_number(data.get("value")), half_width=_number(data.get("half_width")),
               seeds=int(data.get("seeds") or 0), graphs=data.get("graphs"),
               seed_term=str(data.get("seed_term") or "unknown"), df=_number(data.get("df")))


def estimate(samples: Samples, spread: SeedSpread | None = None) -> Estimate:
  """The fitness interval of one program (module docstring); ``spread`` for one seed."""
  if samples.value is None:
    return Estimate(None)
  seed = _seed_term(samples, spread, "a")
  terms = [t for t in (seed, _graph_term(samples, "a")) if t is not None]
  kind = "unknown" if seed is None else ("borrowed" if seed.source.endswith("borrowed")
                                         else "measured")
  if not terms:
    return Estimate(samples.value, None, samples.k, samples.graphs, kind)
  se, df = _combine(terms)
  return Estimate(samples.value, t_quantile(df) * se, samples.k, samples.graphs, kind, df)


@dataclasses.dataclass(frozen=True)
class Difference:
  """``a − b`` with its 95% interval and the decision it supports.

  Attributes:
    value: the difference of the two accuracies.
    half_width: 95% half-width (``None``: no spread known, the decision is the sign).
    verdict: ``better`` (lower bound > 0), ``worse`` (upper bound < 0) or ``tie``.
    paired: ``seeds+graphs``, ``graphs`` (same graphs, independent trainings) or
      ``unpaired`` (no per-graph accuracies on one side).
    graphs: graphs paired over.
    df: degrees of freedom of the t quantile.
  """

  value: float
  half_width: float | None
  verdict: str
  paired: str
  graphs: int | None = None
  df: float | None = None

  @property
  def lo(self) -> float | None:
    return None if self.half_width is None else self.value - self.half_width

  @property
  def hi(self) -> float | None:
    return None if self.half_width is None else self.value + self.half_width

  def to_json(self) -> dict[str, Any]:
    return {"diff": self.value, "half_width": self.half_width, "lo": self.lo, "hi": self.hi,
            "verdict": self.verdict, "paired": self.paired, "graphs": self.graphs,
            "df": self.df, "level": LEVEL}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> Difference:
    return cls(value=float(data["diff"]), half_width=_number(data.get("half_width")),
               verdict=str(data["verdict"]), paired=str(data.get("paired") or "unpaired"),
               graphs=data.get("graphs"), df=_number(data.get("df")))


def difference(a: Samples, b: Samples, spread: SeedSpread | None = None) -> Difference | None:
  """The paired difference ``a − b`` (module docstring); ``None`` without both values."""
  if a.value is None or b.value is None:
    return None
  value = a.value - b.value
  terms: list[_Term] = []
  graphs = None
  a_means, b_means = a.graph_means(), b.graph_means()
  paired = "unpaired"
  if a_means is not None and b_means is not None and len(a_means) == len(b_means) >= 2:
    graphs = len(a_means)
    terms.append(_Term(_variance([x - y for x, y in zip(a_means, b_means, strict=True)]) / graphs,
                       graphs - 1, "graphs"))
    paired = "graphs"
  else:
    terms += [t for t in (_graph_term(a, "a"), _graph_term(b, "b")) if t is not None]
  a_seeds, b_seeds = a.seed_means(), b.seed_means()
  if (paired == "graphs" and a.seeds is not None and a.seeds == b.seeds
      and len(a_seeds) == len(b_seeds) == len(a.seeds) >= 2):
    per_seed = [x - y for x, y in zip(a_seeds, b_seeds, strict=True)]
    terms.append(_Term(_variance(per_seed) / len(per_seed), len(per_seed) - 1, "seeds"))
    paired = "seeds+graphs"
  else:
    terms += [t for t in (_seed_term(a, spread, "a"), _seed_term(b, spread, "b"))
              if t is not None]
  if not terms:
    verdict = BETTER if value > 0 else (WORSE if value < 0 else TIE)
    return Difference(value, None, verdict, paired, graphs)
  se, df = _combine(terms)
  half = t_quantile(df) * se
  verdict = BETTER if value - half > 0 else (WORSE if value + half < 0 else TIE)
  return Difference(value, half, verdict, paired, graphs, df)


__all__ = ["BETTER", "Difference", "Estimate", "LEVEL", "Samples", "SeedSpread", "TIE", "WORSE",
           "Z", "difference", "estimate", "t_quantile"]
