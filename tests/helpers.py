"""Shared test fakes and constants, and the one tiny real search of a test session.

* :class:`FakeTrainer` / :class:`FakeExecutor`: deterministic metrics from a program's text
  and training seeds in microseconds (no JAX, no jail), shaped like the trusted scorer's
  (per-seed and per-graph accuracies, intervals' raw material, MACs), for tests where the
  trainer or the jail is not the point. ``FakeTrainer`` is the ``evaluate=`` of
  ``Controller``/``search.api.run``/``compare``; ``FakeExecutor`` is an executor (slots,
  context manager) for transfer's cells.
* :func:`fake_compare`: a comparison (2 strategies x 3 seeds) on the real search loop
  with the fake trainer, made once per test process (report and compare tests).
* :func:`tiny_run`: the one real search of a test session: ``python -m spark_clrs.compare``
  with one cell (SPARK, seed 0), which runs a real search in the jail at the smallest
  settings that still make a seed, proposals, a final re-evaluation, a viewer page, a
  summary and a comparison table. Made once per test process and shared by the compare
  (its one real cell), report, viewer, browser and notebook tests.
* ``ENV``, ``JAX_CACHE``, ``TINY``: the settings every real tiny run uses.
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import types
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
JAX_CACHE = pathlib.Path(tempfile.gettempdir()) / "spark_clrs_test_jax_cache"
ENV = {"JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE), "MPLBACKEND": "Agg"}
TINY_PROFILE_OVERRIDES = ("train_steps=2", "hidden=8")
# The smallest real search that still exercises every part: the seed program with two
# training seeds (its spread is the seed term of every interval), two proposals checked and
# trained in the jail on two slots at once, and a final re-evaluation of the best with two
# fresh seeds. BFS rather than DFS: half the XLA compilation (DFS has ten hints, BFS two),
# which is nearly all of a training job's half minute on two idle cores.
TINY: dict[str, Any] = {"profile": "quick",
                        "profile_overrides": (*TINY_PROFILE_OVERRIDES, "algorithm=bfs"),
                        "iterations": 2, "num_islands": 2, "seed": 0, "seed_program_seeds": 2,
                        "final_top_k": 1, "final_seeds": 2, "parallel_evaluations": 2}
# The fake comparison runs no candidate code: no checks (they export and cost each program
# in the jail) and the fake trainer, hence no jail either.
FAKE_COMPARE: dict[str, Any] = {**TINY, "iterations": 3, "feasibility_check": False,
                                "sandbox": "none", "parallel_evaluations": 1}
FAKE_STRATEGIES = ("spark", "mutation")
FAKE_SEEDS = (0, 1, 2)
# Settings that only change what is printed (not run-defining): the shared run's are these.
TINY_CONSOLE: dict[str, Any] = {"progress": "log"}


def run_jailed(name: str, payload: dict, *, workdir: pathlib.Path, limits: Any,
               env: Mapping[str, str], worker: Any = None) -> Any:
  """``tests/data/sandbox_targets.py``'s target ``name`` in the jail: on ``worker`` (a
  pre-started ``runner.Worker``) if given, else in a fresh child with ``env``."""
  from spark_clrs.isolation import runner

  target = f"sandbox_targets:{name}"
  if worker is not None:
    return worker.run(target, payload, workdir=workdir, limits=limits)
  return runner.run_in_child(target, payload, workdir=workdir, limits=limits, extra_env=env)


def run_candidates(run: pathlib.Path) -> list[Any]:
  """Every candidate in the run directory ``run``'s archive, read through ``ArchiveDB``."""
  from spark_clrs.search import archive_db

  db = archive_db.ArchiveDB(run / "archive.sqlite")
  try:
    return db.candidates()
  finally:
    db.close()


def flags_of(settings: Mapping[str, Any]) -> list[str]:
  """Search settings as command-line flags (a tuple repeats its flag)."""
  out = []
  for name, value in settings.items():
    values = value if isinstance(value, (tuple, list)) else (value,)
    out += [f"--{name}={str(v).lower() if isinstance(v, bool) else v}" for v in values]
  return out


def quiet_env(**extra: str) -> dict[str, str]:
  """The environment of a CLI subprocess: the shared JAX cache, Agg, no verbose switches."""
  env = {**os.environ, **ENV, **extra}
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  env.pop("SPARK_CLRS_VERBOSE", None)
  return env


def page_data(page: str) -> dict:
  """The JSON of a viewer page's data element, as the browser's JSON.parse would read it."""
  match = re.search(r'<script type="application/json" id="spark-data">(.*?)</script>', page,
                    re.S)
  assert match, "no data element"
  return json.loads(match.group(1))


# ------------------------------------------------------------------------------ fake trainer

_GRAPHS = 16


