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
* ``evaluations_to_best`` = the candidate index (proposals made, seed = 0) at
  which the best fitness was first reached; best-so-far rises only on a
  strictly better fitness;
* a scope's *gain* is child fitness minus parent fitness over its valid
  proposals.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Any

from spark_clrs.evaluation import noise
from spark_clrs.search.archive_db import PENDING_STATUSES, Candidate

FITNESS = "ood_val_acc"
TEST = "ood_acc"


def _best(candidates: Sequence[Candidate]) -> Candidate | None:
  pool = [c for c in candidates if c.can_be_parent]
  return min(pool, key=lambda c: (-c.fitness, c.id)) if pool else None


def _scope_key(c: Candidate) -> str:
  return ",".join(c.scope) if c.scope else "none"


def _mean(values: Sequence[float]) -> float | None:
  return sum(values) / len(values) if values else None


def history_rows(candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
  """One flat row per candidate (for tables, notebooks and reports)."""
  by_id = {c.id: c for c in candidates}
  rows = []
  for c in sorted(candidates, key=lambda c: c.id):
    parent = by_id.get(c.parent_id) if c.parent_id is not None else None
    gain = (c.fitness - parent.fitness if c.can_be_parent and parent is not None and
            parent.fitness is not None else None)
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
        "gain": gain,
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


def summarize(candidates: Sequence[Candidate], calls: Sequence[dict[str, Any]],
              run_info: dict[str, Any]) -> dict[str, Any]:
  """The summary.json dict; ``run_info`` (strategy, profile, ...) is copied in as is."""
  by_id = {c.id: c for c in candidates}
  seed = by_id.get(0)
  finished = [c for c in candidates if c.status not in PENDING_STATUSES]
  proposals = [c for c in finished if c.is_proposal]
  valid = [c for c in proposals if c.can_be_parent]
  entangled = [c for c in proposals if c.entangled]
  best = _best(candidates)

  per_scope: dict[str, dict[str, Any]] = {}
  for key in sorted({_scope_key(c) for c in proposals}):
    group = [c for c in proposals if _scope_key(c) == key]
    gains = [c.fitness - by_id[c.parent_id].fitness for c in group
             if c.can_be_parent and by_id.get(c.parent_id) is not None and
             by_id[c.parent_id].fitness is not None]
    per_scope[key] = {
        "proposals": len(group), "valid": sum(c.can_be_parent for c in group),
        "entangled": sum(bool(c.entangled) for c in group),
        "fallback": sum(c.decision.get("scope_source") == "fallback" for c in group),
        "improvements": sum(g > 0 for g in gains), "gain_mean": _mean(gains),
        "gain_max": max(gains) if gains else None,
        "gain_total_positive": sum(g for g in gains if g > 0),
    }

  def metric(c: Candidate | None, name: str) -> Any:
    return None if c is None else c.metrics.get(name)

  return {
      **run_info,
      "best_program_id": None if best is None else best.id,
      "best_ood_val_acc": metric(best, FITNESS),
      # The fitness as a person should read it: std over training seeds, 95% CI over
      # evaluation graphs (spark_clrs.evaluation.noise).
      "best_ood_val_acc_noise": noise.of(None if best is None else best.metrics).to_json(),
      "best_ood_acc_noise": noise.of(None if best is None else best.metrics,
                                     TEST).to_json(),
      "seed_ood_val_acc_noise": noise.of(None if seed is None else seed.metrics).to_json(),
      "best_ood_acc": metric(best, TEST),
      "best_val_acc": metric(best, "val_acc"),
      "best_param_count": metric(best, "param_count"),
      "best_macs": metric(best, "macs"),
      "best_metrics": None if best is None else best.metrics,
      "evaluations_to_best": None if best is None else best.id,
      "seed_ood_val_acc": metric(seed, FITNESS),
      "seed_ood_acc": metric(seed, TEST),
      "improvement_over_seed": (best.fitness - seed.fitness
                                if best is not None and seed is not None and seed.can_be_parent
                                else None),
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
