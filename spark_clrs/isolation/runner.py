"""Running a trusted target on untrusted input in the jail: the one seam (SPEC §9).

Every import of a candidate, every check that runs it and every evaluation goes through a
:class:`Runner`: :func:`run_in_child` (a fresh interpreter per call) or a :class:`Worker`
(pre-started single-use interpreters that import JAX while the previous request runs).
Both start the child the same way (:func:`_spawn`: ``python -m spark_clrs.isolation.child
--serve FD PRELOAD`` through :mod:`launch`) and run a request the same way
(:func:`_execute`: the request over the control socket, :func:`supervision.supervise`,
:func:`outcome.classify`); a worker only sends its request later.

Paths in the payload: strings naming ``workdir`` or a path under it are valid inside the
child (a worker's own directory is translated back and forth); the value of a top-level key
in :data:`STAGED_KEYS` (``program``, ``program_path``) that names a file outside ``workdir``
(e.g. ``RUN/programs/0001.py``) is copied into the run's inputs directory, which only the
parent writes and the jail sees read-only at ``bwrap.INPUTS_DIR``; the child gets that
copy. Nothing else outside the workdir is visible. The result's strings are mapped back.
The parent writes nothing into a directory the jail can write except by renaming whole
entries (a worker's files moved in) and handing the tree to the jail's uid without
following links (:func:`identity.give_tree`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from spark_clrs.isolation import (
  bwrap,
  channel,
  devices,
  environment,
  identity,
  jail,
  launch,
  outcome,
  supervision,
)
from spark_clrs.isolation.limits import ChildResult, Limits

CHILD_MODULE = "spark_clrs.isolation.child"
STAGED_KEYS = ("program", "program_path")
MAX_STAGED_BYTES = 16 << 20
_LOG_BYTES = 1 << 20  # Of a worker's own output (its imports) kept in worker.log.


class Runner(Protocol):
  """Runs ``target(payload)`` (``"module:function"`` of trusted code) jailed in ``workdir``."""

  def run(self, target: str, payload: dict, *, workdir: pathlib.Path,
          limits: Limits | None = None) -> ChildResult:
    ...


def _mode(sandbox: str | None) -> str:
  mode = sandbox or jail.mode()
  if mode not in jail.MODES:
    raise ValueError(f"sandbox={mode!r} is not one of {', '.join(jail.MODES)}")
  if mode == "bwrap":
    jail.require()
  return mode


# ------------------------------------------------------------------------ payload paths


def _under(path: str, root: str) -> bool:
  return path == root or path.startswith(root + os.sep)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
  if isinstance(value, str):
    return fn(value)
  if isinstance(value, dict):
    return {k: _map_strings(v, fn) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_map_strings(v, fn) for v in value]
  return value


class _Paths:
  """Maps payload paths into the child's view and result paths back (module docstring)."""

  def __init__(self, caller: pathlib.Path, inside: pathlib.Path,
               inputs: pathlib.Path | None):
    self.caller, self.inside, self.inputs = str(caller), str(inside), inputs
    self.back: dict[str, str] = {}

  def _in(self, s: str) -> str:
    return self.inside + s[len(self.caller):] if _under(s, self.caller) else s

  def _stage(self, s: str) -> str:
    """A copy of the file ``s`` in the parent-only inputs directory."""
    if self.inputs is None or not os.path.isfile(s):
      return s
    name = f"{len(self.back)}_{os.path.basename(s)}"
    with open(s, "rb") as f:
      data = f.read(MAX_STAGED_BYTES + 1)
    if len(data) > MAX_STAGED_BYTES:
      return s
    fd = os.open(self.inputs / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    inside = f"{bwrap.INPUTS_DIR}/{name}"
    self.back[inside] = s
    return inside

  def _out(self, s: str) -> str:
    if s in self.back:
      return self.back[s]
    return self.caller + s[len(self.inside):] if _under(s, self.inside) else s

  def into(self, payload: dict) -> dict:
    return {key: (self._stage(value) if key in STAGED_KEYS and isinstance(value, str)
                  and not _under(value, self.caller) else _map_strings(value, self._in))
            for key, value in payload.items()}

  def translated(self, result: ChildResult) -> ChildResult:
    if not self.back and self.caller == self.inside:
      return result
    return dataclasses.replace(result, value=_map_strings(result.value, self._out),
                               progress=_map_strings(result.progress, self._out))


# ------------------------------------------------------------------------- one child


@dataclasses.dataclass
class _Child:
  """A started child waiting for (or running) its one request."""

  proc: supervision.Proc
  sock: socket.socket
  out_r: int
  err_r: int
  home: pathlib.Path  # The directory the jail sees as its workdir, at this path.
  inputs: pathlib.Path | None  # Parent-only; bound read-only (jailed only).
  extra_env: dict[str, str]
  ready: bool = False

  def discard(self) -> None:
    """Kills it and removes its inputs directory (its home is the caller's to remove)."""
    self.proc.kill()
    for fd in (self.out_r, self.err_r):
      try:
        os.close(fd)
      except OSError:
        pass
    self.sock.close()
    if self.inputs is not None:
      shutil.rmtree(self.inputs, ignore_errors=True)


def _spawn(home: pathlib.Path, *, mode: str, extra_env: Mapping[str, str], gpu: bool | None,
           preload: Sequence[str], limits: Limits,
           inputs_in: pathlib.Path | None = None) -> _Child:
  """Starts ``child --serve`` jailed (``mode == "bwrap"``) or plainly, in ``home``; its
  inputs directory goes into ``inputs_in`` (a directory no jail sees; default: TMPDIR)."""
  jailed = mode == "bwrap"
  home.mkdir(parents=True, exist_ok=True)
  if not jailed:
    (home / "tmp").mkdir(exist_ok=True)
  elif identity.dropping():
    supervision.reap_stale()
  env = environment.child_env(home, extra_env, jailed)
  inputs = (pathlib.Path(tempfile.mkdtemp(prefix="spark_clrs_inputs_", dir=inputs_in))
            if jailed else None)
  if inputs is not None:
    inputs.chmod(0o755)
  parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
  out_r, out_w = os.pipe()
  err_r, err_w = os.pipe()
  argv = [sys.executable, "-m", CHILD_MODULE, "--serve", str(child_sock.fileno()),
          json.dumps(list(preload))]
  try:
    started = launch.start(argv, jailed=jailed, workdir=home, env=env,
                           gpu=devices.gpu_given(env) if gpu is None else gpu, inputs=inputs,
                           memory_mb=limits.memory_mb,
                           max_tasks=limits.resolved_max_processes(), stdout=out_w,
                           stderr=err_w, channel_fd=child_sock.fileno(),
                           max_entries=4 * limits.workdir_files)
  except BaseException:
    for fd in (out_r, err_r):
      os.close(fd)
    parent_sock.close()
    if inputs is not None:
      shutil.rmtree(inputs, ignore_errors=True)
    raise
  finally:
    child_sock.close()
    os.close(out_w)
    os.close(err_w)
  return _Child(proc=supervision.Proc(started), sock=parent_sock, out_r=out_r, err_r=err_r,
                home=home, inputs=inputs, extra_env=dict(extra_env))


def _request(child: _Child, target: str, payload: dict, limits: Limits) -> dict:
  jailed = child.proc.jailed
  env = environment.child_env(child.home, child.extra_env, jailed)
  if not jailed:
    env[launch.MARKER_VAR] = child.proc.started.marker  # Found by kill_tree after exec's too.
  return {"target": target, "payload": payload, "workdir": str(child.home), "env": env,
          "address_space_mb": limits.resolved_address_space_mb(),
          "max_file_mb": limits.max_file_mb,
          "max_processes": limits.resolved_max_processes() if jailed else 0,
          "cpu_seconds": limits.resolved_cpu_seconds()}


def _execute(child: _Child, request: dict, *, host_dir: pathlib.Path, limits: Limits,
             cpu_baseline: float = 0.0) -> ChildResult:
  """Sends ``request``, supervises the child to its end and classifies the outcome."""
  start = time.monotonic()
  run = supervision.Run(proc=child.proc, workdir=host_dir, limits=limits, start=start,
                        out_r=child.out_r, err_r=child.err_r, sock=child.sock,
                        cpu_baseline=cpu_baseline)
  try:
    try:
      child.sock.settimeout(min(30.0, max(1.0, limits.timeout_s)))
      child.sock.sendall(channel.encode(request))
    except (OSError, channel.ProtocolError) as e:
      child.proc.kill()
      supervision.drain(run)
      reason = outcome.last_line(str(e)) or type(e).__name__
      return ChildResult(status="crashed", value=None, reason="crashed: the sandbox child "
                         f"died before taking the request ({reason})",
                         wall_seconds=time.monotonic() - start, peak_rss_mb=0.0,
                         stderr_tail=run.stderr_tail.decode("utf-8", "replace"))
    supervision.supervise(run)
    return outcome.classify(run)
  finally:
    if child.inputs is not None:
      shutil.rmtree(child.inputs, ignore_errors=True)


# -------------------------------------------------------------------------- fresh child


def run_in_child(target: str, payload: dict, *, workdir: pathlib.Path,
                 limits: Limits | None = None,
                 extra_env: Mapping[str, str] | None = None,
                 gpu: bool | None = None) -> ChildResult:
  """Runs ``target(payload)`` in a fresh, jailed Python child.

  Args:
    target: ``"module:function"`` of trusted code; the function takes the JSON payload
      dict and returns a JSON-able dict. Candidate program paths travel in the payload.
    payload: JSON-able dict (paths: see the module docstring).
    workdir: private directory of this run (created; becomes cwd and HOME; the child's
      only writable host directory). Input files put there before the call are visible
      to the child; files it writes there are there afterwards.
    limits: resource limits (defaults: :class:`Limits`).
    extra_env: additional non-secret environment variables for the child.
    gpu: bind the GPU device nodes; None = ``devices.gpu_given`` of the child's env.

  Returns:
    A :class:`ChildResult`; never raises for anything the child does.

  Raises:
    jail.JailUnavailableError: the jail cannot be created here (fail closed).
  """
  return _run_fresh(target, payload, workdir=pathlib.Path(workdir).resolve(),
                    limits=limits or Limits(), extra_env=extra_env or {}, gpu=gpu,
                    mode=_mode(None))


@dataclasses.dataclass(frozen=True)
class FreshRunner:
  """A :class:`Runner` that starts a fresh jailed interpreter per run (:func:`run_in_child`)
  with ``extra_env`` (non-secret); the counterpart of a pre-started :class:`Worker`.
  Whoever makes a runner chooses warm or fresh, once (an executor per slot, a CLI fresh)."""

  extra_env: Mapping[str, str] | None = None

  def run(self, target: str, payload: dict, *, workdir: pathlib.Path,
          limits: Limits | None = None) -> ChildResult:
    return run_in_child(target, payload, workdir=workdir, limits=limits,
                        extra_env=self.extra_env)


def _run_fresh(target: str, payload: dict, *, workdir: pathlib.Path, limits: Limits,
               extra_env: Mapping[str, str], gpu: bool | None, mode: str) -> ChildResult:
  child = _spawn(workdir, mode=mode, extra_env=extra_env, gpu=gpu, preload=(),
                 limits=limits)
  paths = _Paths(workdir, workdir, child.inputs)
  request = _request(child, target, paths.into(payload), limits)
  return paths.translated(_execute(child, request, host_dir=workdir, limits=limits))


# --------------------------------------------------------------------------- warm worker


def _move_entries(src: pathlib.Path, dst: pathlib.Path) -> None:
  """Renames every entry of ``src`` into the empty directory ``dst`` (links stay links)."""
  for name in os.listdir(src):
    os.rename(src / name, dst / name)


def _same_device(a: pathlib.Path, b: pathlib.Path) -> bool:
  try:
    return os.stat(a).st_dev == os.stat(b).st_dev
  except OSError:
    return False


class Worker:
  """Pre-started single-use sandboxes: :meth:`run` uses a jailed interpreter that has
  already imported ``preload`` and starts the next one, which imports while this run goes.

  Each interpreter serves exactly one request and exits, so one candidate can never
  affect the next. Each :meth:`run` gets the same guarantees as :func:`run_in_child`; the
  worker's own directory is renamed onto the caller's ``workdir`` (the caller's files
  moved in first; payload and result paths translated). A ``workdir`` on another file
  system than the worker's directory runs in a fresh child instead. The worker's own
  output (its imports) goes to ``workdir/worker.log``, written by the parent. ``gpu``:
  bind the GPU device nodes (None = from its environment); ``sandbox``: ``bwrap`` or
  ``none`` (default: ``jail.mode()`` when made). Use as a context manager; one run at a
  time (calls are serialised).
  """

  def __init__(self, *, workdir: pathlib.Path,
               preload: Sequence[str] = ("jax", "jax.numpy", "haiku", "numpy"),
               extra_env: Mapping[str, str] | None = None, start_timeout_s: float = 300.0,
               gpu: bool | None = None, sandbox: str | None = None):
    self._mode = _mode(sandbox)  # Fixed for this worker's life.
    self._workdir = pathlib.Path(workdir).resolve()
    self._preload = list(preload)
    self._extra_env = dict(extra_env or {})
    self._start_timeout_s = start_timeout_s
    self._gpu = gpu
    self._pending: _Child | None = None
    self._lock = threading.Lock()

  def __enter__(self) -> Worker:
    self.start()
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  @property
  def alive(self) -> bool:
    return self._pending is not None and not self._pending.proc.poll()

  def _log(self, data: bytes) -> None:
    path = self._workdir / "worker.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
      if os.fstat(fd).st_size < _LOG_BYTES:
        os.write(fd, data[:_LOG_BYTES])
    finally:
      os.close(fd)

  def _spawn(self) -> _Child:
    self._workdir.mkdir(parents=True, exist_ok=True)
    self._log(b"")
    return _spawn(self._workdir / f"job-{uuid.uuid4().hex[:12]}", mode=self._mode,
                  extra_env=self._extra_env, gpu=self._gpu, preload=self._preload,
                  limits=Limits(), inputs_in=self._workdir)

  def _pump_log(self, child: _Child, fd: int) -> None:
    try:
      chunk = os.read(fd, 1 << 16)
    except (BlockingIOError, OSError):
      return
    if chunk:
      self._log(chunk)

  def _wait_ready(self, child: _Child) -> None:
    """Waits for the preload to finish, logging the worker's output; raises RuntimeError
    if the worker cannot start."""
    if child.ready:
      return
    import selectors  # pylint: disable=g-import-not-at-top
    deadline = time.monotonic() + self._start_timeout_s
    reader = channel.Reader(channel.MAX_FRAME_BYTES)
    with selectors.DefaultSelector() as sel:
      for fd in (child.out_r, child.err_r, child.sock.fileno()):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
      sel.register(child.proc.pidfd, selectors.EVENT_READ)
      while not child.ready and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
          if key.fd == child.sock.fileno():
            try:
              data = os.read(key.fd, 1 << 16)
              child.ready = data != b"" and any(m.get("ready") for m in reader.feed(data))
            except (OSError, channel.ProtocolError):
              data = b""
            if not data:
              deadline = 0.0
          elif key.fd == child.proc.pidfd:
            deadline = 0.0
          else:
            self._pump_log(child, key.fd)
    if not child.ready:
      for fd in (child.out_r, child.err_r):
        self._pump_log(child, fd)
      child.discard()
      shutil.rmtree(child.home, ignore_errors=True)
      log = self._workdir / "worker.log"
      tail = outcome.last_line(log.read_bytes()[-4096:].decode(errors="replace"))
      raise RuntimeError(f"sandbox worker failed to start (preload {self._preload}): "
                         f"{tail or 'no output'}; see {log}")

  def start(self) -> None:
    """Starts a worker and waits until its imports are done (a no-op when one is ready)."""
    with self._lock:
      self._ensure_ready()

  def _ensure_ready(self) -> _Child:
    if self._pending is not None and self._pending.proc.poll():
      self._drop_pending()
    if self._pending is None:
      self._pending = self._spawn()
    try:
      self._wait_ready(self._pending)
    except RuntimeError:
      self._pending = None
      raise
    return self._pending

  def _drop_pending(self) -> None:
    if self._pending is not None:
      self._pending.discard()
      shutil.rmtree(self._pending.home, ignore_errors=True)
      self._pending = None

  def close(self) -> None:
    """Stops the pre-started worker."""
    with self._lock:
      self._drop_pending()

  def run(self, target: str, payload: dict, *, workdir: pathlib.Path,
          limits: Limits | None = None) -> ChildResult:
    """Like :func:`run_in_child`, in the pre-started worker (the next one starts now)."""
    limits = limits or Limits()
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with self._lock:
      if not _same_device(workdir, self._workdir):
        return _run_fresh(target, payload, workdir=workdir, limits=limits,
                          extra_env=self._extra_env, gpu=self._gpu, mode=self._mode)
      current = self._ensure_ready()
      self._pending = None
      try:
        self._pending = self._spawn()  # Imports while ``current`` runs.
      except (OSError, bwrap.JailUnavailableError, identity.IdentityError):
        self._pending = None
      return self._run_on(current, target, payload, workdir, limits)

  def _run_on(self, child: _Child, target: str, payload: dict, workdir: pathlib.Path,
              limits: Limits) -> ChildResult:
    for fd in (child.out_r, child.err_r):
      self._pump_log(child, fd)  # What the imports printed since they were ready.
    if not child.proc.jailed:  # Unjailed, the child simply moves into ``workdir``.
      shutil.rmtree(child.home, ignore_errors=True)
      child.home = workdir
      (workdir / "tmp").mkdir(exist_ok=True)
    else:
      _move_entries(workdir, child.home)
      workdir.rmdir()
      os.rename(child.home, workdir)  # A bind mount follows the inode.
      lease = child.proc.started.lease
      if lease is not None:
        identity.give_tree(workdir, lease.uid, lease.gid, 4 * limits.workdir_files)
    group = child.proc.cgroup
    if group is not None:
      try:
        group.set_limits(memory_mb=limits.memory_mb,
                         max_tasks=limits.resolved_max_processes())
      except OSError as e:
        child.discard()
        return ChildResult(status="memory", value=None, reason="memory: the pre-started "
                           f"worker already uses more than {limits.memory_mb} MB ({e})",
                           wall_seconds=0.0, peak_rss_mb=0.0, stderr_tail="")
    paths = _Paths(workdir, child.home, child.inputs)
    request = _request(child, target, paths.into(payload), limits)
    baseline = supervision.tree_usage(child.proc.pid)[1]
    return paths.translated(_execute(child, request, host_dir=workdir, limits=limits,
                                     cpu_baseline=baseline))
