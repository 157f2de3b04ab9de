"""The run page's data: ``RUN/results/index.html`` from a run's archive rows and summary.

Researchers read a search by its lineage and diffs, not by SQLite. Everything that
needs the trusted side (diffs against the parent with difflib, per-factor gains, tokens
and cost by role and model, intervals, the Pareto front, colours) is computed here, so
the page's script only draws. The caller hands over what the page shows (candidates,
LLM calls, the summary): the search's refresh callback while it runs, report.py for a
finished run; nothing here reads the archive.
"""

from __future__ import annotations

import collections
import difflib
import pathlib
from collections.abc import Sequence
from typing import Any

from spark_clrs.analysis import finals, palette
from spark_clrs.analysis.plots import best_so_far_curve, evaluation_index
from spark_clrs.analysis.viewer.page import PAGE_NAME, generated_at, write_page
from spark_clrs.evaluation import noise
from spark_clrs.evaluation.statistics import is_number
from spark_clrs.search.archive_db import PENDING_STATUSES, Candidate
from spark_clrs.search.rundir import RunDir
from spark_clrs.search.summary import pareto_front

REFRESH_S = 5.0  # shortest wall time between two rewrites of a live page
REFRESH_COST_FACTOR = 10.0  # and at least this many times what the last rewrite took
_DIFF_CONTEXT = 3


def unified_diff(parent: str | None, child: str | None, parent_name: str,
                 child_name: str) -> list[str]:
  """The child's unified diff against its parent, one string per line (no newlines)."""
  if child is None:
    return []
  return list(difflib.unified_diff((parent or "").splitlines(), child.splitlines(),
                                   fromfile=parent_name, tofile=child_name,
                                   n=_DIFF_CONTEXT, lineterm=""))


def factor_of(c: Candidate) -> str:
  """The factor a candidate edited, for colouring: its scope, else what it changed."""
  if not c.is_proposal:
    return "seed"
  if c.scope:
    return "+".join(c.scope)
  if len(c.changed_factors) == 1:
    return c.changed_factors[0]
  return "unscoped" if not c.changed_factors else "several"


def uncertainty(metrics: dict[str, Any], key: str = noise.FITNESS) -> dict[str, Any]:
  """``{"lo", "hi", "kind", "text"}`` of a metric's 95% interval (noise.of); empty without one."""
  e = noise.of(metrics, key)
  if e.value is None or e.half_width is None:
    return {}
  return {"lo": e.lo, "hi": e.hi, "kind": f"95% CI ({e.seed_term} seed term)",
          "text": noise.format_estimate(e)}


def format_fitness(metrics: dict[str, Any], key: str = noise.FITNESS) -> str:
  """The metric with its interval (noise.format_metric), ``-`` without a value."""
  return noise.format_metric(metrics, key) if is_number(metrics.get(key)) else "-"


def _chooser(c: Candidate, calls: Sequence[dict[str, Any]]) -> tuple[str, str]:
  """(who chose the scope, who answered the LLM calls) of a proposal."""
  if not c.is_proposal:
    return "-", "-"
  source = str(c.decision.get("scope_source") or "-")
  chosen = {"llm": "router (LLM)", "offline": "router (offline proposer)",
            "fallback": "UCB bandit (router failed)",
            "rule": "rule", "unscoped": "none (unscoped)",
            "all_factors": "all factors"}.get(source, source)
  models = sorted({str(k.get("model") or "") for k in calls if k.get("model")})
  answered = ("offline" if models and all(m.startswith("spark/offline") for m in models)
              else ("llm" if models else "-"))
  return chosen, answered


class _Texts:
  """Interned long strings: every LLM call repeats the same system prompts."""

  def __init__(self) -> None:
    self.items: list[str] = []
    self._index: dict[str, int] = {}

  def add(self, text: str) -> int:
    if text not in self._index:
      self._index[text] = len(self.items)
      self.items.append(text)
    return self._index[text]


