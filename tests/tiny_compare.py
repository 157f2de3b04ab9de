"""A tiny real comparison shared by test_compare and test_report.

Two strategies x two seeds, one proposal per run, on the `quick` profile cut to
2 training steps at hidden 8 (offline proposer, real sandboxed checks and CLRS
training). It is made once per test process: the first call runs the grid,
later calls run the same `compare` again, which resumes and finds every run
finished. The directory is removed when the process exits.
"""

import atexit
import os
import pathlib
import shutil
import tempfile
from unittest import mock

from spark_clrs.analysis import compare

JAX_CACHE = pathlib.Path(tempfile.gettempdir()) / "spark_clrs_test_jax_cache"
ENV = {"JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE), "MPLBACKEND": "Agg"}
STRATEGIES = ("spark", "mutation")
SEEDS = (0, 1)
TINY = dict(profile="quick", profile_overrides=("train_steps=2", "hidden=8"), iterations=1,
            num_islands=2, progress="log")
TINY_FLAGS = ["--profile=quick", "--profile_overrides=train_steps=2",
              "--profile_overrides=hidden=8", "--iterations=1", "--num_islands=2",
              "--progress=log"]

_ROOT: list[pathlib.Path] = []


def root() -> pathlib.Path:
  """The process-wide directory holding the comparison (``root()/compare``)."""
  if not _ROOT:
    path = pathlib.Path(tempfile.mkdtemp(prefix="spark_clrs_tiny_compare_"))
    atexit.register(shutil.rmtree, path, True)
    _ROOT.append(path)
  return _ROOT[0]


def run(stream=None) -> compare.CompareResult:
  """Runs (first call) or resumes (later calls) the tiny comparison."""
  with mock.patch.dict(os.environ, ENV):
    return compare.compare(STRATEGIES, SEEDS, output=root() / "compare", stream=stream,
                           **TINY)
