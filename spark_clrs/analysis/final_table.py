"""The table that says whether a difference between strategies is real.

Per strategy: the re-evaluated best of each run (its final re-evaluation with fresh
training seeds, :mod:`finals`), as the mean and 95% interval over run seeds; per
strategy against the reference (SPARK): the paired difference over the seeds both ran,
with its interval, effect size and two p-values (:mod:`significance`); and per strategy
the accuracy–MACs Pareto front of its programs (each run's summary.pareto_front, pooled). Runs
without a final re-evaluation (older archives, interrupted runs) fall back to their
search-time best, and every table says which numbers it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spark_clrs.analysis import finals, significance, tables
from spark_clrs.analysis.groups import Group, Report
from spark_clrs.analysis.runs import RunData
from spark_clrs.evaluation import noise
from spark_clrs.search.pareto import Point, front
from spark_clrs.search.pareto import to_json as points_json
from spark_clrs.search.summary import pareto_front

REFERENCE = "spark"
# (key, label) of the accuracies tested, the held-out one first (never used for selection).
ACCURACIES = ((noise.TEST, "OOD-test"), (noise.FITNESS, "OOD-val"))
PARETO_ACCURACY = "OOD-val, re-evaluated (final) where there is one, else search-time"
TEST_NAMES = ("paired t over run seeds (assumes normal differences) and the exact sign-flip "
              "permutation test over run seeds (no assumption)")


def run_result(r: RunData) -> dict[str, Any]:
  """A run's result: its final best (``source`` "final") or its search-time best ("search")."""
  best = finals.best(r.summary)
  if best is not None:
    return {"source": "final", "id": best["id"], "macs": best["macs"],
            **{k: best[k] for key, _ in ACCURACIES for k in (key, f"{key}_text")}}
  return {"source": "search", "id": r.summary.get("best_program_id"),
          "macs": r.summary.get("best_macs"),
          **{key: r.summary.get(f"best_{key}") for key, _ in ACCURACIES},
          **{f"{key}_text": (r.summary.get(f"best_{key}_noise") or {}).get("text")
             or tables.MISSING for key, _ in ACCURACIES}}


def _tokens(r: RunData) -> tuple[int, bool]:
  """(tokens a run spent, whether some are the offline proposer's length/4 estimates)."""
  llm = r.summary.get("llm") or {}
  estimated = int(llm.get("estimated_tokens") or 0)
  return int(llm.get("total_tokens") or 0) + estimated, estimated > 0


def _source(runs: Sequence[RunData]) -> str:
  kinds = {run_result(r)["source"] for r in runs}
  return "final" if kinds == {"final"} else ("search" if kinds == {"search"} else "mixed")


def _per_seed(g: Group, key: str) -> dict[Any, Any]:
  return {r.seed: run_result(r)[key] for r in g.runs}


def reference_group(report: Report) -> Group | None:
  """SPARK's group when the report has one, else the first group."""
  if not report.groups:
    return None
  return next((g for g in report.groups if g.strategy == REFERENCE), report.groups[0])


def fronts(report: Report) -> list[dict[str, Any]]:
  """Per strategy group: the non-dominated programs over all its runs (seeds pooled).

  Each run's front is summary.pareto_front (re-evaluated OOD-val accuracy where the final
  re-evaluation scored a program, else search-time, labelled by ``source``); the front of
  the pooled points is the front of the pooled run fronts.
  """
  out = []
  for g in report.groups:
    points = [Point((r.seed, row["id"]), row["accuracy"], row["macs"], {**row, "seed": r.seed})
              for r in g.runs for row in pareto_front(r.candidates, r.summary.get("final"))]
    out.append({"label": g.label, "strategy": g.strategy, "source": _source(g.runs),
                "points": points_json(points), "front": points_json(front(points))})
  return out


def to_json(report: Report) -> dict[str, Any]:
  """Per-strategy results, paired tests against the reference, Pareto fronts."""
  ref = reference_group(report)
  strategies = []
  for g in report.groups:
    row: dict[str, Any] = {"label": g.label, "strategy": g.strategy, "seeds": g.seeds,
                           "source": _source(g.runs),
                           "runs": [{"seed": r.seed, **run_result(r)} for r in g.runs],
                           "tokens": tables.Stat.of(_tokens(r)[0] for r in g.runs).to_json(),
                           "tokens_estimated": any(_tokens(r)[1] for r in g.runs),
                           "cost_usd": g.stat("cost_usd").to_json()}
    for key, _ in ACCURACIES:
      row[key] = significance.Interval.of(_per_seed(g, key).values()).to_json()
      if len(g.runs) == 1:  # No spread over seeds: show the run's own interval instead.
        row[key]["text"] = f"{run_result(g.runs[0])[f'{key}_text']} (one run seed)"
    row["macs"] = tables.Stat.of(_per_seed(g, "macs").values()).to_json()
    strategies.append(row)
  tests = []
  for g in report.groups:
    if ref is None or g is ref:
      continue
    for key, label in ACCURACIES:
      test = significance.paired(_per_seed(g, key), _per_seed(ref, key))
      tests.append({"label": g.label, "strategy": g.strategy, "reference": ref.label,
                    "metric": key, "metric_label": label, **test.to_json()})
  return {"reference": None if ref is None else ref.label, "tests_used": TEST_NAMES,
          "strategies": strategies, "paired_tests": tests, "pareto": fronts(report),
          "pareto_accuracy": PARETO_ACCURACY}


