r"""Cost of evaluating one candidate under each profile on this machine.

    python benchmarks/candidate_cost_profiles.py [--profiles=quick,spark,clrs] \
        [--program=triplet_gmpnn] [--probe_steps=5] [--probe_graphs=4]

Every evaluation runs as the search runs it: in a sandboxed child process
(``spark_clrs.evaluation.evaluate.evaluate``). ``quick`` is evaluated in full. ``spark`` and
``clrs`` are too long for a CPU, so they are probed (``--probe_steps`` training steps,
``--probe_graphs`` graphs per evaluation set, same sizes, hidden width and batch) and
extrapolated:

* process start + imports, data, compilation: as measured by the probe (the probe
  compiles the same graph sizes; an evaluation batch of ``probe_graphs`` instead of
  ``eval_batch_size`` graphs changes only the predict compile slightly);
* training: measured seconds per step x the profile's steps;
* evaluation: measured seconds per graph of each set x its graphs x how often it is
  evaluated (``clrs`` scores val every ``eval_every`` steps);
* peak RSS: the probe's (a lower bound for the full evaluation batch).

Prints one table (Markdown) to stdout. Timings on a shared machine are inflated by
other load; the table says so.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
from typing import Any

from absl import app, flags

from spark_clrs.evaluation import evaluate, profiles

_PROFILES = flags.DEFINE_list("profiles", ["quick", "spark", "clrs"], "Profiles to cost.")
_PROGRAM = flags.DEFINE_string("program", "triplet_gmpnn", "Program file or seed name.")
_PROBE_STEPS = flags.DEFINE_integer("probe_steps", 5,
                                    "Training steps of a probe (spark, clrs).")
_PROBE_GRAPHS = flags.DEFINE_integer("probe_graphs", 4,
                                     "Graphs per evaluation set in a probe.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 3600.0, "Limit per evaluation (seconds).")

_SETS = {"ood_val": "ood_val_samples", "test": "test_samples", "val": "val_samples"}


@dataclasses.dataclass
class Row:
  """One line of the table (seconds unless stated)."""

  profile: str
  mode: str
  startup: float
  data: float
  compile: float
  train_steps: int
  step: float
  train: float
  eval: float
  peak_rss_mb: float
  total: float
  cpu: float


def _run(program: str, profile: profiles.EvalProfile, workdir: pathlib.Path
         ) -> dict[str, Any]:
  limits = dataclasses.replace(evaluate.default_limits(profile),
                               timeout_s=_TIMEOUT_S.value)
  result = evaluate.evaluate(program, profile, [0], workdir=workdir, limits=limits)
  if not result.ok:
    raise RuntimeError(f"{profile.name}: {result.reason}")
  metrics = dict(result.metrics)
  metrics["wall_seconds"] = result.wall_seconds
  return metrics


def measured(program: str, profile: profiles.EvalProfile, workdir: pathlib.Path) -> Row:
  """Full evaluation."""
  m = _run(program, profile, workdir)
  return Row(profile.name, "measured", m["startup_seconds"], m["data_seconds"],
             m["compile_seconds"], profile.train_steps, m["step_seconds"],
             m["train_seconds"], m["eval_seconds"], m["peak_rss_mb"], m["wall_seconds"],
             m["cpu_seconds"])


def probe_profile(profile: profiles.EvalProfile, steps: int, graphs: int
                  ) -> profiles.EvalProfile:
  """Same sizes, width and batch; few steps, ``graphs`` graphs per set, no eval_every."""
  return dataclasses.replace(
      profile, train_steps=steps, eval_batch_size=graphs, ood_val_samples=graphs,
      test_samples=graphs, val_samples=graphs, scale_eval_samples=False, eval_every=0)


def extrapolated(program: str, profile: profiles.EvalProfile, workdir: pathlib.Path,
                 steps: int, graphs: int) -> Row:
  """Probe, then scale training by steps and evaluation by graphs and repetitions."""
  m = _run(program, probe_profile(profile, steps, graphs), workdir)
  train = m["step_seconds"] * profile.train_steps
  evals = 0.0
  for set_name, samples_field in _SETS.items():
    per_graph = m["eval_seconds_by_set"][set_name] / graphs
    repeats = 1
    if set_name == "val" and profile.eval_every:
      repeats += -(-profile.train_steps // profile.eval_every)
    evals += per_graph * getattr(profile, samples_field) * repeats
  total = m["startup_seconds"] + m["load_seconds"] + m["data_seconds"] + m["init_seconds"]
  total += m["compile_seconds"] + train + evals
  return Row(profile.name, f"extrapolated from {steps} steps, {graphs} graphs/set",
             m["startup_seconds"], m["data_seconds"], m["compile_seconds"],
             profile.train_steps, m["step_seconds"], train, evals, m["peak_rss_mb"], total,
             m["cpu_seconds"])


def table(rows: list[Row]) -> str:
  head = ("| profile | how | start+imports s | data s | compile s | train steps | s/step "
          "| train s | eval s | peak RSS MB | total s | child CPU s (measured) |")
  lines = [head, "|" + "---|" * 12]
  for r in rows:
    lines.append(f"| {r.profile} | {r.mode} | {r.startup:.1f} | {r.data:.1f} | "
                 f"{r.compile:.1f} | {r.train_steps} | {r.step:.3f} | {r.train:.1f} | "
                 f"{r.eval:.1f} | {r.peak_rss_mb:.0f} | {r.total:.1f} | {r.cpu:.1f} |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  load_before = os.getloadavg()[0]
  rows = []
  with tempfile.TemporaryDirectory(prefix="spark_cost_") as tmp:
    for name in _PROFILES.value:
      profile = profiles.get_profile(name)
      workdir = pathlib.Path(tmp) / name
      if name == "quick":
        rows.append(measured(_PROGRAM.value, profile, workdir))
      else:
        rows.append(extrapolated(_PROGRAM.value, profile, workdir, _PROBE_STEPS.value,
                                 _PROBE_GRAPHS.value))
  print(table(rows))
  print(f"\nprogram {_PROGRAM.value}; one training seed; each row is one sandboxed child; "
        f"{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after. Wall times on a shared machine are inflated by "
        "the other load on it; child CPU seconds are not.")


if __name__ == "__main__":
  app.run(main)
