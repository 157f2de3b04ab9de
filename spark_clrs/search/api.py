"""Run a SPARK search: ``python -m spark_clrs.search`` and ``spark_clrs.search(**flags)``.

Command line (absl flags; ``--helpfull`` lists them all with their help)::

    python -m spark_clrs.search --flagfile=quick.flags      # CPU demo, offline proposer
    python -m spark_clrs.search --flagfile=dfs.flags \\
        --llm_model=openai/gpt-4o-mini                      # the paper's setting

Python / Jupyter::

    import spark_clrs
    result = spark_clrs.search(flagfile="quick.flags", iterations=4, output="runs/nb")
    result.best.text, result.best.metrics, result.summary, result.history
    result.final      # the top candidates re-trained with fresh seeds: the run's result
    result.plot()

Re-running the same command (or ``--flagfile=RUN/config.flags``) resumes the run. This
module is where a search is put together: the configuration (resolve.py), the loop
(controller.py) and the run page, which it hands to the loop as a refresh callback so the
loop never imports the viewer. It returns a `SearchResult` read back from the archive
(results.py).
"""

from __future__ import annotations

from spark_clrs.cli import quiet  # isort: skip  (first: hides TF/XLA/CUDA C++ log lines)
import logging
import math
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from spark_clrs import config as config_lib
from spark_clrs.search import resolve, rundir
from spark_clrs.search.errors import SearchError
from spark_clrs.search.results import BestProgram, SearchResult

make_config = resolve.config_of  # A config from a flagfile plus overrides (compare's cells).


class PageRefresher:
  """The run page (results/index.html) and plot, redrawn as the loop asks (interface 7).

  While running, the page is rewritten at most every ``viewer.REFRESH_S`` seconds, and the
  wait after a write is at least ``viewer.REFRESH_COST_FACTOR`` times what the write took,
  so a large archive never slows the loop by more than that fraction. At the end
  (``final=True``) the page and ``results/best_so_far.png`` are written. A failure only
  costs the page (logged).
  """

  def __init__(self, run: rundir.RunDir):
    self.run = run
    self._due = 0.0

  def __call__(self, *, candidates: Sequence[Any], calls: Sequence[dict[str, Any]],
               summary: dict[str, Any], final: bool) -> None:
    start = time.monotonic()
    if not final and start < self._due:
      return
    try:
      from spark_clrs.analysis import plots, viewer

      viewer.write_run_page(self.run.root, candidates=candidates, calls=calls,
                            summary=summary, live=not final)
      if final:
        best = (summary.get("best_ood_val_acc_noise") or {}).get("text", "-")
        title = (f"{summary.get('strategy')} on {summary.get('profile')} (seed "
                 f"{summary.get('seed')}): best {best}")
        plots.save_best_so_far(candidates, self.run.plot_path, title)
      took = time.monotonic() - start
      self._due = start + took + max(viewer.REFRESH_S, viewer.REFRESH_COST_FACTOR * took)
    except Exception as e:  # The page is a view of the archive; the search goes on.
      logging.getLogger("spark_clrs").warning("results page or plot not written: %s: %s",
                                              type(e).__name__, e)
      self._due = math.inf  # Tried again at the end only.


def run(opened: rundir.OpenedRun, *, proposer: Any = None, evaluate: Any = None,
        stream: Any = None) -> SearchResult:
  """Runs (or resumes) the search in an opened run directory and reads it back.

  ``proposer`` and ``evaluate`` replace the configured proposer and executor (see
  ``Controller``); the run page is refreshed as the loop goes.
  """
  from spark_clrs.search.controller import Controller

  Controller(opened, stream=stream, proposer=proposer, evaluate=evaluate,
             refresh=PageRefresher(opened.run)).run()
  return SearchResult.load(opened.run.root)


def search(flagfile: str | None = None, *, proposer: Any = None,
           **overrides: Any) -> SearchResult:
  """Runs (or resumes) a search and returns its result.

  Args:
    flagfile: an absl flagfile such as ``"quick.flags"`` read first (its nested
      ``--flagfile=`` lines resolve from the working directory).
    proposer: a ``spark_clrs.proposers.Proposer`` to use instead of the one
      ``--strategy`` names (e.g. a custom strategy or a benchmark's); its ``name``
      attribute, if any, is recorded as the candidates' strategy.
    **overrides: any ``python -m spark_clrs.search`` flag by name, e.g.
      ``iterations=4, output="runs/demo", llm_model="openai/gpt-4o-mini"``.

  Raises:
    ConfigError, RunDirError, SearchError: with a one-line message naming the fix.
  """
  return run(resolve.open_search(flagfile, **overrides), proposer=proposer, stream=sys.stderr)


def main(argv: list[str], evaluate: Any = None) -> int:
  """absl entry point (``evaluate``: see :func:`run_cli`)."""
  from absl import app, flags

  quiet.apply_flag()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; every setting is a --flag "
                         "(see --helpfull)")
  # SIGTERM (e.g. from a job scheduler) stops like Ctrl-C: sandboxed children are cleaned
  # up and the results written; the in-flight candidate is re-run on resume.
  signal.signal(signal.SIGTERM, _raise_interrupt)
  try:
    result = run(rundir.open_run(config_lib.from_flags(flags.FLAGS)), evaluate=evaluate)
  except (config_lib.ConfigError, rundir.RunDirError, SearchError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2 if isinstance(e, config_lib.ConfigError) else 1
  except KeyboardInterrupt:
    print("interrupted; re-run the same command to resume", file=sys.stderr)
    return 130
  print(result)
  return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
  del signum, frame
  raise KeyboardInterrupt


def run_cli(evaluate: Any = None) -> None:
  """The command line; ``evaluate`` replaces the executor (a test's fake trainer)."""
  from absl import app, flags

  config_lib.define_flags()
  flags.adopt_module_key_flags(config_lib)  # --help lists the search flags.
  quiet.define_flag()
  app.run(lambda argv: main(argv, evaluate))


__all__ = ["BestProgram", "PageRefresher", "SearchResult", "make_config", "run", "search"]
