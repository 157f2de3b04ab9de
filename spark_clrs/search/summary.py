"""A run's summary (results/summary.json) and per-candidate history rows.

Pure functions of what the archive holds, so a summary can be rebuilt at any
time (during a run, after a crash, from another process) and always agrees
with the database. Definitions (SPEC §5):

* a *proposal* is any candidate but the seed (candidate 0);
* ``valid_rate`` = proposals that passed the checks and trained to a finite
  fitness / finished proposals;
* ``entanglement_rate`` = proposals whose child changed text outside its
  selected scope (or more than one factor when no scope was selected) /
  finished proposals, whether or not the freeze rejected them;
* ``drift_rate`` = proposals with no selected scope whose child changed some part in
  formatting, comments or docstrings only (entanglement.py), counted apart from
  entanglement / finished proposals;
* ``evaluations_to_best`` = the id (proposals made, seed = 0) of the best so far;
* a scope's *gain* is child fitness minus parent fitness over its valid
  proposals (standing.gain: the paired difference, whose verdict counts
  ``improvements``);
* the best so far is decided by paired tests (standing.py), so ``best_program_id`` is
  the candidate the console announced last as ``NEW BEST``, not the raw maximum;
* ``final`` is the final re-evaluation (final.py): the top candidates re-trained with
  fresh seeds; its best is the run's reported result;
* ``pareto_front``: the candidates no other beats on both accuracy (re-evaluated where
  there is one, else search-time, labelled) and MACs.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from spark_clrs.evaluation import noise, statistics
from spark_clrs.evaluation.statistics import Estimate
from spark_clrs.search import pareto, standing
from spark_clrs.search.archive_db import PENDING_STATUSES, ArchiveDB, Candidate

FITNESS = noise.FITNESS
TEST = noise.TEST
FINAL_PLAN_KEY = "final"  # Archive meta: the final re-evaluation's candidates and seeds.
# Who proposed: every table, plot and summary of rule-based runs carries the note.
OFFLINE_MODELS = ("", "spark/offline")
OFFLINE_NOTE = ("Proposer: rule-based (spark/offline, a catalogue of code moves, no LLM). "
                "These numbers compare the search machinery, not the methods.")
MUTATION_NOTE = ("mutation is a rule-based operator by design (no LLM); the other strategies "
                 "here use an LLM.")


def proposer_note(llm_models: Iterable[str | None], strategies: Iterable[str] = ()) -> str | None:
  """The header line every table, plot and summary of rule-based runs must carry.

  ``None`` when every run had a real LLM and no strategy is ``mutation``.
  """
  if any((m or "") in OFFLINE_MODELS for m in llm_models):
    return OFFLINE_NOTE
  if "mutation" in set(strategies):
    return MUTATION_NOTE
  return None


def _scope_key(c: Candidate) -> str:
  return ",".join(c.scope) if c.scope else "none"


def _mean(values: Sequence[float]) -> float | None:
  return sum(values) / len(values) if values else None


def history_rows(candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
  """One flat row per candidate (for tables, notebooks and reports).

  ``gain`` is the paired difference with the parent (standing.gain), ``gain_verdict``
  whether it is a clear gain (``better``), a ``tie`` within noise or ``worse``; ``new_best``
  whether the candidate became the best so far.
  """
  by_id = {c.id: c for c in candidates}
  spread = standing.seed_spread(candidates)
  new_bests = {s.candidate_id for s in standing.best_so_far(candidates) if s.new_best}
  rows = []
  for c in sorted(candidates, key=lambda c: c.id):
    parent = by_id.get(c.parent_id) if c.parent_id is not None else None
    gain = standing.gain(c, parent, spread)
    rows.append({
        "id": c.id, "parent_id": c.parent_id, "island": c.island, "strategy": c.strategy,
        "scope": _scope_key(c) if c.is_proposal else None,
        "scope_source": c.decision.get("scope_source"),
        "selection": c.decision.get("parent_selection"), "directive": c.directive,
        "status": c.status, "stage": c.stage, "reason": c.reason,
        "entangled": c.entangled, "changed_factors": ",".join(c.changed_factors),
        "fitness": c.fitness, FITNESS: c.metrics.get(FITNESS), TEST: c.metrics.get(TEST),
        "val_acc": c.metrics.get("val_acc"), "param_count": c.metrics.get("param_count"),
        "macs": c.metrics.get("macs"), "train_seconds": c.metrics.get("train_seconds"),
        "gain": None if gain is None else gain.value,
        "gain_verdict": None if gain is None else gain.verdict,
        "new_best": c.id in new_bests,
    })
  return rows


def llm_spend(calls: Sequence[dict[str, Any]]) -> tuple[int, float]:
  """``(tokens, cost_usd)`` the run's calls really spent.

  Cached calls sent nothing (their request was paid for when it was first made, and
  recorded then), and the offline provider's counts are estimates, so both are left out.
  This is what ``--max_llm_tokens`` and ``--max_cost_usd`` are checked against.
  """
  real = [r for r in calls if not r.get("cached") and not r.get("estimated")]
  tokens = sum(int(r.get("prompt_tokens") or 0) + int(r.get("completion_tokens") or 0)
               for r in real)
  return tokens, sum(float(r.get("cost") or 0.0) for r in real)


def llm_totals(calls: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Token, cost and call counts, overall, per role and per model.

  ``prompt_tokens`` / ``completion_tokens`` / ``total_tokens`` / ``cost_usd`` count what
  providers reported for requests actually sent (see :func:`llm_spend`);
  ``estimated_tokens`` are the offline provider's length/4 estimates, never added to them.
  ``failed_attempt_calls`` were made for a proposal attempt that a provider failure ended
  (asked again on resume).
  """
  def totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    real = [r for r in rows if not r.get("cached") and not r.get("estimated")]
    estimated = [r for r in rows if not r.get("cached") and r.get("estimated")]
    prompt = sum(int(r.get("prompt_tokens") or 0) for r in real)
    completion = sum(int(r.get("completion_tokens") or 0) for r in real)
    return {"calls": len(rows), "cached_calls": sum(bool(r.get("cached")) for r in rows),
            "failed_calls": sum(bool(r.get("error")) for r in rows),
            "failed_attempt_calls": sum("candidate_id" in r and r["candidate_id"] is None
                                        for r in rows),
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated_calls": len(estimated),
            "estimated_tokens": sum(int(r.get("prompt_tokens") or 0)
                                    + int(r.get("completion_tokens") or 0) for r in estimated),
            "cost_usd": sum(float(r.get("cost") or 0.0) for r in real),
            # Calls with a price (LiteLLM's table or --llm_price_per_mtok).
            "priced_calls": sum(r.get("cost") is not None for r in rows)}
  by_role = collections.defaultdict(list)
  by_model = collections.defaultdict(list)
  for r in calls:
    by_role[r.get("role", "")].append(r)
    by_model[r.get("model") or ""].append(r)
  return {**totals(calls), "by_role": {k: totals(v) for k, v in sorted(by_role.items())},
          "by_model": {k: totals(v) for k, v in sorted(by_model.items())}}


