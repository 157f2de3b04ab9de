"""A run read back from its directory: what ``spark_clrs.search()`` returns and reports read.

This module sits below both the controller and the reports (analysis/): it reads the
archive and ``results/summary.json`` and never runs anything. The best program is the best
so far by paired decisions (standing.py), the one the console announced last; the run's
reported result is the final re-evaluation (``summary["final"]``), shown next to it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from spark_clrs.evaluation import noise
from spark_clrs.search import rundir, standing, summary
from spark_clrs.search.archive_db import ArchiveDB, Candidate


@dataclasses.dataclass(frozen=True)
class BestProgram:
  """The best candidate of a run (the best so far by paired decisions)."""

  id: int
  text: str
  metrics: dict[str, Any]
  path: pathlib.Path

  @property
  def ood_val_acc(self) -> float | None:
    return self.metrics.get("ood_val_acc")

  @property
  def ood_acc(self) -> float | None:
    return self.metrics.get("ood_acc")


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """A run read back from its directory.

  Attributes:
    run_dir: the run directory.
    summary: the contents of ``results/summary.json`` (``summary["final"]``: the final
      re-evaluation with fresh seeds, the run's reported result).
    best: the best program (text, metrics, path), ``None`` if nothing was evaluated.
    history: one row per candidate (id, parent, scope, status, fitness, test accuracy,
      gain over the parent and its verdict, cost, ...), ordered by id;
      ``pandas.DataFrame(result.history)`` makes a table.
    candidates: the archived candidates themselves.
  """

  run_dir: pathlib.Path
  summary: dict[str, Any]
  best: BestProgram | None
  history: list[dict[str, Any]]
  candidates: tuple[Candidate, ...] = dataclasses.field(repr=False)

  @classmethod
  def load(cls, run_dir: str | pathlib.Path) -> SearchResult:
    """Reads a (finished or running) run directory."""
    run = rundir.RunDir(pathlib.Path(run_dir))
    if not run.archive_path.is_file():
      raise FileNotFoundError(f"{run.root} has no archive.sqlite; is it a spark_clrs run "
                              "directory?")
    db = ArchiveDB(run.archive_path)
    try:
      candidates = db.candidates()
      calls = db.llm_calls()
      final = summary.final_of(db, candidates)
    finally:
      db.close()
    if run.summary_path.is_file():
      data = json.loads(run.summary_path.read_text())
    else:
      data = summary.summarize(candidates, calls, {"run_dir": str(run.root)}, final)
    best = standing.current_best(candidates)
    best_program = None if best is None else BestProgram(
        id=best.id, text=best.code or "", metrics=best.metrics,
        path=run.program_path(best.id))
    return cls(run_dir=run.root, summary=data, best=best_program,
               history=summary.history_rows(candidates), candidates=tuple(candidates))

  @property
  def final(self) -> dict[str, Any] | None:
    """The final re-evaluation (``summary["final"]``), ``None`` when the run had none."""
    return self.summary.get("final")

  def plot(self, fig: Any = None) -> Any:
    """Best fitness against evaluations, infeasible proposals marked; returns the figure.

    Uses pyplot, so in Jupyter the figure is shown inline.
    """
    from spark_clrs.analysis import plots

    if fig is None:
      import matplotlib.pyplot as plt

      fig = plt.figure(figsize=(7, 4))
    best = self.summary.get("best_ood_val_acc")
    title = f"{self.summary.get('strategy', 'search')}: best " + (
        f"{best:.4f}" if isinstance(best, float) else "-")
    plots.draw_best_so_far(fig, self.candidates, title)
    fig.tight_layout()
    return fig

  def __str__(self) -> str:
    s = self.summary

    def fmt(v: Any) -> str:
      return f"{v:.4f}" if isinstance(v, float) else str(v)

    n = s.get("proposals")
    text = (f"run {self.run_dir}: {n} proposal{'' if n == 1 else 's'}, search-time best "
            f"candidate {s.get('best_program_id')} with ood_val_acc "
            f"{(s.get('best_ood_val_acc_noise') or {}).get('text', '-')}, valid rate "
            f"{fmt(s.get('valid_rate'))}, entanglement rate {fmt(s.get('entanglement_rate'))}")
    final = self.final
    if final and final.get("best_id") is not None:
      entry = next(e for e in final["candidates"] if e["id"] == final["best_id"])
      text += (f"\nresult (final re-evaluation, fresh seeds "
               f"{','.join(map(str, final['seeds']))}): candidate {entry['id']} ood_val_acc "
               f"{entry[noise.FITNESS + noise.INTERVAL_SUFFIX]['text']}, ood_acc "
               f"{entry[noise.TEST + noise.INTERVAL_SUFFIX]['text']}")
    return text
