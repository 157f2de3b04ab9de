"""Run directories read back for reports: :class:`RunData` and :func:`load_runs`.

A report never re-runs anything: it reads each run's archive and its own
``results/summary.json`` (rebuilt from the archive when a run has none yet), so
a report of a run and the run's own summary always show the same numbers.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any

from spark_clrs import config as config_lib
from spark_clrs.analysis import tables
from spark_clrs.analysis.finals import short_text
from spark_clrs.analysis.plots import best_so_far_curve
from spark_clrs.evaluation.statistics import Estimate
from spark_clrs.search.archive_db import PENDING_STATUSES, ArchiveDB, Candidate
from spark_clrs.search.results import SearchResult
from spark_clrs.search.rundir import RunDir

# Settings that make runs of one strategy comparable (same budget, protocol, LLM, seed
# program); runs differing in any are not pooled.
SETTING_FIELDS = ("iterations", "profile", "profile_overrides", "llm_model", "seed_program",
                  "factors", "eval_seeds")


class ReportError(ValueError):
  """A run directory cannot be read or a report cannot be written; one line naming the fix."""


def text(value: Any) -> str:
  """A setting as one table cell: lists comma-joined, ``None`` empty."""
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value)
  return "" if value is None else str(value)


@dataclasses.dataclass(frozen=True)
class RunData:
  """One run directory as read back for a report.

  Attributes:
    root: the run directory.
    info: strategy, seed, profile, iterations and the setting fields of the run.
    summary: the run's summary.json (the numbers every table shows).
    candidates: the archived candidates, ordered by id.
    history: summary.history_rows of the candidates (one flat row each).
  """

  root: pathlib.Path
  info: dict[str, Any]
  summary: dict[str, Any]
  candidates: tuple[Candidate, ...] = dataclasses.field(repr=False)
  history: tuple[dict[str, Any], ...] = dataclasses.field(repr=False)

  @property
  def strategy(self) -> str:
    return str(self.info["strategy"])

  @property
  def seed(self) -> int | None:
    return self.info.get("seed")

  @property
  def setting(self) -> tuple[tuple[str, str], ...]:
    return tuple((name, text(self.info.get(name))) for name in SETTING_FIELDS)

  def value(self, key: str) -> Any:
    """A per-run number of the tables (token and cost totals come from ``summary['llm']``)."""
    if key in ("total_tokens", "cost_usd"):
      return (self.summary.get("llm") or {}).get(key)
    return self.summary.get(key)

  def cell(self, key: str, kind: str) -> str:
    """One table cell of this run: an accuracy with its 95% half-width (summary.json's
    ``<key>_noise``: ``0.179 ± 0.012``), any other number by its kind."""
    stored = self.summary.get(f"{key}_noise")
    if isinstance(stored, dict) and stored.get("half_width") is not None:
      return short_text(Estimate.from_json(stored))
    return tables.format_stat(tables.Stat.of([self.value(key)]), kind)

  def finished(self) -> list[Candidate]:
    return [c for c in self.candidates if c.status not in PENDING_STATUSES]

  def best_so_far(self) -> list[tuple[int, float]]:
    """(evaluation, best fitness so far) after every finished candidate (plots' curve)."""
    return best_so_far_curve(self.candidates)

  def cumulative_rates(self) -> list[tuple[int, float, float]]:
    """(proposal id, valid rate, entanglement rate) over the proposals finished up to it."""
    out, valid, entangled, n = [], 0, 0, 0
    for c in self.finished():
      if not c.is_proposal:
        continue
      n += 1
      valid += c.can_be_parent
      entangled += bool(c.entangled)
      out.append((c.id, valid / n, entangled / n))
    return out

  def llm_calls(self) -> list[dict[str, Any]]:
    """The run's LLM calls (read from the archive on demand: prompts make them large)."""
    db = ArchiveDB(RunDir(self.root).archive_path)
    try:
      return db.llm_calls()
    finally:
      db.close()


def load_run(path: str | pathlib.Path) -> RunData:
  """Reads one run directory (finished or still running) through the archive.

  Raises:
    ReportError: ``path`` is not a spark_clrs run directory.
  """
  root = pathlib.Path(path).expanduser()
  run = RunDir(root)
  if not root.is_dir():
    raise ReportError(f"{root} is not a directory; pass run directories written by "
                      "python -m spark_clrs.search")
  if not run.archive_path.is_file():
    raise ReportError(f"{root} is not a spark_clrs run directory (no archive.sqlite); pass "
                      "directories written by python -m spark_clrs.search")
  result = SearchResult.load(root)
  info = {k: result.summary.get(k) for k in ("strategy", "seed", *SETTING_FIELDS)}
  if run.config_path.is_file():
    try:
      cfg = config_lib.parse_flagfile(str(run.config_path)).to_dict()
    except config_lib.ConfigError as e:
      if info["strategy"] is None:
        raise ReportError(f"{run.config_path} cannot be read ({e}) and {root} has no "
                          "summary.json; re-run the search once to rewrite them") from e
      cfg = {}
    for name, value in cfg.items():
      if name in info and (info[name] is None or name in ("profile_overrides", "eval_seeds")):
        info[name] = value
  if not info.get("llm_model"):
    info["llm_model"] = "spark/offline"
  if info.get("strategy") is None:
    raise ReportError(f"{root} has neither config.flags nor a summary naming its strategy; "
                      "is it a spark_clrs run directory?")
  return RunData(root=result.run_dir.resolve(), info=info, summary=result.summary,
                 candidates=tuple(result.candidates), history=tuple(result.history))


def load_runs(paths: Sequence[str | pathlib.Path]) -> list[RunData]:
  """Reads several run directories (each once, in the given order)."""
  if not paths:
    raise ReportError("no run directories given; pass at least one RUN written by "
                      "python -m spark_clrs.search")
  seen: set[pathlib.Path] = set()
  runs = []
  for path in paths:
    resolved = pathlib.Path(path).expanduser().resolve()
    if resolved in seen:
      continue
    seen.add(resolved)
    runs.append(load_run(path))
  return runs


__all__ = ["SETTING_FIELDS", "ReportError", "RunData", "load_run", "load_runs", "text"]