def _estimate_json(e: Estimate) -> dict[str, Any]:
  return noise.to_json(e)


def final_of(db: ArchiveDB, candidates: Sequence[Candidate]) -> dict[str, Any] | None:
  """``summary.json["final"]`` as the archive holds it now (:func:`final_summary`)."""
  return final_summary(db.get_meta(FINAL_PLAN_KEY), db.final_evaluations(), candidates)


def final_summary(plan: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]],
                  candidates: Sequence[Candidate]) -> dict[str, Any] | None:
  """``summary.json["final"]``: the re-evaluation of ``plan`` (final.py) from its rows.

  ``{"seeds", "top_k", "status" (complete | partial), "best_id", "candidates": [{"id",
  "status", "reason", "macs", "search_fitness", "search_ood_val_acc_interval",
  "ood_val_acc", "ood_val_acc_interval", "ood_acc", "ood_acc_interval"}]}``; the best is
  the highest re-evaluated OOD-val accuracy (OOD-test never selects), earliest in the
  plan on ties. ``None`` when no final re-evaluation was planned.
  """
  if not plan or not plan.get("candidates"):
    return None
  seeds = [int(x) for x in plan["seeds"]]
  by_id = {c.id: c for c in candidates}
  done = {int(r["candidate_id"]): r for r in rows if list(r["seeds"]) == seeds}
  spread = standing.seed_spread(candidates)
  entries = []
  for cid in plan["candidates"]:
    c, row = by_id.get(cid), done.get(cid)
    metrics = dict(row["metrics"]) if row and row["status"] == "evaluated" else {}
    entry: dict[str, Any] = {
        "id": cid, "status": row["status"] if row else "pending",
        "reason": (row or {}).get("reason") or "",
        "macs": (c.metrics.get("macs") if c is not None else None),
        "search_fitness": c.fitness if c is not None else None,
        "search_ood_val_acc_interval": _estimate_json(standing.interval(c, spread))}
    for name in (FITNESS, TEST):  # With one fresh seed the seed program's spread is borrowed.
      e = noise.compute(metrics, name, standing.seed_spread(candidates, name))
      entry[name] = e.value
      entry[name + noise.INTERVAL_SUFFIX] = _estimate_json(e)
    entries.append(entry)
  scored = [e for e in entries if e[FITNESS] is not None]
  best = max(scored, key=lambda e: e[FITNESS]) if scored else None  # First max: plan order.
  finished = all(e["status"] in ("evaluated", "failed") for e in entries)
  return {"seeds": seeds, "top_k": len(entries), "status": "complete" if finished else "partial",
          "best_id": None if best is None else best["id"], "candidates": entries}


