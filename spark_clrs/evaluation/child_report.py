"""What the trusted side keeps of a jailed trainer's own report.

The trainer returns timings, losses and which raw outputs were non-finite as a JSON
object over the control channel. All of it is informational and all of it is
candidate-controlled (the candidate runs in that process), so only known fields of the
right types survive, strings are sanitised and short, lists are capped, and no accuracy,
parameter count or cost is ever taken from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spark_clrs.evaluation.statistics import is_number
from spark_clrs.isolation.exchange import clean

NUMBERS = ("compile_seconds", "init_seconds", "train_seconds", "eval_seconds",
           "data_seconds", "load_seconds", "checkpoint_seconds", "step_seconds",
           "train_cpu_seconds", "total_seconds", "cpu_seconds", "peak_rss_mb",
           "peak_device_mb", "startup_seconds")
NUMBER_DICTS = ("eval_seconds_by_set", "compile_seconds_by_phase")
_SHORT_WORD = 40
_MAX_DICT_ITEMS = 32
_MAX_NONFINITE = 16


def _number(value: Any) -> float | int | None:
  return value if is_number(value) else None


def sanitize(value: Any, seeds: Sequence[int]) -> dict[str, Any]:
  """The child's report reduced to known fields of the right types (never an accuracy).

  ``final_loss_per_seed`` is kept only with one entry per seed (None where not finite).
  """
  value = value if isinstance(value, dict) else {}
  out: dict[str, Any] = {}
  for key in NUMBERS:
    out[key] = _number(value.get(key))
  for key in NUMBER_DICTS:
    items = value.get(key) if isinstance(value.get(key), dict) else {}
    out[key] = {clean(k, _SHORT_WORD): n for k, v in list(items.items())[:_MAX_DICT_ITEMS]
                if (n := _number(v)) is not None}
  losses = value.get("final_loss_per_seed")
  if isinstance(losses, list) and len(losses) == len(seeds):
    out["final_loss_per_seed"] = [_number(x) for x in losses]
  nonfinite = value.get("nonfinite_outputs")
  out["nonfinite_outputs"] = ([clean(x, _SHORT_WORD) for x in nonfinite[:_MAX_NONFINITE]]
                              if isinstance(nonfinite, list) else [])
  device = value.get("device")
  out["device"] = clean(device, _SHORT_WORD) if isinstance(device, str) else None
  out["fast_compile"] = value.get("fast_compile") is True
  return out


def merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
  """Timings of two phases (train, then predict from the best checkpoint): seconds added,
  peaks maxed, per-set eval times from the later phase."""
  out = dict(first)
  for key in NUMBERS:
    a, b = first.get(key), second.get(key)
    if key.endswith("_seconds") and key != "step_seconds" and b is not None:
      out[key] = round((a or 0.0) + b, 3)
    elif key in ("peak_rss_mb", "peak_device_mb") and b is not None:
      out[key] = max(a or 0.0, b)
  # Per set: the final predictions (second phase); the first phase's val predictions of
  # every checkpoint are ``checkpoint_eval_seconds`` (both are in ``eval_seconds``).
  out["eval_seconds_by_set"] = dict(second.get("eval_seconds_by_set", {}))
  out["checkpoint_eval_seconds"] = first.get("eval_seconds_by_set", {}).get("val", 0.0)
  by_phase = dict(first.get("compile_seconds_by_phase", {}))
  for k, v in second.get("compile_seconds_by_phase", {}).items():
    by_phase[k] = round(by_phase.get(k, 0.0) + v, 3)
  out["compile_seconds_by_phase"] = by_phase
  return out


__all__ = ["NUMBERS", "NUMBER_DICTS", "merge", "sanitize"]