def _rng(*key: Any) -> Any:
  import numpy as np

  return np.random.default_rng([zlib.crc32(repr(key).encode()) & 0xFFFFFFFF])


def program_quality(text: str) -> float:
  """The fake's true OOD-val accuracy of a program: a deterministic function of its text."""
  return 0.3 + 0.5 * (sum(text.encode()) % 997) / 997


def _accuracy(text: str, seeds: Sequence[int], split: str, quality: float) -> dict[str, Any]:
  """One accuracy as the scorer reports it: mean, per seed, std, CI and per graph."""
  import numpy as np

  difficulty = _rng("graphs", split).normal(0.0, 0.04, _GRAPHS)  # Same graphs for everyone.
  rows = []
  for seed in seeds:
    rng = _rng(text, split, int(seed))
    row = np.clip(quality + difficulty + rng.normal(0.0, 0.01) + rng.normal(0.0, 0.02, _GRAPHS),
                  0.0, 1.0)
    rows.append([float(x) for x in row])
  per_seed = [float(np.mean(r)) for r in rows]
  return {"": float(np.mean(per_seed)), "_per_seed": per_seed, "_std": float(np.std(per_seed)),
          "_ci": float(1.96 * np.std(rows) / np.sqrt(_GRAPHS)),
          "_ci_per_seed": [float(1.96 * np.std(r) / np.sqrt(_GRAPHS)) for r in rows],
          "_per_graph": rows}


def fake_metrics(text: str, seeds: Sequence[int], *, score_test: bool = True) -> dict[str, Any]:
  """Metrics shaped like the trusted scorer's for ``text`` trained with ``seeds``."""
  quality = program_quality(text)
  metrics: dict[str, Any] = {"seeds": [int(s) for s in seeds], "test_scored": score_test}
  splits = [("ood_val_acc", quality), ("val_acc", min(1.0, quality + 0.3))]
  if score_test:
    splits.append(("ood_acc", quality - 0.05))
  for name, q in splits:
    metrics.update({name + suffix: v for suffix, v in _accuracy(text, seeds, name, q).items()})
  metrics.update({"param_count": 2000 + len(text), "processor_param_count": 1000 + len(text),
                  "macs": 5000 + 10 * len(text), "train_seconds": 0.1})
  return metrics


def _result(status: str, metrics: dict[str, Any] | None, reason: str = "") -> Any:
  return types.SimpleNamespace(status=status, reason=reason, metrics=metrics, wall_seconds=0.01,
                               peak_rss_mb=0.0, stderr_tail="")


class FakeTrainer:
  """``evaluate(program_path, profile, seeds, *, workdir, limits)`` without training.

  Deterministic: the same text and seeds give the same metrics; every program trains.
  ``evaluate_test`` scores the OOD-test of an earlier ``score_test=False`` evaluation, as
  the local executor does. ``calls`` lists (program file name, seeds) per evaluation.
  """

  def __init__(self) -> None:
    self.calls: list[tuple[str, tuple[int, ...]]] = []

  def __call__(self, program_path: str | pathlib.Path, profile: Any, seeds: Sequence[int], *,
               workdir: pathlib.Path, limits: Any = None, score_test: bool = True) -> Any:
    del profile, workdir, limits
    path = pathlib.Path(program_path)
    self.calls.append((path.name, tuple(int(s) for s in seeds)))
    return _result("ok", fake_metrics(path.read_text(), seeds, score_test=score_test))

  def evaluate_test(self, program_path: str | pathlib.Path, profile: Any,
                    seeds: Sequence[int], *, workdir: pathlib.Path, limits: Any = None) -> Any:
    del profile, workdir, limits
    metrics = fake_metrics(pathlib.Path(program_path).read_text(), seeds)
    return _result("ok", {k: v for k, v in metrics.items()
                          if k.startswith("ood_acc") or k == "test_scored"})


class FakeExecutor:
  """An executor (``slots``, ``evaluate``, context manager) running :class:`FakeTrainer`."""

  slots = 1

  def __init__(self, trainer: FakeTrainer | None = None) -> None:
    self.trainer = trainer or FakeTrainer()

  def describe(self) -> str:
    return "executor: fake trainer (tests/helpers.py)"

  def start(self) -> None:
    pass

  def close(self) -> None:
    pass

  def __enter__(self) -> FakeExecutor:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  def evaluate(self, program_path: str | pathlib.Path, profile: Any, seeds: Sequence[int], *,
               workdir: pathlib.Path, limits: Any = None, score_test: bool = True) -> Any:
    return self.trainer(program_path, profile, seeds, workdir=workdir, limits=limits,
                        score_test=score_test)

  def evaluate_test(self, program_path: str | pathlib.Path, profile: Any,
                    seeds: Sequence[int], *, workdir: pathlib.Path, limits: Any = None) -> Any:
    return self.trainer.evaluate_test(program_path, profile, seeds, workdir=workdir,
                                      limits=limits)