def _call_row(k: dict[str, Any], texts: _Texts) -> dict[str, Any]:
  messages = [{"role": str(m.get("role", "")), "t": texts.add(str(m.get("content", "")))}
              for m in (k.get("messages") or []) if isinstance(m, dict)]
  tokens = int(k.get("prompt_tokens") or 0) + int(k.get("completion_tokens") or 0)
  return {"role": k.get("role"), "model": k.get("model"), "messages": messages,
          "estimated": bool(k.get("estimated")), "finish_reason": k.get("finish_reason"),
          "attempts": k.get("attempts"), "error_kind": k.get("error_kind"),
          "attempt_failed": k.get("candidate_id") is None,
          "reply": None if k.get("reply") is None else texts.add(str(k["reply"])),
          "prompt_tokens": k.get("prompt_tokens"),
          "completion_tokens": k.get("completion_tokens"), "tokens": tokens,
          "cost": k.get("cost"), "latency_s": k.get("latency_s"), "error": k.get("error"),
          "cached": bool(k.get("cached"))}


def candidate_rows(candidates: Sequence[Candidate], calls: Sequence[dict[str, Any]],
                   texts: _Texts | None = None) -> list[dict[str, Any]]:
  """One dict per candidate: table fields, verdict, diff against its parent, LLM calls."""
  texts = texts if texts is not None else _Texts()
  by_id = {c.id: c for c in candidates}
  order = evaluation_index(candidates)
  calls_of: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
  for k in calls:
    # A call of a proposal attempt that a provider failure ended has no candidate; it is
    # shown with the proposal of the same iteration when that was made later.
    owner = k.get("candidate_id")
    owner = k.get("iteration") if owner is None else owner
    if owner is not None:
      calls_of[int(owner)].append(k)
  rows = []
  for c in sorted(candidates, key=lambda c: c.id):
    parent = by_id.get(c.parent_id) if c.parent_id is not None else None
    gain = (c.fitness - parent.fitness if c.can_be_parent and parent is not None and
            parent.can_be_parent else None)
    chosen, answered = _chooser(c, calls_of[c.id])
    m = c.metrics
    unc = uncertainty(m)
    if c.is_proposal:
      diff = unified_diff(parent.code if parent else None, c.code,
                          f"programs/{c.parent_id:04d}.py", f"programs/{c.id:04d}.py")
    else:
      diff = [f"+{line}" for line in (c.code or "").splitlines()]
    rows.append({
        "id": c.id, "order": order.get(c.id), "parent_id": c.parent_id, "island": c.island,
        "strategy": c.strategy,
        "scope": list(c.scope) if c.scope else [], "factor": factor_of(c),
        "chosen_by": chosen, "answered_by": answered,
        "scope_source": c.decision.get("scope_source"),
        "selection": c.decision.get("parent_selection"),
        "rationale": c.decision.get("rationale"), "directive": c.directive,
        "decision": c.decision, "status": c.status, "stage": c.stage, "reason": c.reason,
        "entangled": c.entangled, "changed_factors": list(c.changed_factors),
        "fitness": c.fitness if c.can_be_parent else None,
        "fitness_text": format_fitness(m) if c.can_be_parent else "-",
        "fitness_short": finals.short_text(noise.of(m)) if c.can_be_parent else "-",
        "fitness_lo": unc.get("lo"), "fitness_hi": unc.get("hi"),
        "fitness_unc_kind": unc.get("kind"),
        "ood_acc": m.get("ood_acc"), "val_acc": m.get("val_acc"),
        "param_count": m.get("param_count"),
        "processor_param_count": m.get("processor_param_count",
                                       m.get("check_param_count")),
        "macs": m.get("macs", m.get("check_macs")), "train_seconds": m.get("train_seconds"),
        "gain": gain, "created_at": c.created_at, "finished_at": c.finished_at,
        "diff": texts.add("\n".join(diff)) if diff else None, "diff_is_listing": not c.is_proposal,
        "calls": [_call_row(k, texts) for k in calls_of[c.id]],
        "metrics": {k: v for k, v in m.items() if not isinstance(v, (dict, list))},
    })
  return rows


