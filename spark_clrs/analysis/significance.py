"""Is a difference between two strategies real? Intervals and paired tests over run seeds.

A comparison runs every strategy with the same run seeds, and a run seed fixes the data
and the initial archive, so the runs of two strategies with one seed are a *pair*: the
difference of their results removes what the seed alone explains. Over the n seeds both
strategies ran:

* each strategy's result is shown as the mean over seeds with its 95% t interval,
  ``mean ± t(n−1) · sd / √n``;
* the paired difference ``d_k = x_k − y_k`` is tested two ways: **paired t** (assumes the
  d_k are normal; exact p from Student's t with n−1 degrees of freedom) and the **exact
  sign-flip permutation test** (no distributional assumption: under "no difference" each
  d_k is as likely positive as negative, so the observed ``|mean d|`` is ranked among the
  2ⁿ sign flips). The permutation p-value cannot go below ``2 / 2ⁿ``: with 3 seeds that is
  0.25, so three seeds can never show a difference at the 5% level by this test (six
  seeds are the least that can: 2/64 = 0.031);
* the effect size is the mean difference with its 95% t interval, and ``d_z = mean d /
  sd d`` (the standardised paired effect).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from spark_clrs.evaluation.statistics import LEVEL, is_number, t_quantile

_EXACT_MAX = 16  # Seeds up to which every sign flip is enumerated (2^16 = 65,536).
_RESAMPLES = 65_536
_TOL = 1e-12


def _sd(values: Sequence[float]) -> float:
  mean = sum(values) / len(values)
  return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean over run seeds with its 95% t interval (``half_width`` None below 2 seeds)."""

  mean: float | None
  half_width: float | None
  n: int

  @classmethod
  def of(cls, values: Sequence[Any]) -> Interval:
    xs = [float(v) for v in values if is_number(v)]
    if not xs:
      return cls(None, None, 0)
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
      return cls(mean, None, 1)
    return cls(mean, t_quantile(len(xs) - 1) * _sd(xs) / math.sqrt(len(xs)), len(xs))

  @property
  def lo(self) -> float | None:
    return None if self.mean is None or self.half_width is None else self.mean - self.half_width

  @property
  def hi(self) -> float | None:
    return None if self.mean is None or self.half_width is None else self.mean + self.half_width

  def format(self, digits: int = 3) -> str:
    """``0.412 ± 0.031 (95% CI over 3 seeds)``; one seed: ``0.412 (1 seed, no interval)``."""
    if self.mean is None:
      return "-"
    if self.half_width is None:
      return f"{self.mean:.{digits}f} (1 seed, no interval)"
    return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f} ({LEVEL:.0%} CI over {self.n} seeds)"

  def to_json(self) -> dict[str, Any]:
    return {"mean": self.mean, "half_width": self.half_width, "lo": self.lo, "hi": self.hi,
            "n": self.n, "level": LEVEL, "text": self.format()}


def t_p_value(t: float, df: int) -> float:
  """Two-sided p-value of Student's t statistic ``t`` with ``df`` degrees of freedom."""
  from scipy import special  # Lazy: comes with JAX; a second to import.

  return float(min(1.0, 2.0 * special.stdtr(df, -abs(t))))


def sign_flip_p_value(diffs: Sequence[float]) -> float:
  """Exact two-sided sign-flip permutation p-value of ``mean(diffs) = 0``.

  Every one of the 2ⁿ sign vectors is enumerated up to 16 values (beyond that a fixed
  pseudo-random sample of 65,536); the observed vector counts, so p >= 2 / 2ⁿ.
  """
  n = len(diffs)
  observed = abs(sum(diffs)) - _TOL
  if n <= _EXACT_MAX:
    hits = sum(abs(sum(s * d for s, d in zip(signs, diffs, strict=True))) >= observed
               for signs in itertools.product((1.0, -1.0), repeat=n))
    return hits / 2 ** n
  import random

  rng = random.Random(0)
  hits = sum(abs(sum(d if rng.random() < 0.5 else -d for d in diffs)) >= observed
             for _ in range(_RESAMPLES - 1))
  return (hits + 1) / _RESAMPLES


def min_sign_flip_p(n: int) -> float:
  """The smallest p-value the exact sign-flip test can give with ``n`` pairs: ``2 / 2ⁿ``."""
  return 1.0 if n < 1 else min(1.0, 2.0 / 2 ** n)


@dataclasses.dataclass(frozen=True)
class PairedTest:
  """``a − b`` over the run seeds both have.

  Attributes:
    seeds: the paired seeds.
    diffs: ``a − b`` per seed.
    mean: the mean difference (the effect).
    interval: the mean difference with its 95% t interval.
    d_z: standardised paired effect ``mean / sd`` (None below 2 seeds or with sd 0).
    t_p: paired-t two-sided p (None below 2 seeds or with sd 0).
    sign_flip_p: exact sign-flip two-sided p (None without pairs).
    min_p: the smallest sign-flip p these many seeds allow.
  """

  seeds: tuple[Any, ...]
  diffs: tuple[float, ...]
  mean: float | None
  interval: Interval
  d_z: float | None
  t_p: float | None
  sign_flip_p: float | None
  min_p: float

  def to_json(self) -> dict[str, Any]:
    return {"seeds": list(self.seeds), "diffs": list(self.diffs), "mean": self.mean,
            "interval": self.interval.to_json(), "d_z": self.d_z, "paired_t_p": self.t_p,
            "sign_flip_p": self.sign_flip_p, "min_sign_flip_p": self.min_p}


def paired(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> PairedTest:
  """Paired test of two strategies' per-seed results (``{seed: value}``; seeds in both)."""
  seeds = tuple(s for s in a if s in b and is_number(a[s]) and is_number(b[s]))
  diffs = tuple(float(a[s]) - float(b[s]) for s in seeds)
  n = len(diffs)
  if not n:
    return PairedTest((), (), None, Interval(None, None, 0), None, None, None, 1.0)
  mean = sum(diffs) / n
  d_z = t_p = None
  if n >= 2:
    sd = _sd(diffs)
    if sd > 0:
      d_z = mean / sd
      t_p = t_p_value(mean / (sd / math.sqrt(n)), n - 1)
  return PairedTest(seeds, diffs, mean, Interval.of(diffs), d_z, t_p,
                    sign_flip_p_value(diffs), min_sign_flip_p(n))


__all__ = ["Interval", "PairedTest", "min_sign_flip_p", "paired", "sign_flip_p_value",
           "t_p_value"]
