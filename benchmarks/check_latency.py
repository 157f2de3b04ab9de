"""Latency of the whole check chain per candidate, over the test corpus.

    python benchmarks/check_latency.py [--mode=both] [--cold_cases=6] [--output=FILE.json]

``warm``: the way the search runs checks -- one ``checks.make_worker`` worker has
imported JAX/Haiku once; each candidate runs parse/scope/policy in this process and
interface/shape/finite/budget in one of the worker's pre-started jailed interpreters. ``cold``: a fresh
sandboxed interpreter per candidate (what ``python -m spark_clrs.check`` does), which
adds the interpreter start and the JAX import. Reported: median and p95 wall time per
candidate (all cases, valid edits only, cases that reach the sandbox), the CPU seconds of
the check child for valid edits (insensitive to other load on the machine), the median
in-child seconds of each executing stage, and the load average around the run. The case that loops forever at trace time is
skipped by default (it costs exactly the timeout, by design).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

from absl import app, flags

from spark_clrs import checks
from spark_clrs.isolation import sandbox

_MODE = flags.DEFINE_enum("mode", "both", ["warm", "cold", "both"], "Which workers to time.")
_COLD_CASES = flags.DEFINE_integer("cold_cases", 6, "Valid cases timed with a fresh child "
                                   "each (cold mode is slow: interpreter + JAX import).")
_REPEAT = flags.DEFINE_integer("repeat", 1, "Passes over the corpus in warm mode.")
_SKIP = flags.DEFINE_list("skip", ["bad_shape_infinite_loop_at_trace"], "Cases not timed.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 30.0, "Sandbox timeout per candidate.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the full results as JSON here.")

REPO = pathlib.Path(__file__).resolve().parent.parent
CORPUS_PY = REPO / "tests" / "data" / "candidates" / "corpus.py"


def _load_corpus() -> list:
  spec = importlib.util.spec_from_file_location("spark_candidate_corpus", CORPUS_PY)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module.load_corpus()


def _summary(seconds: Sequence[float]) -> dict[str, float]:
  if not seconds:
    return {"n": 0}
  ordered = sorted(seconds)
  p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
  return {"n": len(ordered), "median_s": statistics.median(ordered), "p95_s": p95,
          "max_s": ordered[-1]}


def _time_case(case, budget, workdir, limits, worker) -> dict:
  """Times the chain exactly as ``checks.run_checks`` runs it, keeping the child's stats."""
  start = time.perf_counter()
  verdict = checks.static_checks(case.candidate, parent_text=case.parent, scope=case.scope)
  child = None
  if verdict is None:
    config = checks.CheckConfig()
    child = checks.run_child(case.candidate, workdir=workdir, hidden=128, config=config,
                             limits=limits, worker=worker)
    # The budget stage is decided here, from the files the child exported (as run_checks).
    verdict = checks.verdict_from_child(child, budget=budget, workdir=workdir, hidden=128,
                                        config=config)
  wall = time.perf_counter() - start
  stage_seconds = (child.value or {}).get("seconds", {}) if child and child.ok else {}
  stage_cpu = (child.value or {}).get("cpu_seconds", {}) if child and child.ok else {}
  return {"name": case.name, "expect": case.expect, "stage": verdict.stage,
          "correct": verdict.stage == case.expect, "seconds": wall,
          "sandboxed": child is not None,
          "child_cpu_seconds": child.cpu_seconds if child else 0.0,
          "stage_seconds": stage_seconds, "stage_cpu_seconds": stage_cpu}


def _report(rows: list[dict]) -> dict:
  out = {
      "all": _summary([r["seconds"] for r in rows]),
      "valid_edits": _summary([r["seconds"] for r in rows if r["expect"] == "ok"]),
      "sandboxed": _summary([r["seconds"] for r in rows if r["sandboxed"]]),
      "static_only": _summary([r["seconds"] for r in rows if not r["sandboxed"]]),
      "valid_edits_child_cpu": _summary([r["child_cpu_seconds"] for r in rows
                                         if r["expect"] == "ok"]),
      "wrong_stage": [r["name"] for r in rows if not r["correct"]],
  }
  stages = {}
  for stage in ("interface", "shape", "finite", "budget"):
    values = [r["stage_seconds"][stage] for r in rows if stage in r["stage_seconds"]]
    if values:
      stages[stage] = statistics.median(values)
  out["median_child_stage_s"] = stages
  # CPU time of the check child's stages (all threads; insensitive to other load).
  cpu = [sum(r.get("stage_cpu_seconds", {}).values()) for r in rows if r["expect"] == "ok"]
  out["valid_edits_stage_cpu"] = _summary([c for c in cpu if c > 0])
  out["median_child_stage_cpu_s"] = {
      stage: statistics.median(v) for stage in ("interface", "shape", "finite", "budget")
      if (v := [r["stage_cpu_seconds"][stage] for r in rows
                if stage in r.get("stage_cpu_seconds", {})])}
  return out


def main(argv: Sequence[str]) -> None:
  del argv
  cases = [c for c in _load_corpus() if c.name not in _SKIP.value]
  limits = sandbox.Limits(timeout_s=_TIMEOUT_S.value, memory_mb=4096,
                          max_output_bytes=1 << 20)
  budget = checks.default_budget()  # Computed once, as the search does.
  results: dict[str, object] = {"cases": len(cases), "skipped": _SKIP.value,
                                "load_average_before": os.getloadavg()}
  with tempfile.TemporaryDirectory(prefix="check_latency_") as tmp_name:
    tmp = pathlib.Path(tmp_name)
    if _MODE.value in ("warm", "both"):
      start = time.perf_counter()
      with checks.make_worker(tmp / "worker") as worker:
        results["warm_worker_start_s"] = time.perf_counter() - start
        rows = []
        for rep in range(_REPEAT.value):
          for case in cases:
            rows.append(_time_case(case, budget, tmp / f"w{rep}_{case.name}", limits, worker))
      results["warm"] = _report(rows)
      results["warm_rows"] = rows
    if _MODE.value in ("cold", "both"):
      valid = [c for c in cases if c.expect == "ok"][:_COLD_CASES.value]
      rows = [_time_case(c, budget, tmp / f"c_{c.name}", limits, None) for c in valid]
      results["cold"] = _report(rows)
      results["cold_rows"] = rows
  results["load_average_after"] = os.getloadavg()
  results["cpus"] = os.cpu_count()
  brief = {k: v for k, v in results.items() if not k.endswith("_rows")}
  print(json.dumps(brief, indent=1))
  if _OUTPUT.value:
    pathlib.Path(_OUTPUT.value).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
