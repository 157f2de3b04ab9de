"""The final re-evaluation: the run's result, free of selection bias.

A search keeps the largest of many noisy fitnesses, so the search-time fitness of its best
is biased upward. At the end of a run the best so far and the fittest other candidates
(``--final_top_k`` in all) are trained again with ``--final_seeds`` fresh training seeds,
never used during the search, and scored on OOD-val and OOD-test. The run's result is the
candidate with the highest re-evaluated OOD-val accuracy, reported with its OOD-test
accuracy: selection never looks at the test set. ``summary.json["final"]`` holds them
(summary.final_summary).

Resumable: the plan (candidates, seeds) is stored in the archive's meta before anything
runs and each re-evaluation is a row (``evaluating`` -> ``evaluated`` | ``failed``), so a
killed run re-runs only the unfinished ones. A run resumed with more proposals plans
again; finished rows of the same candidate and seeds are kept.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Iterable, Sequence
from typing import Any

from spark_clrs import config as config_lib
from spark_clrs.evaluation import noise
from spark_clrs.search import archive as archive_lib
from spark_clrs.search import resolve, standing, summary
from spark_clrs.search.archive_db import Candidate
from spark_clrs.search.dispatch import Evaluations
from spark_clrs.search.events import EventLog

PLAN_KEY = summary.FINAL_PLAN_KEY
DONE = ("evaluated", "failed")


def used_seeds(candidates: Iterable[Candidate], config: config_lib.SearchConfig) -> set[int]:
  """Every training seed the search used: the configuration's and every candidate's."""
  seeds = set(config.training_seeds) | set(resolve.seed_program_seeds(config))
  for c in candidates:
    seeds |= {int(s) for s in c.metrics.get("seeds") or []}
  return seeds


def fresh_seeds(used: set[int], n: int) -> list[int]:
  """``n`` seeds above every used one (deterministic, so a resume picks the same)."""
  start = max(used) + 1 if used else 0
  return list(range(start, start + n))


def choose(candidates: Sequence[Candidate], k: int) -> list[int]:
  """The best so far (paired decisions), then the fittest others, ``k`` ids in all."""
  best = standing.current_best(candidates)
  ids = [best.id] if best is not None else []
  for c in sorted((c for c in candidates if standing.is_contender(c)),
                  key=lambda c: (-c.fitness, c.id)):
    if len(ids) >= k:
      break
    if c.id not in ids:
      ids.append(c.id)
  return ids


def plan(archive: archive_lib.Archive, config: config_lib.SearchConfig) -> dict[str, Any] | None:
  """The re-evaluation to run now (stored in the archive's meta); None when disabled."""
  if config.final_top_k == 0:
    return None
  candidates = archive.candidates()
  ids = choose(candidates, config.final_top_k)
  if not ids:
    return None
  seeds = fresh_seeds(used_seeds(candidates, config), config.final_seeds)
  new = {"candidates": ids, "seeds": seeds}
  if archive.db.get_meta(PLAN_KEY) != new:
    archive.db.set_meta(PLAN_KEY, new)
  return new


def _outcome(result: Any) -> tuple[str, str, dict[str, Any]]:
  """(status, reason, metrics) of one re-training."""
  metrics = dict(getattr(result, "metrics", None) or {})
  if result.status != "ok":
    return "failed", f"{result.status}: {result.reason}", metrics
  value = metrics.get(noise.FITNESS)
  if not isinstance(value, (int, float)) or not math.isfinite(value):
    return "failed", f"{noise.FITNESS} is {value!r}, not a finite number", metrics
  return "evaluated", "", metrics


def run(archive: archive_lib.Archive, evaluations: Evaluations, log: EventLog,
        the_plan: dict[str, Any]) -> None:
  """Runs the plan's unfinished re-evaluations (``--parallel_evaluations`` at a time).

  Only this thread writes the archive; the evaluations run in worker threads.
  """
  seeds = list(the_plan["seeds"])
  done = {r["candidate_id"] for r in archive.db.final_evaluations()
          if list(r["seeds"]) == seeds and r["status"] in DONE}
  todo = [cid for cid in the_plan["candidates"] if cid not in done]
  if not todo:
    return
  log.event("final_start", message=(
      f"final re-evaluation: candidate(s) {', '.join(map(str, todo))} re-trained with fresh "
      f"seeds {','.join(map(str, seeds))} (never used in the search), scored on OOD-val and "
      "OOD-test"), candidates=todo, seeds=seeds)
  for cid in todo:
    archive.db.start_final_evaluation(cid, seeds)
  candidates = archive.candidates()
  spreads = {name: standing.seed_spread(candidates, name) for name in (noise.FITNESS, noise.TEST)}
  workers = max(1, min(evaluations.config.parallel_evaluations, len(todo)))
  waiting = list(todo)
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    running: dict[concurrent.futures.Future, int] = {}
    while waiting or running:
      while waiting and len(running) < workers:  # Only as many as run: Ctrl-C starts none.
        cid = waiting.pop(0)
        running[pool.submit(evaluations.retrain, archive.get(cid), seeds)] = cid
      finished, _ = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
      for future in finished:
        cid = running.pop(future)
        status, reason, metrics = _outcome(future.result())
        archive.db.finish_final_evaluation(cid, seeds, status, reason, metrics)
        shown = [noise.format_estimate(noise.compute(metrics, name, spreads[name]))
                 for name in (noise.FITNESS, noise.TEST)]
        text = (f"ood_val_acc {shown[0]}, ood_acc {shown[1]}" if status == "evaluated"
                else f"failed: {reason}")
        log.event("final_result", cid, message=f"final: candidate {cid} with fresh seeds: "
                  f"{text}", status=status, reason=reason, seeds=seeds)


def headline(final: dict[str, Any] | None, search_best: Candidate | None,
             spread: Any) -> str | None:
  """The console's last line: the re-evaluated result next to the search-time best."""
  if not final or final.get("best_id") is None:
    return None
  best = next(e for e in final["candidates"] if e["id"] == final["best_id"])
  search = ("" if search_best is None else
            f"; search-time best candidate {search_best.id}: ood_val_acc "
            f"{noise.format_estimate(standing.interval(search_best, spread))}")
  return (f"final (re-trained with fresh seeds {','.join(map(str, final['seeds']))}): "
          f"candidate {best['id']} ood_val_acc {best['ood_val_acc_interval']['text']}, "
          f"ood_acc {best['ood_acc_interval']['text']}{search}")
