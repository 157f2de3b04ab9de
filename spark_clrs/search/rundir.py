"""The run directory (SPEC §5): layout, resume detection, and no silent overwrites.

    RUN/config.flags        the resolved flags (re-runnable: resumes the run)
    RUN/archive.sqlite      candidates, LLM calls, decisions, metrics
    RUN/llm_cache.sqlite    replies keyed by the full request (resume never pays twice)
    RUN/programs/<id>.py    every candidate program
    RUN/logs/               search.log + events.jsonl
    RUN/results/            summary.json, best_program.py, best_so_far.png
    RUN/checkpoints/        optional model parameters of the best candidates
    RUN/work/<id>/          private working directories of the sandboxed children

`open_run` decides between a new run and a resumed one. A run directory
holding a run with different run-defining flags is refused with a message
naming them, unless ``--resume=false``, which leaves it untouched and picks a
fresh directory name. A lock file keeps two searches off one directory.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pathlib
from typing import IO

from spark_clrs import config as config_lib


class RunDirError(RuntimeError):
  """The run directory cannot be used as asked; the message says what to do instead."""


@dataclasses.dataclass(frozen=True)
class RunDir:
  """Paths of one run directory."""

  root: pathlib.Path

  @property
  def config_path(self) -> pathlib.Path:
    return self.root / "config.flags"

  @property
  def archive_path(self) -> pathlib.Path:
    return self.root / "archive.sqlite"

  @property
  def llm_cache_path(self) -> pathlib.Path:
    return self.root / "llm_cache.sqlite"

  @property
  def programs(self) -> pathlib.Path:
    return self.root / "programs"

  @property
  def logs(self) -> pathlib.Path:
    return self.root / "logs"

  @property
  def results(self) -> pathlib.Path:
    return self.root / "results"

  @property
  def checkpoints(self) -> pathlib.Path:
    return self.root / "checkpoints"

  @property
  def work(self) -> pathlib.Path:
    return self.root / "work"

  @property
  def log_path(self) -> pathlib.Path:
    return self.logs / "search.log"

  @property
  def events_path(self) -> pathlib.Path:
    return self.logs / "events.jsonl"

  @property
  def summary_path(self) -> pathlib.Path:
    return self.results / "summary.json"

  @property
  def best_program_path(self) -> pathlib.Path:
    return self.results / "best_program.py"

  @property
  def plot_path(self) -> pathlib.Path:
    return self.results / "best_so_far.png"

  def program_path(self, candidate_id: int) -> pathlib.Path:
    return self.programs / f"{candidate_id:04d}.py"

  def workdir(self, candidate_id: int, stage: str) -> pathlib.Path:
    """A private, empty-on-first-use working directory for one sandboxed child."""
    path = self.work / f"{candidate_id:04d}" / stage
    path.mkdir(parents=True, exist_ok=True)
    return path

  def make_layout(self) -> None:
    for d in (self.programs, self.logs, self.results, self.checkpoints, self.work):
      d.mkdir(parents=True, exist_ok=True)

  def write_program(self, candidate_id: int, text: str) -> pathlib.Path:
    """Writes ``programs/<id>.py`` once; an existing different file is an error, never replaced."""
    path = self.program_path(candidate_id)
    if path.exists():
      if path.read_text() == text:
        return path
      raise RunDirError(f"{path} already exists with different content; the run directory was "
                        "modified by hand: restore it or start a new --output")
    write_atomic(path, text)
    return path

  def ensure_programs(self, programs: dict[int, str]) -> None:
    """Re-creates program files missing after a crash (their text is in the archive)."""
    for candidate_id, text in programs.items():
      self.write_program(candidate_id, text)


def write_atomic(path: pathlib.Path, data: str | bytes) -> None:
  """Writes via a temporary file and rename, so a reader never sees half a file."""
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  if isinstance(data, bytes):
    tmp.write_bytes(data)
  else:
    tmp.write_text(data)
  os.replace(tmp, path)


def _is_empty_dir(path: pathlib.Path) -> bool:
  return path.is_dir() and not any(path.iterdir())


def _fresh_name(root: pathlib.Path) -> pathlib.Path:
  n = 2
  while (root.parent / f"{root.name}-{n}").exists():
    n += 1
  return root.parent / f"{root.name}-{n}"


@dataclasses.dataclass(frozen=True)
class OpenedRun:
  """The outcome of `open_run`.

  Attributes:
    run: the run directory to use.
    config: the configuration, with ``output`` set to ``run.root``.
    resumed: whether an existing run is continued.
    notes: human-readable lines about what was decided (print or log them).
  """

  run: RunDir
  config: config_lib.SearchConfig
  resumed: bool
  notes: tuple[str, ...]


def _write_config(run: RunDir, config: config_lib.SearchConfig) -> None:
  write_atomic(run.config_path, config.to_flags())


def open_run(config: config_lib.SearchConfig) -> OpenedRun:
  """Creates or resumes the run directory named by ``config.output``.

  Raises:
    RunDirError: the directory holds another run (the message names the
      differing flags) or something that is not a run.
  """
  root = pathlib.Path(config.output).expanduser()
  notes: list[str] = []
  if root.exists() and not _is_empty_dir(root):
    if not config.resume:
      fresh = _fresh_name(root)
      notes.append(f"--output={root} is occupied and --resume=false: starting a new run in "
                   f"{fresh}")
      root = fresh
    elif not (root / "config.flags").is_file():
      raise RunDirError(f"--output={root} exists and is not a spark_clrs run directory (no "
                        "config.flags); choose another --output or pass --resume=false")
    else:
      return _resume(RunDir(root), config)
  if root.exists() and not root.is_dir():
    raise RunDirError(f"--output={root} is a file; choose a directory path")
  run = RunDir(root)
  run.make_layout()
  config = config.replace(output=str(root), resume=True)
  _write_config(run, config)
  notes.append(f"new run in {root}")
  return OpenedRun(run=run, config=config, resumed=False, notes=tuple(notes))


def _resume(run: RunDir, config: config_lib.SearchConfig) -> OpenedRun:
  try:
    previous = config_lib.parse_flagfile(str(run.config_path))
  except config_lib.ConfigError as e:
    raise RunDirError(f"{run.config_path} cannot be read ({e}); fix it or choose another "
                      "--output") from e
  differing = config_lib.run_defining_differences(previous, config)
  if differing:
    raise RunDirError(
        f"--output={run.root} holds a run with different settings: {'; '.join(differing)}. "
        f"Re-run with --flagfile={run.config_path} to resume it, choose another --output, or "
        "pass --resume=false to start a new run beside it")
  config = config.replace(output=str(run.root), resume=True)
  notes = [f"resuming the run in {run.root}"]
  changed = config_lib.other_differences(previous.replace(output=config.output), config)
  if changed:
    n = 1
    while (run.logs / f"config.{n}.flags").exists():
      n += 1
    backup = run.logs / f"config.{n}.flags"
    run.logs.mkdir(parents=True, exist_ok=True)
    write_atomic(backup, run.config_path.read_text())
    _write_config(run, config)
    notes.append(f"changed since the last invocation: {'; '.join(changed)} (config.flags "
                 f"updated, previous version kept as {backup})")
  run.make_layout()
  return OpenedRun(run=run, config=config, resumed=True, notes=tuple(notes))


class RunLock:
  """An exclusive lock on a run directory, held while a search writes to it.

  The operating system releases it when the process dies, even on SIGKILL.
  """

  def __init__(self, run: RunDir):
    self._path = run.root / ".lock"
    self._file: IO[str] | None = None

  def acquire(self) -> None:
    handle = open(self._path, "a+")  # noqa: SIM115 - held open for the lock's lifetime.
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      handle.close()
      raise RunDirError(f"{self._path.parent} is in use by a running search (pid {holder}); "
                        "wait for it to finish or choose another --output") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    self._file = handle

  def release(self) -> None:
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self) -> RunLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
