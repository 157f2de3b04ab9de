"""How uncertain a fitness is, written the same way everywhere a person reads it.

An accuracy measured on a few dozen small graphs after a few hundred training steps
moves by several points between training seeds and between evaluation sets, so a
bare ``0.1719`` next to ``0.1680`` reads as progress when it is one node in 256. Every
fitness shown on the console, in ``summary.json``, in reports and in comparisons goes
through :func:`of` and :meth:`Noise.format`, which say which spread the ``±`` is:

* ``std``: the population standard deviation over training seeds (the evaluator's
  ``<metric>_std``), shown when the candidate was trained with several seeds;
* ``95% CI``: the half-width of the 95% bootstrap interval over evaluation graphs
  (the evaluator's ``<metric>_ci``), shown always when the evaluator reports it.

``0.179 ± 0.007 (std over 5 seeds; 95% CI ± 0.004 over graphs)`` or, with one seed,
``0.172 ± 0.011 (95% CI over graphs)``.

:func:`inside_noise` is the console's judgement of an improvement: best-so-far still
rises on any strictly better fitness (SPEC §1.7), but a rise no larger than the two
values' combined noise, ``sqrt(b_new² + b_old²)`` with ``b`` the larger of the seed
std and the CI half-width, is flagged as inside the noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

FITNESS = "ood_val_acc"


def _number(value: Any) -> float | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    return None
  return float(value)


@dataclasses.dataclass(frozen=True)
class Noise:
  """A metric with its spreads.

  Attributes:
    value: the metric (the mean over training seeds when there are several).
    seed_std: population std over training seeds; ``None`` with one seed.
    seeds: the number of training seeds behind ``value`` (0 when unknown).
    ci: 95% bootstrap half-width over evaluation graphs; ``None`` when not measured.
  """

  value: float | None
  seed_std: float | None = None
  seeds: int = 0
  ci: float | None = None

  @property
  def band(self) -> float | None:
    """The larger spread (what an improvement is measured against); ``None`` if unknown."""
    spreads = [s for s in (self.seed_std, self.ci) if s is not None]
    return max(spreads) if spreads else None

  def format(self, digits: int = 3) -> str:
    """``0.179 ± 0.007 (std over 5 seeds; 95% CI ± 0.004 over graphs)``; ``-`` without a value."""
    if self.value is None:
      return "-"
    text = f"{self.value:.{digits}f}"
    if self.seed_std is not None and self.seeds > 1:
      text += f" ± {self.seed_std:.{digits}f} (std over {self.seeds} seeds"
      text += f"; 95% CI ± {self.ci:.{digits}f} over graphs)" if self.ci is not None else ")"
    elif self.ci is not None:
      text += f" ± {self.ci:.{digits}f} (95% CI over graphs)"
    return text

  def to_json(self) -> dict[str, Any]:
    return {"value": self.value, "seed_std": self.seed_std, "seeds": self.seeds,
            "ci95": self.ci, "text": self.format()}


def of(metrics: Mapping[str, Any] | None, name: str = FITNESS) -> Noise:
  """The ``name`` metric of an evaluation's ``metrics`` with its seed std and CI."""
  metrics = metrics or {}
  per_seed = metrics.get(f"{name}_per_seed")
  seeds = len(per_seed) if isinstance(per_seed, (list, tuple)) else (
      1 if _number(metrics.get(name)) is not None else 0)
  std = _number(metrics.get(f"{name}_std")) if seeds > 1 else None
  return Noise(value=_number(metrics.get(name)), seed_std=std, seeds=seeds,
               ci=_number(metrics.get(f"{name}_ci")))


def format_metric(metrics: Mapping[str, Any] | None, name: str = FITNESS,
                  digits: int = 3) -> str:
  """One metric with its spreads, as :meth:`Noise.format` writes it."""
  return of(metrics, name).format(digits)


def combined_band(new: Noise, old: Noise) -> float | None:
  """``sqrt(b_new² + b_old²)``; ``None`` when neither value has a known spread."""
  bands = [b for b in (new.band, old.band) if b is not None]
  return math.sqrt(sum(b * b for b in bands)) if bands else None


def inside_noise(new: Noise, old: Noise) -> bool:
  """Whether ``new`` beats ``old`` by no more than their combined noise.

  False when there is no improvement or no known spread (nothing to judge against).
  """
  if new.value is None or old.value is None or new.value <= old.value:
    return False
  band = combined_band(new, old)
  return band is not None and new.value - old.value <= band


def improvement_note(new: Noise, old: Noise, digits: int = 3) -> str:
  """The console's note on a new best-so-far.

  `` NEW BEST (was 0.168 ± 0.011 (95% CI over graphs))``, or, for a gain within the
  combined spread, `` NEW BEST, inside the noise: +0.004 <= 0.016 combined spread (was
  ...)``.
  """
  text = f" NEW BEST (was {old.format(digits)})"
  if inside_noise(new, old):
    band = combined_band(new, old)
    text = (f" NEW BEST, inside the noise: +{new.value - old.value:.{digits}f} <= "
            f"{band:.{digits}f} combined spread (was {old.format(digits)})")
  return text


__all__ = ["FITNESS", "Noise", "combined_band", "format_metric", "improvement_note",
           "inside_noise", "of"]