def pareto_front(candidates: Sequence[Candidate],
                 final: Mapping[str, Any] | None) -> list[dict[str, Any]]:
  """The accuracy–MACs front over the evaluated candidates (pareto.front).

  A candidate's accuracy is its re-evaluated OOD-val accuracy where the final
  re-evaluation scored it (``source: final``), else its search-time fitness
  (``source: search``); each row carries the interval text.
  """
  spread = standing.seed_spread(candidates)
  finals = {e["id"]: e for e in (final or {}).get("candidates", []) if e.get(FITNESS) is not None}
  points = []
  for c in candidates:
    if not standing.is_contender(c):
      continue
    if c.id in finals:
      accuracy, source = finals[c.id][FITNESS], "final"
      text = finals[c.id][FITNESS + noise.INTERVAL_SUFFIX]["text"]
    else:
      accuracy, source = c.fitness, "search"
      text = noise.format_estimate(standing.interval(c, spread))
    macs = c.metrics.get("macs")
    if isinstance(macs, (int, float)):
      points.append(pareto.Point(c.id, float(accuracy), float(macs),
                                 {"id": c.id, "source": source, "text": text}))
  return pareto.to_json(pareto.front(points))


def summarize(candidates: Sequence[Candidate], calls: Sequence[dict[str, Any]],
              run_info: dict[str, Any], final: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
  """The summary.json dict; ``run_info`` (strategy, profile, ...) is copied in as is.

  ``final`` is :func:`final_summary`'s object when the run planned a final re-evaluation.
  """
  by_id = {c.id: c for c in candidates}
  seed = by_id.get(standing.SEED_ID)
  finished = [c for c in candidates if c.status not in PENDING_STATUSES]
  proposals = [c for c in finished if c.is_proposal]
  valid = [c for c in proposals if c.can_be_parent]
  entangled = [c for c in proposals if c.entangled]
  drifted = [c for c in proposals if c.decision.get("formatting_drift")]
  best = standing.current_best(candidates)
  spread = standing.seed_spread(candidates)
  steps = standing.best_so_far(candidates)
  announced = sum(s.new_best for s in steps if by_id[s.candidate_id].is_proposal)

  per_scope: dict[str, dict[str, Any]] = {}
  for key in sorted({_scope_key(c) for c in proposals}):
    group = [c for c in proposals if _scope_key(c) == key]
    diffs = [d for d in (standing.gain(c, by_id.get(c.parent_id), spread) for c in group)
             if d is not None]
    gains = [d.value for d in diffs]
    per_scope[key] = {
        "proposals": len(group), "valid": sum(c.can_be_parent for c in group),
        "entangled": sum(bool(c.entangled) for c in group),
        "fallback": sum(c.decision.get("scope_source") == "fallback" for c in group),
        "improvements": sum(d.verdict == statistics.BETTER for d in diffs),
        "ties": sum(d.verdict == statistics.TIE for d in diffs),
        "gain_mean": _mean(gains), "gain_max": max(gains) if gains else None,
        "gain_total_positive": sum(g for g in gains if g > 0),
    }

  def metric(c: Candidate | None, name: str) -> Any:
    return None if c is None else c.metrics.get(name)

  over_seed = (standing.gain(best, seed, spread)
               if best is not None and seed is not None else None)
  test_spread = standing.seed_spread(candidates, TEST)
  return {
      **run_info,
      "best_program_id": None if best is None else best.id,
      "best_ood_val_acc": metric(best, FITNESS),
      # Every fitness with its 95% interval over seeds and graphs (evaluation/statistics.py).
      "best_ood_val_acc_noise": _estimate_json(standing.interval(best, spread)),
      "best_ood_acc_noise": _estimate_json(standing.interval(best, test_spread, TEST)),
      "seed_ood_val_acc_noise": _estimate_json(standing.interval(seed, spread)),
      "seed_spread": None if spread is None else spread.to_json(),
      "best_ood_acc": metric(best, TEST),
      "best_val_acc": metric(best, "val_acc"),
      "best_param_count": metric(best, "param_count"),
      "best_macs": metric(best, "macs"),
      "best_metrics": None if best is None else best.metrics,
      "evaluations_to_best": None if best is None else best.id,
      "seed_ood_val_acc": metric(seed, FITNESS),
      "seed_ood_acc": metric(seed, TEST),
      "improvement_over_seed": None if over_seed is None else over_seed.value,
      "improvement_over_seed_interval": (None if over_seed is None else
                                         {**over_seed.to_json(),
                                          "text": noise.format_difference(over_seed)}),
      # Proposals the console announced as NEW BEST (a clear paired gain over the best).
      "new_bests": announced,
      "new_best_rate": announced / len(proposals) if proposals else None,
      "final": final,
      "pareto_front": pareto_front(candidates, final),
      "proposals": len(proposals),
      # Trainings spent (seed included); duplicates reuse a twin's metrics for free.
      "evaluations": sum(c.status in ("evaluated", "failed") and c.stage != "duplicate"
                         for c in finished),
      "duplicates": sum(c.stage == "duplicate" for c in proposals),
      "unchanged": sum(c.stage == "unchanged" for c in proposals),
      "pending": len(candidates) - len(finished),
      "valid_proposals": len(valid),
      "valid_rate": len(valid) / len(proposals) if proposals else None,
      "entangled_proposals": len(entangled),
      "entanglement_rate": len(entangled) / len(proposals) if proposals else None,
      "drifted_proposals": len(drifted),
      "drift_rate": len(drifted) / len(proposals) if proposals else None,
      "router_fallbacks": sum(c.decision.get("scope_source") == "fallback" for c in proposals),
      # Who answered each proposal's LLM calls: ``llm``, ``offline`` (spark/offline), both
      # (``mixed``) or nobody (``none``, e.g. the mutation strategy).
      "answered_by": dict(collections.Counter(c.decision.get("answered_by", "none")
                                              for c in proposals)),
      "status_counts": dict(collections.Counter(c.status for c in candidates)),
      "rejection_stages": dict(collections.Counter(
          c.stage for c in finished if c.status in ("rejected", "failed"))),
      "per_scope": per_scope,
      "llm": llm_totals(calls),
      "train_seconds_total": sum(float(c.metrics.get("train_seconds") or 0.0) for c in finished
                                 if math.isfinite(float(c.metrics.get("train_seconds") or 0.0))),
  }
