"""Where an evaluation's time goes: phases, with XLA compilation split off.

XLA compilation is measured from JAX's own compile events (``jax.monitoring``: trace +
lowering + backend compile) and reported as ``compile_seconds`` (and per phase);
``init_seconds``, ``train_seconds`` and ``eval_seconds`` are the wall time of those
phases minus the compilation inside them. ``train_seconds`` is the whole training loop,
drawing its batches included (like CLRS's ``run.py`` the loop never waits for a step's
loss, so each batch is sampled while the device runs the previous step);
``data_seconds`` is building the samplers (and, in process, the evaluation sets).
Timings are informational: the trusted side keeps them for reports, never scores on them.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import jax

from spark_clrs.evaluation import protocol

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
PHASES = ("compile", "init", "train", "eval", "data", "load", "checkpoint")


class _CompileClock:
  """Seconds JAX spent compiling since the process started (from jax.monitoring)."""

  def __init__(self) -> None:
    self.seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event: str, duration: float, **unused: Any) -> None:
    if event in _COMPILE_EVENTS:
      self.seconds += duration


_COMPILE_CLOCK = _CompileClock()


class Phases:
  """Accumulates wall time per phase, with compilation split off into ``compile``.

  Phases may nest (val scoring inside the training loop): a phase's own time excludes
  the phases run inside it, so nothing is counted twice. ``cpu_seconds`` is the same
  for the process's CPU time (all threads), less the compile time; unlike wall time it
  hardly grows when other processes share the CPUs.
  """

  def __init__(self) -> None:
    self.start = time.perf_counter()
    self.seconds: dict[str, float] = {}
    self.cpu_seconds: dict[str, float] = {}
    self.compile_by_phase: dict[str, float] = {}
    self._inner: list[list[float]] = []  # [wall, cpu, compile] of phases nested in each.

  def run(self, phase: str, fn: Callable[[], Any]) -> Any:
    start, cpu, compiled = time.perf_counter(), time.process_time(), _COMPILE_CLOCK.seconds
    self._inner.append([0.0, 0.0, 0.0])
    try:
      return fn()
    finally:
      inner_wall, inner_cpu, inner_compile = self._inner.pop()
      wall = time.perf_counter() - start
      cpu_all = time.process_time() - cpu
      compile_all = _COMPILE_CLOCK.seconds - compiled
      compile_s = compile_all - inner_compile
      own = max(0.0, wall - inner_wall - compile_s)
      own_cpu = max(0.0, cpu_all - inner_cpu - compile_s)
      self.seconds[phase] = self.seconds.get(phase, 0.0) + own
      self.cpu_seconds[phase] = self.cpu_seconds.get(phase, 0.0) + own_cpu
      self.seconds["compile"] = self.seconds.get("compile", 0.0) + compile_s
      self.compile_by_phase[phase] = self.compile_by_phase.get(phase, 0.0) + compile_s
      if self._inner:
        self._inner[-1][0] += wall
        self._inner[-1][1] += cpu_all
        self._inner[-1][2] += compile_all


def timing_metrics(phases: Phases, steps: int) -> dict[str, Any]:
  """Timings of this process (the jailed trainer's, or the in-process evaluation's)."""
  seconds = dict(phases.seconds)
  by_set = {name: round(seconds[f"eval:{name}"], 3) for name in protocol.EVAL_SET_NAMES
            if f"eval:{name}" in seconds}
  metrics: dict[str, Any] = {}
  seconds["eval"] = sum(by_set.values())
  for phase in PHASES:
    metrics[f"{phase}_seconds"] = round(seconds.get(phase, 0.0), 3)
  metrics["eval_seconds_by_set"] = by_set
  metrics["step_seconds"] = round(seconds.get("train", 0.0) / steps, 5) if steps else 0.0
  metrics["train_cpu_seconds"] = round(phases.cpu_seconds.get("train", 0.0), 3)
  metrics["total_seconds"] = round(time.perf_counter() - phases.start, 3)
  usage = resource.getrusage(resource.RUSAGE_SELF)
  metrics["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
  metrics["peak_rss_mb"] = round(usage.ru_maxrss / 1024.0, 1)
  metrics["compile_seconds_by_phase"] = {
      phase: round(value, 3) for phase, value in phases.compile_by_phase.items() if value}
  stats = jax.devices()[0].memory_stats() or {}  # None on CPU.
  metrics["peak_device_mb"] = (round(stats["peak_bytes_in_use"] / 2**20, 1)
                               if "peak_bytes_in_use" in stats else None)
  metrics["device"] = jax.devices()[0].platform
  return metrics


__all__ = ["PHASES", "Phases", "timing_metrics"]