def _p(value: float | None) -> str:
  return tables.MISSING if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
  return tables.MISSING if value is None else f"{value:+.3f}"


def markdown(data: dict[str, Any], notes: dict[str, str] | None = None) -> str:
  """The section of compare.md / report.md (``data`` is :func:`to_json`'s)."""
  sources = {s["source"] for s in data["strategies"]}
  what = ("its final re-evaluation: its best candidates re-trained with fresh training seeds "
          "never used in the search" if sources == {"final"} else
          "**search-time best (NOT re-evaluated)** for runs without a final re-evaluation "
          "(marked `search` below): the maximum of noisy numbers, biased upward")
  lines = ["## Results that say whether a difference is real", "",
           f"Each run's result is {what}. Per strategy: the mean over run seeds with its 95% "
           "t interval (mean ± t·sd/√n). Against the reference, the paired difference over "
           "the seeds both ran (same seed = same data and initial archive), tested with "
           f"{data['tests_used']}. With n seeds the sign-flip p-value cannot go below 2/2ⁿ "
           "(0.25 for 3 seeds; at least 6 seeds are needed to reach p < 0.05).", ""]
  headers = ["strategy", "seeds", "numbers", *(f"re-evaluated best {label}" for _, label in
                                              ACCURACIES),
             "its MACs", "tokens", "cost (USD)", "notes"]
  rows = []
  for s in data["strategies"]:
    rows.append([s["label"], ",".join(str(x) for x in s["seeds"]), s["source"],
                 *(s[key]["text"] for key, _ in ACCURACIES),
                 tables.Stat(**s["macs"]).format(integer=True),
                 tables.Stat(**s["tokens"]).format(integer=True)
                 + (" (estimated)" if s["tokens_estimated"] else ""),
                 tables.Stat(**s["cost_usd"]).format(digits=4),
                 (notes or {}).get(s["strategy"], "")])
  lines.append(tables.markdown_table(headers, rows))
  if data["paired_tests"]:
    lines += [f"Paired against **{data['reference']}** (difference = strategy − "
              f"{data['reference']}):", ""]
    headers = ["strategy", "accuracy", "paired seeds", "mean difference (95% CI)", "d_z",
               "paired-t p", "sign-flip p", "smallest possible sign-flip p"]
    rows = []
    for t in data["paired_tests"]:
      interval = t["interval"]
      diff = (tables.MISSING if t["mean"] is None else
              f"{_signed(t['mean'])}" + ("" if interval["half_width"] is None else
                                         f" ({_signed(interval['lo'])}..{_signed(interval['hi'])})"))
      rows.append([t["label"], t["metric_label"], ",".join(str(x) for x in t["seeds"]) or "-",
                   diff, tables.fmt(t["d_z"], 2) if t["d_z"] is not None else tables.MISSING,
                   _p(t["paired_t_p"]), _p(t["sign_flip_p"]), _p(t["min_sign_flip_p"])])
    lines.append(tables.markdown_table(headers, rows))
  lines += ["Accuracy–MACs Pareto front per strategy (accuracy: " + data["pareto_accuracy"] +
            "; a program is on the front when no other program of the strategy is at least as "
            "accurate and at most as expensive):", ""]
  rows = [[f["label"], str(len(f["points"])),
           "; ".join(f"seed {p['seed']} #{p['id']}: {p['accuracy']:.3f} ({p['source']}) at "
                     f"{p['macs']:,.0f} MACs" for p in f["front"]) or tables.MISSING]
          for f in data["pareto"]]
  lines.append(tables.markdown_table(["strategy", "programs", "non-dominated (cheapest first)"],
                                     rows))
  return "\n".join(lines) + "\n"


__all__ = ["ACCURACIES", "PARETO_ACCURACY", "REFERENCE", "fronts", "markdown", "reference_group",
           "run_result", "to_json"]
