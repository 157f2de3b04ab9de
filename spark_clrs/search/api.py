"""Run a SPARK search: ``python -m spark_clrs.search`` and ``spark_clrs.search(**flags)``.

Command line (absl flags; ``--helpfull`` lists them all with their help)::

    python -m spark_clrs.search --flagfile=quick.flags      # CPU demo, offline proposer
    python -m spark_clrs.search --flagfile=dfs.flags \\
        --llm_model=openai/gpt-4o-mini                      # the paper's setting

Python / Jupyter::

    import spark_clrs
    result = spark_clrs.search(flagfile="quick.flags", iterations=4, output="runs/nb")
    result.best.text, result.best.metrics, result.summary, result.history
    result.plot()

Re-running the same command (or ``--flagfile=RUN/config.flags``) resumes the
run. The loop itself lives in controller.py; this module turns flags or
keyword arguments into a `SearchConfig`, opens the run directory and returns
a `SearchResult` read back from the archive.
"""

from __future__ import annotations

from spark_clrs.cli import quiet  # isort: skip  (first: hides TF/XLA/CUDA C++ log lines)
import dataclasses
import json
import pathlib
import signal
import sys
from typing import Any

from spark_clrs import config as config_lib
from spark_clrs.search import rundir, summary
from spark_clrs.search.archive_db import ArchiveDB, Candidate


@dataclasses.dataclass(frozen=True)
class BestProgram:
  """The best candidate of a run (highest ``ood_val_acc``; earliest on ties)."""

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
    summary: the contents of ``results/summary.json``.
    best: the best program (text, metrics, path), ``None`` if nothing was evaluated.
    history: one row per candidate (id, parent, scope, status, fitness, test accuracy,
      cost, ...), ordered by id; ``pandas.DataFrame(result.history)`` makes a table.
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
    finally:
      db.close()
    if run.summary_path.is_file():
      data = json.loads(run.summary_path.read_text())
    else:
      data = summary.summarize(candidates, calls, {"run_dir": str(run.root)})
    pool = [c for c in candidates if c.can_be_parent]
    best = min(pool, key=lambda c: (-c.fitness, c.id)) if pool else None
    best_program = None if best is None else BestProgram(
        id=best.id, text=best.code or "", metrics=best.metrics,
        path=run.program_path(best.id))
    return cls(run_dir=run.root, summary=data, best=best_program,
               history=summary.history_rows(candidates), candidates=tuple(candidates))

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
    return (f"run {self.run_dir}: {n} proposal{'' if n == 1 else 's'}, best candidate "
            f"{s.get('best_program_id')} with ood_val_acc {fmt(s.get('best_ood_val_acc'))} "
            f"(ood_acc {fmt(s.get('best_ood_acc'))}), valid rate {fmt(s.get('valid_rate'))}, "
            f"entanglement rate {fmt(s.get('entanglement_rate'))}")


def make_config(flagfile: str | None = None, **overrides: Any) -> config_lib.SearchConfig:
  """A config from an optional absl flagfile plus keyword overrides (flag names)."""
  base = config_lib.parse_flagfile(flagfile) if flagfile else config_lib.SearchConfig()
  return config_lib.from_mapping(overrides, base)


def search(flagfile: str | None = None, **overrides: Any) -> SearchResult:
  """Runs (or resumes) a search and returns its result.

  Args:
    flagfile: an absl flagfile such as ``"quick.flags"`` read first (its nested
      ``--flagfile=`` lines resolve from the working directory).
    **overrides: any ``python -m spark_clrs.search`` flag by name, e.g.
      ``iterations=4, output="runs/demo", llm_model="openai/gpt-4o-mini"``.

  Raises:
    ConfigError, RunDirError, SearchError: with a one-line message naming the fix.
  """
  from spark_clrs.search.controller import Controller

  opened = rundir.open_run(make_config(flagfile, **overrides))
  Controller(opened, stream=sys.stderr).run()
  return SearchResult.load(opened.run.root)


def main(argv: list[str]) -> int:
  """absl entry point."""
  from absl import app, flags

  from spark_clrs.search.controller import Controller, SearchError

  quiet.apply_flag()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; every setting is a --flag "
                         "(see --helpfull)")
  # SIGTERM (e.g. from a job scheduler) stops like Ctrl-C: sandboxed children are cleaned
  # up and the results written; the in-flight candidate is re-run on resume.
  signal.signal(signal.SIGTERM, _raise_interrupt)
  try:
    opened = rundir.open_run(config_lib.from_flags(flags.FLAGS))
    Controller(opened).run()
  except (config_lib.ConfigError, rundir.RunDirError, SearchError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2 if isinstance(e, config_lib.ConfigError) else 1
  except KeyboardInterrupt:
    print("interrupted; re-run the same command to resume", file=sys.stderr)
    return 130
  print(SearchResult.load(opened.run.root))
  return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
  del signum, frame
  raise KeyboardInterrupt


def run_cli() -> None:
  from absl import app, flags

  config_lib.define_flags()
  flags.adopt_module_key_flags(config_lib)  # --help lists the search flags.
  quiet.define_flag()
  app.run(main)

