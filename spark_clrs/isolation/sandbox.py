"""Run trusted code on untrusted candidate programs in a jailed child process (SPEC §9).

This module is the single seam through which candidate code is executed: every import of
a candidate, every check that runs it and every evaluation goes through
:func:`run_in_child` (a fresh interpreter per call) or a :class:`Worker` (pre-started
single-use interpreters that import JAX while the previous request runs). Either way the
child

* runs inside the bubblewrap jail of :mod:`spark_clrs.isolation.jail` (own user, PID, network, IPC,
  UTS and mount namespaces; the host read-only and mostly invisible; the workdir its only
  writable host directory; uid 65534). ``jail.set_mode("none")`` (``--sandbox=none``)
  is the explicit opt-out: then only the process limits below apply;
* is killed with everything it started when the run ends: the jail's PID namespace dies
  with its init (``--die-with-parent`` also kills it when this process dies); without
  the jail, by process group, process tree and a per-run environment marker;
* gets a scrubbed environment (an allow-list, minus anything that looks like a key,
  token, secret, password, proxy or cloud credential), ``HOME`` and cwd its ``workdir``
  (``TMPDIR`` the jail's private, size-capped ``/tmp``);
* has a wall-clock timeout, an RSS watchdog over its process tree (``memory_mb``), an
  address-space limit (``RLIMIT_AS``) as a hard backstop, a file-size limit
  (``RLIMIT_FSIZE``), a process cap (``RLIMIT_NPROC`` in its user namespace, or a pids
  cgroup when we run as root), a workdir watchdog (total bytes and files), no core dumps,
  and a cap on the bytes it may write to stdout+stderr;
* returns its result through a JSON file in ``workdir``, never through stdout.

Paths in the payload: strings naming ``workdir`` or a path under it are valid inside the
child (a worker's own directory is translated back and forth); the value of a top-level
key in :data:`STAGED_KEYS` (``program``, ``program_path``) that names a file outside
``workdir`` (e.g. ``RUN/programs/0001.py``) is copied into ``workdir/.sandbox/inputs/``
and the child gets the copy (the jail cannot see the original); nothing else outside the
workdir is visible. The result's strings are mapped back.

Outcomes are one of :data:`STATUSES`; the parent never raises for anything the child
does. Default address-space limit: ``max(2 * memory_mb, memory_mb + 8192)`` MiB on
CPU-only hosts (JAX/XLA on CPU reserves about 2-3 GiB of virtual memory for a small
model); no ``RLIMIT_AS`` when an accelerator is visible, because CUDA/TPU runtimes
reserve far more virtual memory than they use (the RSS watchdog still applies).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import queue
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psutil

from spark_clrs.isolation import jail

STATUSES = ("ok", "error", "timeout", "crashed", "memory", "output_limit")

# Environment variable carrying the per-run marker used (without the jail) to find
# escaped descendants.
MARKER_VAR = "SPARK_SANDBOX_RUN"
# Environment variable naming the child's progress file (see report_progress).
PROGRESS_VAR = "SPARK_SANDBOX_PROGRESS"
_CHILD_MODULE = "spark_clrs.isolation.child"
_PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]
_TAIL_BYTES = 8192
_RSS_POLL_S = 0.05
_DISK_POLL_S = 0.25
_CONTROL = ".sandbox"
JAX_CACHE_VAR = "JAX_COMPILATION_CACHE_DIR"
# Top-level payload keys whose value, a file outside the workdir, is copied in for the
# jail (the program to check or evaluate: it lives in RUN/programs/ or seeds/).
STAGED_KEYS = ("program", "program_path")

_KEEP_VARS = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONHASHSEED", "PYTHONWARNINGS",
    "PYTHONUNBUFFERED", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES",
})
_KEEP_PREFIXES = ("LC_", "JAX_", "XLA_", "CUDA_", "NVIDIA_", "ROCR_", "HIP_", "TPU_",
                  "OMP_", "MKL_", "OPENBLAS_", "SPARK_CLRS_")
_SECRET_WORDS = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|PROXY|COOKIE|SESSION", re.IGNORECASE)
_CLOUD_PREFIXES = ("AWS_", "GOOGLE_", "GCLOUD_", "GCP_", "CLOUDSDK_", "AZURE_", "OPENAI_",
                   "ANTHROPIC_", "GEMINI_", "HF_", "HUGGING", "LITELLM_", "COHERE_",
                   "MISTRAL_", "GROQ_", "TOGETHER", "DEEPSEEK_", "OPENROUTER_", "XAI_")
# Our own variables the child must not inherit (they configure the parent's jail).
_PARENT_ONLY = frozenset({jail.BWRAP_VAR})


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one sandboxed run.

  Attributes:
    timeout_s: wall-clock limit; the process tree is killed when it is reached.
    memory_mb: limit on the resident memory of the child's whole process tree.
    max_output_bytes: limit on stdout+stderr bytes; excess -> status ``output_limit``.
    address_space_mb: ``RLIMIT_AS`` of the child; ``None`` picks the default described in
      the module docstring, ``0`` disables it.
    max_processes: tasks (processes + threads) the jail may hold; 0 = ``max(1024, 32 x
      CPUs)`` (XLA starts a few threads per core).
    max_file_mb: ``RLIMIT_FSIZE``: largest file the child may write (MiB).
    workdir_mb: total size of the workdir (MiB); excess -> ``output_limit``.
    workdir_files: files and directories in the workdir; excess -> ``output_limit``.
  """

  timeout_s: float = 60.0
  memory_mb: int = 4096
  max_output_bytes: int = 1 << 20
  address_space_mb: int | None = None
  max_processes: int = 0
  max_file_mb: int = 1024
  workdir_mb: int = 2048
  workdir_files: int = 10000

  def resolved_address_space_mb(self) -> int:
    """The ``RLIMIT_AS`` in MiB that the child gets (0 = unlimited)."""
    if self.address_space_mb is not None:
      return max(0, int(self.address_space_mb))
    if accelerator_visible():
      return 0
    return max(2 * self.memory_mb, self.memory_mb + 8192)

  def resolved_max_processes(self) -> int:
    if self.max_processes > 0:
      return int(self.max_processes)
    return max(1024, 32 * (os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class ChildResult:
  """Outcome of one sandboxed run.

  Attributes:
    status: one of :data:`STATUSES`.
    value: the target's JSON result when ``status == "ok"``, else ``None``.
    reason: one line saying what went wrong (empty when ok).
    wall_seconds: wall-clock time from spawn (or request) to the end of cleanup.
    peak_rss_mb: peak resident memory of the child (tree) observed.
    stderr_tail: the last few KiB of the child's stderr.
    progress: the last record the target passed to ``report_progress`` (e.g. the check
      stage that was running when the child died).
    cpu_seconds: user+system CPU time of the child (and the descendants it waited for);
      unlike ``wall_seconds`` it does not grow when other processes share the CPUs.
  """

  status: str
  value: dict | None
  reason: str
  wall_seconds: float
  peak_rss_mb: float
  stderr_tail: str
  progress: dict = dataclasses.field(default_factory=dict)
  cpu_seconds: float = 0.0

  @property
  def ok(self) -> bool:
    return self.status == "ok"


def accelerator_visible() -> bool:
  """Whether a GPU/TPU runtime is likely in use (then no RLIMIT_AS by default)."""
  platforms = os.environ.get("JAX_PLATFORMS", "").lower()
  if platforms:
    return any(p in platforms for p in ("cuda", "gpu", "rocm", "tpu"))
  return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/accel0")


def gpu_given(env: Mapping[str, str]) -> bool:
  """Whether a child with environment ``env`` was given a GPU (then the jail binds the
  GPU device nodes): not when ``JAX_PLATFORMS`` names only other platforms or
  ``CUDA_VISIBLE_DEVICES`` is empty / -1; else when the host has NVIDIA devices."""
  platforms = env.get("JAX_PLATFORMS", "").lower()
  if platforms and not any(p in platforms for p in ("cuda", "gpu")):
    return False
  visible = env.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    ids = [d.strip() for d in visible.split(",") if d.strip()]
    if not ids or ids[0] == "-1":
      return False
  return os.path.exists("/dev/nvidiactl")


def is_secret_var(name: str) -> bool:
  """True for variables a candidate must never see (keys, tokens, proxies, cloud creds)."""
  upper = name.upper()
  return bool(_SECRET_WORDS.search(upper)) or upper.startswith(_CLOUD_PREFIXES)


def scrubbed_env(*, home: pathlib.Path, environ: Mapping[str, str] | None = None,
                 extra: Mapping[str, str] | None = None,
                 tmpdir: str | None = None) -> dict[str, str]:
  """The environment of a sandboxed child.

  Keeps an allow-list of harmless variables (PATH, locale, JAX/XLA/CUDA/BLAS settings,
  PYTHONPATH) minus anything :func:`is_secret_var` flags, points HOME at ``home`` and
  TMPDIR at ``tmpdir`` (default ``home/tmp``), and puts the project root on PYTHONPATH so
  the child can import us.
  """
  source = os.environ if environ is None else environ
  env = {k: v for k, v in source.items()
         if (k in _KEEP_VARS or k.startswith(_KEEP_PREFIXES)) and not is_secret_var(k)
         and k not in _PARENT_ONLY}
  for k, v in (extra or {}).items():
    if is_secret_var(k):
      raise ValueError(f"refusing to pass {k!r} into the sandbox: it looks like a secret")
    env[k] = v
  paths = [str(_PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
  env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
  env["HOME"] = str(home)
  env["TMPDIR"] = tmpdir or str(home / "tmp")
  env["PYTHONNOUSERSITE"] = "1"
  env["PYTHONDONTWRITEBYTECODE"] = "1"
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return env


# ----------------------------------------------------------------------------- helpers


def _tree(pid: int) -> list[psutil.Process]:
  try:
    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)
  except psutil.Error:
    return []


def _tree_rss_mb(pid: int) -> float:
  total = 0
  for p in _tree(pid):
    try:
      total += p.memory_info().rss
    except psutil.Error:
      pass
  return total / 2**20


def _tree_cpu_seconds(pid: int) -> float:
  total = 0.0
  for p in _tree(pid):
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.Error:
      pass
  return total


def _marked_processes(marker: str, spare: int | None = None) -> list[psutil.Process]:
  """Live processes of ours (except ``spare``) whose initial environment has ``marker``."""
  found = []
  me = os.getpid()
  uid = os.getuid()
  for p in psutil.process_iter(["uids"]):
    try:
      if p.pid in (me, spare) or p.info["uids"] is None or p.info["uids"].real != uid:
        continue
      if p.environ().get(MARKER_VAR) == marker and p.status() != psutil.STATUS_ZOMBIE:
        found.append(p)
    except psutil.Error:
      continue
  return found


def kill_tree(pgid: int, marker: str | None, spare: int | None = None) -> None:
  """Without the jail: kills the process group ``pgid``, its descendants, and anything
  carrying ``marker`` in its environment (descendants that left the group)."""
  for _ in range(20):
    procs = _tree(pgid)
    try:
      os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass
    for p in procs:
      try:
        p.kill()
      except psutil.Error:
        pass
    marked = _marked_processes(marker, spare) if marker else []
    for p in marked:
      try:
        p.kill()
      except psutil.Error:
        pass
    if not marked and not any(_alive(p) for p in procs):
      return
    time.sleep(0.01)


def _alive(p: psutil.Process) -> bool:
  try:
    return p.status() != psutil.STATUS_ZOMBIE
  except psutil.Error:
    return False


def _signal_name(signum: int) -> str:
  try:
    return signal.Signals(signum).name
  except ValueError:
    return f"signal {signum}"


class _Spawner:
  """Starts every sandbox process from one long-lived thread.

  ``bwrap --die-with-parent`` uses ``PR_SET_PDEATHSIG``, which fires when the *thread*
  that forked it exits; callers start workers from short-lived threads (thread pools), so
  the fork must happen in a thread that lives as long as the process.
  """

  def __init__(self) -> None:
    self._queue: queue.Queue = queue.Queue()
    self._thread: threading.Thread | None = None
    self._lock = threading.Lock()
    os.register_at_fork(after_in_child=self._reset)

  def _reset(self) -> None:
    self._queue = queue.Queue()
    self._thread = None
    self._lock = threading.Lock()

  def _loop(self) -> None:
    while True:
      future, args, kwargs = self._queue.get()
      try:
        future.set_result(subprocess.Popen(*args, **kwargs))
      except BaseException as e:  # Handed to the caller.
        future.set_exception(e)

  def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen:
    with self._lock:
      if self._thread is None or not self._thread.is_alive():
        self._thread = threading.Thread(target=self._loop, name="sandbox-spawner",
                                        daemon=True)
        self._thread.start()
    future: concurrent.futures.Future = concurrent.futures.Future()
    self._queue.put((future, args, kwargs))
    return future.result()


_SPAWNER = _Spawner()


@dataclasses.dataclass
class _Proc:
  """One started sandbox process (the outer ``bwrap``, or the child itself unjailed)."""

  popen: subprocess.Popen
  jailed: bool
  marker: str
  cgroup: jail.PidsCgroup | None
  pidfd: int = -1
  wait_status: int | None = None
  maxrss_kb: int = 0
  cpu_seconds: float = 0.0

  @property
  def pid(self) -> int:
    return self.popen.pid

  def poll(self) -> bool:
    """Reaps the process if it exited; True once it has."""
    if self.wait_status is not None:
      return True
    try:
      pid, status, usage = os.wait4(self.pid, os.WNOHANG)
    except ChildProcessError:
      pid, status, usage = self.pid, 0, None
    if pid == 0:
      return False
    self._reaped(status, usage)
    return True

  def _reaped(self, status: int, usage: Any) -> None:
    if self.jailed and os.WIFEXITED(status) and os.WEXITSTATUS(status) > 128:
      # bwrap exits with 128 + N when its child was killed by signal N.
      sig = os.WEXITSTATUS(status) - 128
      if sig in {s.value for s in signal.Signals}:
        status = sig
    self.wait_status = status
    if usage is not None:
      self.maxrss_kb = usage.ru_maxrss
      self.cpu_seconds = usage.ru_utime + usage.ru_stime
    self.popen.returncode = (os.waitstatus_to_exitcode(status)
                             if status else 0)

  def kill(self) -> None:
    """Kills the process and everything it started; reaps it."""
    if self.jailed:
      self._kill_jail()
    else:
      kill_tree(self.pid, self.marker)
    if self.wait_status is None:
      try:
        _, status, usage = os.wait4(self.pid, 0)
        self._reaped(status, usage)
      except ChildProcessError:
        self.wait_status = 0
    if self.pidfd >= 0:
      os.close(self.pidfd)
      self.pidfd = -1
    if self.cgroup is not None:
      for _ in range(100):
        if not self.cgroup.pids():
          break
        time.sleep(0.01)
      self.cgroup.remove()

  def _kill_jail(self) -> None:
    """SIGKILLs the jail's processes: the namespace's init first dies, which makes the
    kernel kill everything else in the PID namespace; waits until none is left."""
    for _ in range(200):
      procs = _tree(self.pid)
      stray = []
      for pid in self.cgroup.pids() if self.cgroup else []:
        try:
          stray.append(psutil.Process(pid))
        except psutil.Error:  # Exited meanwhile.
          continue
      for p in procs + stray:
        try:
          p.kill()
        except psutil.Error:
          pass
      if not any(_alive(p) for p in procs + stray):
        return
      time.sleep(0.01)


def _start(argv: list[str], *, mode: str, workdir: pathlib.Path, env: dict[str, str],
           gpu: bool, limits: Limits, stdout: int, stderr: int,
           pass_fds: Sequence[int] = ()) -> _Proc:
  """Starts ``argv`` jailed (``mode == "bwrap"``) or plainly; never waits for it."""
  marker = uuid.uuid4().hex
  if mode == "none":
    env = dict(env, **{MARKER_VAR: marker})
    popen = _SPAWNER.popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                           cwd=workdir, env=env, start_new_session=True, close_fds=True,
                           pass_fds=tuple(pass_fds))
    proc = _Proc(popen=popen, jailed=False, marker=marker, cgroup=None)
  else:
    jail.require()
    cgroup = None
    if jail.needs_cgroup():
      cgroup = jail.PidsCgroup.create(limits.resolved_max_processes())
      if cgroup is None:
        raise jail.JailUnavailableError("cannot create the pids cgroup that caps the jail's "
                                        "processes when running as root")
    command = jail.command(argv, workdir=workdir, env=env, gpu=gpu)
    if cgroup is not None:
      command = cgroup.wrap(command)
    try:
      popen = _SPAWNER.popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                             cwd=workdir, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                             start_new_session=True, close_fds=True,
                             pass_fds=tuple(pass_fds))
    except BaseException:
      if cgroup is not None:
        cgroup.remove()
      raise
    proc = _Proc(popen=popen, jailed=True, marker="", cgroup=cgroup)
  proc.pidfd = os.pidfd_open(proc.pid)
  return proc


@dataclasses.dataclass
class _Run:
  """Bookkeeping of one supervised request."""

  proc: _Proc
  control: pathlib.Path
  workdir: pathlib.Path
  limits: Limits
  start: float
  out_r: int
  err_r: int
  cpu_baseline: float = 0.0
  total_output: int = 0
  stdout_tail: bytes = b""
  stderr_tail: bytes = b""
  peak_rss_mb: float = 0.0
  killed_for: str | None = None
  disk_reason: str = ""


def _prepare_control(workdir: pathlib.Path, mode: str) -> pathlib.Path:
  control = workdir / _CONTROL
  if control.exists():
    shutil.rmtree(control, ignore_errors=True)
  control.mkdir(parents=True, exist_ok=True)
  if mode == "none":
    (workdir / "tmp").mkdir(exist_ok=True)
  return control


def _child_env(home: pathlib.Path, extra: Mapping[str, str] | None,
               mode: str) -> dict[str, str]:
  if mode == "none":
    return scrubbed_env(home=home, extra=extra)
  env = scrubbed_env(home=home, extra=extra, tmpdir="/tmp")
  cache = env.get(JAX_CACHE_VAR)
  if cache and not _under(os.path.realpath(cache), str(home)):
    # A compilation cache shared by candidates would let one plant executables for the
    # next; the jail does not see it (a cache inside the workdir stays).
    del env[JAX_CACHE_VAR]
  return env


def _request(target: str, payload: dict, workdir: pathlib.Path, control: pathlib.Path,
             limits: Limits, env: dict[str, str], mode: str) -> dict:
  return {
      "target": target,
      "payload": payload,
      "workdir": str(workdir),
      "env": env,
      "address_space_mb": limits.resolved_address_space_mb(),
      "max_file_mb": limits.max_file_mb,
      "max_processes": limits.resolved_max_processes() if mode == "bwrap" else 0,
      "result_path": str(control / "result.json"),
  }


def _workdir_usage(root: pathlib.Path, max_files: int) -> tuple[int, int]:
  """(bytes on disk, entries) under ``root``; stops counting past ``max_files``."""
  total, count = 0, 0
  stack = [str(root)]
  while stack and count <= max_files:
    try:
      with os.scandir(stack.pop()) as it:
        for entry in it:
          count += 1
          try:
            st = entry.stat(follow_symlinks=False)
          except OSError:
            continue
          total += max(st.st_blocks * 512, 0)
          if entry.is_dir(follow_symlinks=False):
            stack.append(entry.path)
    except OSError:
      continue
  return total, count


def _supervise(run: _Run) -> None:
  """Pumps output and enforces limits until the child exits or is killed."""
  sel = selectors.DefaultSelector()
  for fd in (run.out_r, run.err_r):
    os.set_blocking(fd, False)
    sel.register(fd, selectors.EVENT_READ)
  sel.register(run.proc.pidfd, selectors.EVENT_READ)
  next_rss = next_disk = 0.0
  limits = run.limits
  try:
    while run.killed_for is None:
      if run.proc.poll():
        break
      now = time.monotonic()
      if now - run.start > limits.timeout_s:
        run.killed_for = "timeout"
        break
      if now >= next_rss:
        run.peak_rss_mb = max(run.peak_rss_mb, _tree_rss_mb(run.proc.pid))
        if run.peak_rss_mb > limits.memory_mb:
          run.killed_for = "memory"
          break
        next_rss = now + _RSS_POLL_S
      if now >= next_disk:
        used, files = _workdir_usage(run.workdir, limits.workdir_files)
        if files > limits.workdir_files:
          run.killed_for = "disk"
          run.disk_reason = f"more than {limits.workdir_files} files"
          break
        if used > limits.workdir_mb * 2**20:
          run.killed_for = "disk"
          run.disk_reason = f"{used / 2**20:.0f} MB, over the {limits.workdir_mb} MB limit"
          break
        next_disk = now + _DISK_POLL_S
      wait = min(_RSS_POLL_S, max(0.0, run.start + limits.timeout_s - now))
      for key, _ in sel.select(timeout=wait):
        if key.fd != run.proc.pidfd and not _pump(run, key.fd, sel):
          run.killed_for = "output_limit"
          break
  finally:
    sel.close()


def _pump(run: _Run, fd: int, sel: selectors.BaseSelector | None) -> bool:
  """Reads what is available on ``fd``; False once the output cap is exceeded."""
  try:
    chunk = os.read(fd, 1 << 16)
  except BlockingIOError:
    return True
  except OSError:
    chunk = b""
  if not chunk:
    if sel is not None:
      sel.unregister(fd)
    return True
  run.total_output += len(chunk)
  if fd == run.out_r:
    run.stdout_tail = (run.stdout_tail + chunk)[-_TAIL_BYTES:]
  else:
    run.stderr_tail = (run.stderr_tail + chunk)[-_TAIL_BYTES:]
  return run.total_output <= run.limits.max_output_bytes


def _drain(run: _Run, deadline_s: float = 1.0) -> None:
  """After the tree is dead: reads what is left in the pipes (bounded), then closes them."""
  end = time.monotonic() + deadline_s
  for fd in (run.out_r, run.err_r):
    while time.monotonic() < end and run.total_output <= 4 * run.limits.max_output_bytes:
      try:
        chunk = os.read(fd, 1 << 16)
      except BlockingIOError:
        time.sleep(0.005)
        continue
      except OSError:
        break
      if not chunk:
        break
      run.total_output += len(chunk)
      if fd == run.out_r:
        run.stdout_tail = (run.stdout_tail + chunk)[-_TAIL_BYTES:]
      else:
        run.stderr_tail = (run.stderr_tail + chunk)[-_TAIL_BYTES:]
    os.close(fd)


def _supervised(run: _Run) -> None:
  """Supervises ``run`` to its end, then kills what is left and closes the pipes."""
  try:
    _supervise(run)
  finally:
    run.proc.kill()
    _drain(run)


def _read_json(path: pathlib.Path) -> dict | None:
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def _last_line(text: str) -> str:
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  return lines[-1][:300] if lines else ""


def _finish(run: _Run) -> ChildResult:
  """Classifies a finished (and fully killed) run."""
  wall = time.monotonic() - run.start
  stderr = run.stderr_tail.decode("utf-8", "replace")
  peak = max(run.peak_rss_mb, run.proc.maxrss_kb / 1024.0)
  progress = _read_json(run.control / "progress.json") or {}
  result = _read_json(run.control / "result.json")
  limits = run.limits
  cpu = max(0.0, run.proc.cpu_seconds - run.cpu_baseline)

  def done(status: str, reason: str, value: dict | None = None) -> ChildResult:
    return ChildResult(status=status, value=value, reason=reason, wall_seconds=wall,
                       peak_rss_mb=peak, stderr_tail=stderr, progress=progress,
                       cpu_seconds=cpu)

  if run.killed_for == "timeout":
    return done("timeout", f"timeout: still running after {limits.timeout_s:g} s wall clock; "
                "killed its process tree")
  if run.killed_for == "memory":
    return done("memory", f"memory: process tree used {peak:.0f} MB resident, over the "
                f"{limits.memory_mb} MB limit; killed")
  if run.killed_for == "disk":
    return done("output_limit", f"output_limit: the workdir holds {run.disk_reason}; killed")
  if run.total_output > limits.max_output_bytes:
    return done("output_limit", f"output_limit: wrote more than {limits.max_output_bytes} "
                "bytes to stdout/stderr; killed")
  status = run.proc.wait_status
  if status is not None and os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    name = _signal_name(sig)
    if sig in (signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV) and re.search(
        r"RESOURCE_EXHAUSTED|[Oo]ut of memory|bad_alloc|Cannot allocate memory", stderr):
      return done("memory", f"memory: killed by {name} after running out of memory "
                  f"(address-space limit {limits.resolved_address_space_mb()} MB)")
    detail = _last_line(stderr)
    hint = " (not by the sandbox: perhaps the kernel's OOM killer)" if sig == signal.SIGKILL else ""
    return done("crashed", f"crashed: killed by {name} (signal {sig}){hint}"
                + (f"; last stderr line: {detail}" if detail else ""))
  if result is not None and result.get("status") in ("ok", "error", "memory"):
    if result["status"] == "ok":
      value = result.get("value")
      if not isinstance(value, dict):
        return done("error", f"error: target returned {type(value).__name__}, expected a "
                    "JSON object (dict)")
      return done("ok", "", value)
    return done(result["status"], f"{result['status']}: {result.get('reason', '')}")
  code = os.WEXITSTATUS(status) if status is not None else -1
  detail = _last_line(stderr)
  return done("error", f"error: child exited with code {code} without a result"
              + (f"; last stderr line: {detail}" if detail else ""))


# --------------------------------------------------------------------------- payload paths


def _under(path: str, root: str) -> bool:
  return path == root or path.startswith(root + os.sep)


class _Paths:
  """Maps payload paths into the child's view and result paths back (module docstring)."""

  def __init__(self, caller: pathlib.Path, inside: pathlib.Path, host_control: pathlib.Path,
               mode: str):
    self.caller, self.inside, self.mode = str(caller), str(inside), mode
    self.host_inputs = host_control / "inputs"  # Where staged copies go on the host,
    self.inputs = pathlib.Path(inside) / _CONTROL / "inputs"  # and where the child sees them.
    self.back: dict[str, str] = {}

  def _in(self, s: str) -> str:
    if _under(s, self.caller):
      return self.inside + s[len(self.caller):]
    return s

  def _stage(self, s: str) -> str:
    """A copy of the file ``s`` in the workdir, where the jail can read it."""
    if self.mode != "bwrap" or not os.path.isfile(s):
      return s
    self.host_inputs.mkdir(exist_ok=True)
    name = f"{len(self.back)}_{os.path.basename(s)}"
    shutil.copyfile(s, self.host_inputs / name)
    self.back[str(self.inputs / name)] = s
    return str(self.inputs / name)

  def _out(self, s: str) -> str:
    if s in self.back:
      return self.back[s]
    if _under(s, self.inside):
      return self.caller + s[len(self.inside):]
    return s

  def into(self, payload: dict) -> dict:
    out = {}
    for key, value in payload.items():
      if key in STAGED_KEYS and isinstance(value, str) and not _under(value, self.caller):
        out[key] = self._stage(value)
      else:
        out[key] = _map_strings(value, self._in)
    return out

  def out(self, value: Any) -> Any:
    return _map_strings(value, self._out)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
  if isinstance(value, str):
    return fn(value)
  if isinstance(value, dict):
    return {k: _map_strings(v, fn) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_map_strings(v, fn) for v in value]
  return value


def _translated(result: ChildResult, paths: _Paths) -> ChildResult:
  if result.value is None and not paths.back and paths.caller == paths.inside:
    return result
  return dataclasses.replace(result, value=paths.out(result.value),
                             progress=paths.out(result.progress))


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
    gpu: bind the GPU device nodes; None = :func:`gpu_given` of the child's environment.

  Returns:
    A :class:`ChildResult`; never raises for anything the child does.

  Raises:
    jail.JailUnavailableError: the jail cannot be created here (fail closed).
  """
  limits = limits or Limits()
  mode = jail.mode()
  workdir = pathlib.Path(workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  control = _prepare_control(workdir, mode)
  env = _child_env(workdir, extra_env, mode)
  env[PROGRESS_VAR] = str(control / "progress.json")
  paths = _Paths(workdir, workdir, control, mode)
  request = _request(target, paths.into(payload), workdir, control, limits, env, mode)
  request_path = control / "request.json"
  request_path.write_text(json.dumps(request))
  out_r, out_w = os.pipe()
  err_r, err_w = os.pipe()
  start = time.monotonic()
  try:
    proc = _start([sys.executable, "-m", _CHILD_MODULE, str(request_path)], mode=mode,
                  workdir=workdir, env=env, gpu=gpu_given(env) if gpu is None else gpu, limits=limits,
                  stdout=out_w, stderr=err_w)
  except BaseException:
    os.close(out_r)
    os.close(err_r)
    raise
  finally:
    os.close(out_w)
    os.close(err_w)
  run = _Run(proc=proc, control=control, workdir=workdir, limits=limits, start=start,
             out_r=out_r, err_r=err_r)
  _supervised(run)
  return _translated(_finish(run), paths)


# --------------------------------------------------------------------------- warm worker


@dataclasses.dataclass
class _Pending:
  """A pre-started worker: jailed, importing (or done importing), waiting for one request."""

  proc: _Proc
  sock: socket.socket
  home: pathlib.Path
  ready: bool = False


def _move_entries(src: pathlib.Path, dst: pathlib.Path, skip: Sequence[str] = ()) -> None:
  for entry in list(src.iterdir()):
    if entry.name in skip:
      continue
    target = dst / entry.name
    if target.is_dir() and not target.is_symlink():
      shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
      target.unlink()
    try:
      os.rename(entry, target)
    except OSError:  # Another file system.
      shutil.move(str(entry), str(target))


class Worker:
  """Pre-started single-use sandboxes: :meth:`run` uses a jailed interpreter that has
  already imported ``preload`` and starts the next one, which imports while this run goes.

  Each interpreter serves exactly one request and exits, so one candidate can never
  affect the next (no fork server, no shared interpreter). Each :meth:`run` gets the same
  guarantees as :func:`run_in_child`; the worker's own directory is swapped in for the
  caller's ``workdir`` (its files moved in before and out after; payload and result paths
  translated). ``gpu``: bind the GPU device nodes (None = :func:`gpu_given` of its
  environment); ``sandbox``: ``bwrap`` or ``none`` (default: ``jail.mode()`` when made).
  Use as a context manager; one run at a time (calls are serialised).
  """

  def __init__(self, *, workdir: pathlib.Path,
               preload: Sequence[str] = ("jax", "jax.numpy", "haiku", "numpy"),
               extra_env: Mapping[str, str] | None = None, start_timeout_s: float = 300.0,
               gpu: bool | None = None, sandbox: str | None = None):
    self._mode = sandbox or jail.mode()  # Fixed for this worker's life.
    if self._mode not in jail.MODES:
      raise ValueError(f"sandbox={self._mode!r} is not one of {', '.join(jail.MODES)}")
    self._workdir = pathlib.Path(workdir).resolve()
    self._preload = list(preload)
    self._extra_env = dict(extra_env or {})
    self._start_timeout_s = start_timeout_s
    self._gpu = gpu
    self._pending: _Pending | None = None
    self._lock = threading.Lock()

  def __enter__(self) -> Worker:
    self.start()
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  @property
  def alive(self) -> bool:
    return self._pending is not None and not self._pending.proc.poll()

  def _spawn(self) -> _Pending:
    self._workdir.mkdir(parents=True, exist_ok=True)
    home = self._workdir / f"job-{uuid.uuid4().hex[:12]}"
    home.mkdir()
    _prepare_control(home, self._mode)
    env = _child_env(home, self._extra_env, self._mode)
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    gpu = gpu_given(env) if self._gpu is None else self._gpu
    try:
      with open(self._workdir / "worker.log", "ab") as log:
        proc = _start([sys.executable, "-m", _CHILD_MODULE, "--worker",
                       str(child_sock.fileno()), json.dumps(self._preload)],
                      mode=self._mode, workdir=home, env=env, gpu=gpu, limits=Limits(), stdout=log.fileno(),
                      stderr=log.fileno(), pass_fds=(child_sock.fileno(),))
    except BaseException:
      parent_sock.close()
      shutil.rmtree(home, ignore_errors=True)
      raise
    finally:
      child_sock.close()
    return _Pending(proc=proc, sock=parent_sock, home=home)

  def _wait_ready(self, pending: _Pending) -> None:
    """Waits for the preload to finish; raises RuntimeError if the worker cannot start."""
    if pending.ready:
      return
    deadline = time.monotonic() + self._start_timeout_s
    msg = b""
    with selectors.DefaultSelector() as sel:
      sel.register(pending.sock, selectors.EVENT_READ)
      sel.register(pending.proc.pidfd, selectors.EVENT_READ)
      while time.monotonic() < deadline:
        events = sel.select(timeout=max(0.0, deadline - time.monotonic()))
        if any(key.fileobj is pending.sock for key, _ in events):
          try:
            msg = pending.sock.recv(1 << 16)
          except OSError:
            msg = b""
          break
        if events:  # The worker exited.
          break
    if not msg:
      self._discard(pending)
      log = self._workdir / "worker.log"
      tail = _last_line(log.read_text(errors="replace")) if log.exists() else ""
      raise RuntimeError(f"sandbox worker failed to start (preload {self._preload}): "
                         f"{tail or 'no output'}; see {log}")
    pending.ready = True

  @staticmethod
  def _discard(pending: _Pending) -> None:
    try:
      pending.sock.close()
    except OSError:
      pass
    pending.proc.kill()
    shutil.rmtree(pending.home, ignore_errors=True)

  def start(self) -> None:
    """Starts a worker and waits until its imports are done (a no-op when one is ready)."""
    with self._lock:
      self._ensure_ready()

  def _ensure_ready(self) -> _Pending:
    if self._pending is not None and self._pending.proc.poll():
      self._discard(self._pending)
      self._pending = None
    if self._pending is None:
      self._pending = self._spawn()
    try:
      self._wait_ready(self._pending)
    except RuntimeError:
      self._pending = None
      raise
    return self._pending

  def close(self) -> None:
    """Stops the pre-started worker."""
    with self._lock:
      if self._pending is not None:
        self._discard(self._pending)
        self._pending = None

  def run(self, target: str, payload: dict, *, workdir: pathlib.Path,
          limits: Limits | None = None) -> ChildResult:
    """Like :func:`run_in_child`, in the pre-started worker (the next one starts now)."""
    with self._lock:
      current = self._ensure_ready()
      self._pending = None
      try:
        self._pending = self._spawn()  # Imports while ``current`` runs.
      except (OSError, jail.JailUnavailableError):
        self._pending = None
      return self._run_on(current, target, payload, pathlib.Path(workdir).resolve(),
                          limits or Limits())

  def _run_on(self, pending: _Pending, target: str, payload: dict, workdir: pathlib.Path,
              limits: Limits) -> ChildResult:
    workdir.mkdir(parents=True, exist_ok=True)
    if not pending.proc.jailed:  # Unjailed, the child simply moves into ``workdir``.
      shutil.rmtree(pending.home, ignore_errors=True)
      home = host_dir = workdir
      _prepare_control(workdir, self._mode)
    else:
      home = pending.home  # The jail sees its directory here, whatever it is renamed.
      stale = workdir / _CONTROL
      if stale.exists():
        shutil.rmtree(stale, ignore_errors=True)
      _move_entries(workdir, home)
      try:  # A bind mount follows the inode: the caller sees the jail's files in workdir.
        workdir.rmdir()
        os.rename(home, workdir)
        host_dir = workdir
      except OSError:  # E.g. another file system: move the files back afterwards.
        workdir.mkdir(parents=True, exist_ok=True)
        host_dir = home
    control = home / _CONTROL
    env = _child_env(home, self._extra_env, self._mode)
    env[PROGRESS_VAR] = str(control / "progress.json")
    if not pending.proc.jailed:
      env[MARKER_VAR] = pending.proc.marker  # Found by kill_tree after exec's too.
    paths = _Paths(workdir, home, host_dir / _CONTROL, self._mode)
    request = _request(target, paths.into(payload), home, control, limits, env, self._mode)
    if pending.proc.cgroup is not None:
      pending.proc.cgroup.set_max(limits.resolved_max_processes())
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    start = time.monotonic()
    baseline = _tree_cpu_seconds(pending.proc.pid)
    try:
      pending.sock.settimeout(30.0)
      socket.send_fds(pending.sock, [json.dumps(request).encode()], [out_w, err_w])
      sent = True
    except OSError:
      sent = False
    finally:
      os.close(out_w)
      os.close(err_w)
      pending.sock.close()
    run = _Run(proc=pending.proc, control=host_dir / _CONTROL, workdir=host_dir,
               limits=limits, start=start, out_r=out_r, err_r=err_r, cpu_baseline=baseline)
    try:
      if sent:
        _supervised(run)
      else:
        pending.proc.kill()
        _drain(run)
      result = _finish(run) if sent else ChildResult(
          status="crashed", value=None, reason="crashed: the sandbox worker died before "
          "taking the request", wall_seconds=time.monotonic() - start, peak_rss_mb=0.0,
          stderr_tail="")
    finally:
      if host_dir != workdir:
        _move_entries(home, workdir)
        shutil.rmtree(home, ignore_errors=True)
    return _translated(result, paths)


def report_progress(**fields: Any) -> None:
  """Child side: records where the target is (e.g. ``stage="shape"``).

  The parent returns the last record as ``ChildResult.progress``, so a child that dies
  (timeout, crash, memory) can still be attributed to the step it was in. A no-op outside
  a sandbox child.
  """
  path = os.environ.get(PROGRESS_VAR)
  if not path:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(fields, f)
  os.replace(tmp, path)


__all__ = ["ChildResult", "Limits", "STATUSES", "Worker", "accelerator_visible", "gpu_given",
           "is_secret_var", "kill_tree", "report_progress", "run_in_child", "scrubbed_env"]