# ------------------------------------------------------------------------ the tiny real run


TINY_STRATEGY = "spark"
TINY_SEED = 0


def tiny_compare_command(output: pathlib.Path) -> list[str]:
  """The command line of the session's real run (re-running it resumes)."""
  return [sys.executable, "-m", "spark_clrs.compare", f"--strategies={TINY_STRATEGY}",
          f"--seeds={TINY_SEED}", *flags_of({**TINY, **TINY_CONSOLE}), f"--output={output}"]


@dataclasses.dataclass(frozen=True)
class TinyRun:
  """The session's real tiny search (a one-cell comparison).

  Attributes:
    compare_dir: the comparison's directory (compare.md, compare.json, index.html).
    run_dir: the search's run directory, ``compare_dir/spark/seed0``. Read-only for
      tests: copy it before changing anything.
    process: the finished ``python -m spark_clrs.compare`` (stdout, stderr, status); its
      stderr holds the search's own console lines.
  """

  compare_dir: pathlib.Path
  run_dir: pathlib.Path
  process: subprocess.CompletedProcess

  @property
  def page(self) -> pathlib.Path:
    return self.run_dir / "results" / "index.html"

  def copy(self, dest: pathlib.Path) -> pathlib.Path:
    """A private copy of the run directory (to add rows, re-report or resume)."""
    shutil.copytree(self.run_dir, dest)
    return dest


_STATE: dict[str, Any] = {}


def temp_root() -> pathlib.Path:
  """A directory for this test process, removed when it exits."""
  if "root" not in _STATE:
    root = pathlib.Path(tempfile.mkdtemp(prefix="spark_clrs_tests_"))
    atexit.register(shutil.rmtree, root, True)
    _STATE["root"] = root
  return _STATE["root"]


def fake_compare() -> Any:
  """``compare.compare`` of FAKE_STRATEGIES x FAKE_SEEDS with the fake trainer (memoised).

  Returns the ``CompareResult``; its directory is ``temp_root()/fake_compare``.
  """
  if "fake_compare" not in _STATE:
    import io

    from spark_clrs.analysis import compare

    _STATE["fake_compare"] = compare.compare(
        FAKE_STRATEGIES, FAKE_SEEDS, output=temp_root() / "fake_compare", stream=io.StringIO(),
        evaluate=FakeTrainer(), **FAKE_COMPARE)
  return _STATE["fake_compare"]


SHARED_ENV = "SPARK_CLRS_TESTS_SHARED"  # Set by conftest.py for pytest-xdist's workers.


def tiny_run() -> TinyRun:
  """Runs the real tiny search on first use (a few minutes on two busy cores), then reuses it.

  Under pytest-xdist the workers share it: the first to ask runs it under a file lock in
  the session's shared directory (``$SPARK_CLRS_TESTS_SHARED``), the others wait and read it.

  Raises:
    AssertionError: the command failed (its stderr's end is in the message).
  """
  if "tiny" not in _STATE:
    base = pathlib.Path(os.environ[SHARED_ENV]) if os.environ.get(SHARED_ENV) else temp_root()
    out, record = base / "tiny_compare", base / "tiny_compare.json"
    with open(base / "tiny_compare.lock", "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if record.exists():
        done = subprocess.CompletedProcess(**json.loads(record.read_text()))
      else:
        done = subprocess.run(tiny_compare_command(out), cwd=ROOT, env=quiet_env(),
                              capture_output=True, text=True, timeout=1500)
        record.write_text(json.dumps({"args": done.args, "returncode": done.returncode,
                                      "stdout": done.stdout, "stderr": done.stderr}))
    if done.returncode != 0:
      raise AssertionError(f"the tiny search failed ({done.returncode}):\n{done.stderr[-4000:]}")
    _STATE["tiny"] = TinyRun(compare_dir=out, run_dir=out / TINY_STRATEGY / f"seed{TINY_SEED}",
                             process=done)
  return _STATE["tiny"]


__all__ = ["ENV", "FAKE_COMPARE", "FAKE_SEEDS", "FAKE_STRATEGIES", "FakeExecutor", "FakeTrainer",
           "JAX_CACHE", "ROOT", "SHARED_ENV", "TINY", "TINY_CONSOLE", "TINY_PROFILE_OVERRIDES", "TINY_SEED",
           "TINY_STRATEGY", "TinyRun", "fake_compare", "fake_metrics", "flags_of", "page_data",
           "program_quality", "quiet_env", "run_candidates", "run_jailed", "temp_root", "tiny_compare_command",
           "tiny_run"]