def llm_usage(calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Tokens, cost and latency of the LLM calls by (role, model)."""
  groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
  for k in calls:
    groups[(str(k.get("role") or ""), str(k.get("model") or "-"))].append(k)
  rows = []
  for (role, model), ks in sorted(groups.items()):
    # As summary.llm_totals counts: provider-reported tokens of requests actually sent;
    # the offline proposer's length estimates apart.
    real = [k for k in ks if not k.get("cached") and not k.get("estimated")]
    prompt = sum(int(k.get("prompt_tokens") or 0) for k in real)
    completion = sum(int(k.get("completion_tokens") or 0) for k in real)
    latencies = [float(k.get("latency_s") or 0.0) for k in ks]
    rows.append({"role": role, "model": model, "calls": len(ks),
                 "cached": sum(bool(k.get("cached")) for k in ks),
                 "failed": sum(bool(k.get("error")) for k in ks),
                 "prompt_tokens": prompt, "completion_tokens": completion,
                 "tokens": prompt + completion,
                 "estimated_tokens": sum(int(k.get("prompt_tokens") or 0)
                                         + int(k.get("completion_tokens") or 0) for k in ks
                                         if not k.get("cached") and k.get("estimated")),
                 "cost": sum(float(k.get("cost") or 0.0) for k in real),
                 "priced": sum(k.get("cost") is not None for k in ks),
                 "mean_latency_s": sum(latencies) / len(latencies)})
  return rows


def factor_gains(candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
  """Per factor edited: proposals, valid, entangled, improvements and gains over the parent."""
  by_id = {c.id: c for c in candidates}
  groups: dict[str, list[Candidate]] = collections.defaultdict(list)
  for c in candidates:
    if c.is_proposal and c.status not in PENDING_STATUSES:
      groups[factor_of(c)].append(c)
  rows = []
  for factor, cs in sorted(groups.items()):
    gains = [c.fitness - by_id[c.parent_id].fitness for c in cs
             if c.can_be_parent and by_id.get(c.parent_id) is not None
             and by_id[c.parent_id].can_be_parent]
    rows.append({"factor": factor, "proposals": len(cs),
                 "valid": sum(c.can_be_parent for c in cs),
                 "entangled": sum(bool(c.entangled) for c in cs),
                 "fallback": sum(c.decision.get("scope_source") == "fallback" for c in cs),
                 "improvements": sum(g > 0 for g in gains),
                 "gain_mean": sum(gains) / len(gains) if gains else None,
                 "gain_max": max(gains) if gains else None,
                 "gain_total_positive": sum(g for g in gains if g > 0)})
  return rows


def pareto_data(candidates: Sequence[Candidate], summary: dict[str, Any]) -> dict[str, Any]:
  """The accuracy–MACs plane of a run: every evaluated candidate, and the non-dominated ones.

  The front is the summary's (summary.pareto_front: re-evaluated OOD-val accuracy where the
  final re-evaluation scored a candidate, else its search-time fitness; each row says
  which); the points are every evaluated candidate's search-time fitness, and the final
  re-evaluation's when there is one.
  """
  factors = {c.id: factor_of(c) for c in candidates}
  final = {r["id"]: r for r in finals.rows(summary) if r[noise.FITNESS] is not None}
  points = []
  for c in candidates:
    if c.can_be_parent and is_number(c.metrics.get("macs")):
      points.append({"id": c.id, "accuracy": c.fitness, "macs": c.metrics["macs"],
                     "source": "search", "factor": factors[c.id],
                     "text": format_fitness(c.metrics)})
      if c.id in final:
        points.append({"id": c.id, "accuracy": final[c.id][noise.FITNESS],
                       "macs": c.metrics["macs"], "source": "final",
                       "factor": factors[c.id], "text": final[c.id][f"{noise.FITNESS}_text"]})
  front = [{**row, "factor": factors.get(row["id"], "-")}
           for row in pareto_front(candidates, summary.get("final"))]
  return {"accuracy": "OOD-val, re-evaluated (final) where there is one, else search-time",
          "points": points, "front": front}


def run_data(candidates: Sequence[Candidate], calls: Sequence[dict[str, Any]],
             summary: dict[str, Any], *, live: bool = False) -> dict[str, Any]:
  """Everything the run page shows, from the archive's rows and the run's summary."""
  texts = _Texts()
  rows = candidate_rows(candidates, calls, texts)
  seed = next((c for c in candidates if c.id == 0), None)
  seed_noise = {}
  if seed is not None and seed.can_be_parent:
    seed_noise = {"fitness": seed.fitness, **uncertainty(seed.metrics),
                  "text": format_fitness(seed.metrics)}
  keys = ("run_dir", "strategy", "profile", "seed", "iterations", "llm_model", "seed_program",
          "factors", "best_program_id", "best_ood_val_acc", "best_ood_acc",
          "seed_ood_val_acc", "improvement_over_seed", "proposals", "pending",
          "valid_rate", "entanglement_rate", "drift_rate", "router_fallbacks", "status_counts",
          "rejection_stages", "complete", "train_seconds_total", "stop_reason")
  factors = sorted({r["factor"] for r in rows})
  return {"kind": "run", "generated_at": generated_at(), "live": live,
          "run": {k: summary.get(k) for k in keys}, "llm_totals": summary.get("llm") or {},
          "candidates": rows, "texts": texts.items,
          "best_so_far": [list(p) for p in best_so_far_curve(candidates)],
          "seed_noise": seed_noise, "factor_gains": factor_gains(candidates),
          "factor_colors": palette.factor_colors(factors),
          "final": finals.page_data(summary), "pareto": pareto_data(candidates, summary),
          "llm_usage": llm_usage(calls)}


def run_title(summary: dict[str, Any]) -> str:
  best = finals.best(summary)
  if best is not None:
    shown = f"re-evaluated {best['ood_val_acc_short']}"
  else:
    value = summary.get("best_ood_val_acc")
    shown = f"{value:.4f}" if is_number(value) else "-"
  return (f"spark_clrs run: {summary.get('strategy', '?')} on {summary.get('profile', '?')} "
          f"(seed {summary.get('seed', '?')}), best {shown}")


def page_path(run_dir: str | pathlib.Path) -> pathlib.Path:
  """``RUN/results/index.html``."""
  return RunDir(pathlib.Path(run_dir)).results / PAGE_NAME


def write_run_page(run_dir: str | pathlib.Path, *, candidates: Sequence[Candidate],
                   calls: Sequence[dict[str, Any]], summary: dict[str, Any],
                   live: bool = False, refresh_s: int = 15) -> pathlib.Path:
  """Writes ``RUN/results/index.html`` atomically and returns its path.

  Args:
    run_dir: the run directory.
    candidates, calls: the archive's rows.
    summary: the run's summary (``results/summary.json``'s contents).
    live: the search is still running: the page says so and reloads every ``refresh_s``.
    refresh_s: reload period of a live page.
  """
  data = run_data(candidates, calls, summary, live=live)
  return write_page(page_path(run_dir), data, run_title(summary),
                    refresh_s=refresh_s if live else None)


__all__ = ["REFRESH_COST_FACTOR", "REFRESH_S", "candidate_rows", "factor_gains", "factor_of",
           "format_fitness", "llm_usage", "page_path", "pareto_data", "run_data", "run_title",
           "uncertainty", "unified_diff", "write_run_page"]
