"""Run trusted code on untrusted candidate programs in a jailed child process (SPEC §9).

This module is the single seam through which candidate code is executed: every import of
a candidate, every check that runs it and every evaluation goes through
:func:`run_in_child` (a fresh interpreter per call) or a :class:`Worker` (a warm
interpreter that has imported JAX once and forks one jailed child per call). Either way
the child

* runs in its own session / process group, with the whole tree killed on every exit
  (including descendants that left the group: they are found by a per-run marker in
  their environment);
* gets a scrubbed environment (an allow-list, minus anything that looks like a key,
  token, secret, password, proxy or cloud credential), ``HOME``/``TMPDIR``/cwd set to a
  private ``workdir``;
* has a wall-clock timeout, an RSS watchdog over its process tree (``memory_mb``), an
  address-space limit (``RLIMIT_AS``) as a hard backstop, no core dumps, and a cap on
  the bytes it may write to stdout+stderr;
* returns its result through a JSON file in ``workdir``, never through stdout.

Outcomes are one of :data:`STATUSES`; the parent never raises for anything the child
does. Default address-space limit: ``max(2 * memory_mb, memory_mb + 8192)`` MiB on
CPU-only hosts (JAX/XLA on CPU reserves about 2-3 GiB of virtual memory for a small
model); no ``RLIMIT_AS`` when an accelerator is visible, because CUDA/TPU runtimes
reserve far more virtual memory than they use (the RSS watchdog still applies).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import selectors
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

STATUSES = ("ok", "error", "timeout", "crashed", "memory", "output_limit")

# Environment variable carrying the per-run marker used to find escaped descendants.
MARKER_VAR = "SPARK_SANDBOX_RUN"
# Environment variable naming the child's progress file (see report_progress).
PROGRESS_VAR = "SPARK_SANDBOX_PROGRESS"
_CHILD_MODULE = "spark_clrs._sandbox_child"
_PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
_TAIL_BYTES = 8192
_RSS_POLL_S = 0.05

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


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one sandboxed run.

  Attributes:
    timeout_s: wall-clock limit; the process tree is killed when it is reached.
    memory_mb: limit on the resident memory of the child's whole process tree.
    max_output_bytes: limit on stdout+stderr bytes; excess -> status ``output_limit``.
    address_space_mb: ``RLIMIT_AS`` of the child; ``None`` picks the default described in
      the module docstring, ``0`` disables it.
  """

  timeout_s: float = 60.0
  memory_mb: int = 4096
  max_output_bytes: int = 1 << 20
  address_space_mb: int | None = None

  def resolved_address_space_mb(self) -> int:
    """The ``RLIMIT_AS`` in MiB that the child gets (0 = unlimited)."""
    if self.address_space_mb is not None:
      return max(0, int(self.address_space_mb))
    if accelerator_visible():
      return 0
    return max(2 * self.memory_mb, self.memory_mb + 8192)


@dataclasses.dataclass(frozen=True)
class ChildResult:
  """Outcome of one sandboxed run.

  Attributes:
    status: one of :data:`STATUSES`.
    value: the target's JSON result when ``status == "ok"``, else ``None``.
    reason: one line saying what went wrong (empty when ok).
    wall_seconds: wall-clock time from spawn/fork to the end of cleanup.
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


def is_secret_var(name: str) -> bool:
  """True for variables a candidate must never see (keys, tokens, proxies, cloud creds)."""
  upper = name.upper()
  return bool(_SECRET_WORDS.search(upper)) or upper.startswith(_CLOUD_PREFIXES)


def scrubbed_env(*, home: pathlib.Path, environ: Mapping[str, str] | None = None,
                 extra: Mapping[str, str] | None = None) -> dict[str, str]:
  """The environment of a sandboxed child.

  Keeps an allow-list of harmless variables (PATH, locale, JAX/XLA/CUDA/BLAS settings,
  PYTHONPATH) minus anything :func:`is_secret_var` flags, points HOME and TMPDIR into
  ``home``, and puts the project root on PYTHONPATH so the child can import us.
  """
  source = os.environ if environ is None else environ
  env = {k: v for k, v in source.items()
         if (k in _KEEP_VARS or k.startswith(_KEEP_PREFIXES)) and not is_secret_var(k)}
  for k, v in (extra or {}).items():
    if is_secret_var(k):
      raise ValueError(f"refusing to pass {k!r} into the sandbox: it looks like a secret")
    env[k] = v
  paths = [str(_PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
  env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
  env["HOME"] = str(home)
  env["TMPDIR"] = str(home / "tmp")
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
  """Kills the process group ``pgid``, its descendants, and anything carrying ``marker``.

  ``/proc/PID/environ`` shows the environment a process was exec'ed with, so children
  forked by the warm worker carry the worker's marker: pass it with ``spare`` = the
  worker's pid.
  """
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


@dataclasses.dataclass
class _Run:
  """Bookkeeping of one supervised child."""

  pid: int
  marker: str
  control: pathlib.Path
  limits: Limits
  start: float
  out_r: int
  err_r: int
  total_output: int = 0
  stdout_tail: bytes = b""
  stderr_tail: bytes = b""
  peak_rss_mb: float = 0.0
  killed_for: str | None = None
  wait_status: int | None = None
  maxrss_kb: int = 0
  cpu_seconds: float = 0.0
  worker_died: bool = False


def _prepare_control(workdir: pathlib.Path) -> pathlib.Path:
  control = workdir / ".sandbox"
  control.mkdir(parents=True, exist_ok=True)
  (workdir / "tmp").mkdir(exist_ok=True)
  for name in ("result.json", "progress.json", "request.json"):
    (control / name).unlink(missing_ok=True)
  return control


def _request(target: str, payload: dict, workdir: pathlib.Path, control: pathlib.Path,
             limits: Limits, env: dict[str, str]) -> dict:
  return {
      "target": target,
      "payload": payload,
      "workdir": str(workdir),
      "env": env,
      "address_space_mb": limits.resolved_address_space_mb(),
      "result_path": str(control / "result.json"),
  }


def _supervise(run: _Run, exit_source: int, poll_exit: Callable[[], bool]) -> None:
  """Pumps output and enforces limits until the child exits or is killed.

  ``exit_source`` is a file descriptor that becomes readable when the child may have
  exited; ``poll_exit`` then sets ``run.wait_status`` and returns True once it has.
  """
  sel = selectors.DefaultSelector()
  for fd in (run.out_r, run.err_r):
    os.set_blocking(fd, False)
    sel.register(fd, selectors.EVENT_READ)
  sel.register(exit_source, selectors.EVENT_READ)
  next_rss = 0.0
  try:
    while run.killed_for is None:
      if poll_exit():
        break
      now = time.monotonic()
      if now - run.start > run.limits.timeout_s:
        run.killed_for = "timeout"
        break
      if now >= next_rss:
        run.peak_rss_mb = max(run.peak_rss_mb, _tree_rss_mb(run.pid))
        if run.peak_rss_mb > run.limits.memory_mb:
          run.killed_for = "memory"
          break
        next_rss = now + _RSS_POLL_S
      wait = min(_RSS_POLL_S, max(0.0, run.start + run.limits.timeout_s - now))
      for key, _ in sel.select(timeout=wait):
        if key.fd != exit_source and not _pump(run, key.fd, sel):
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
  peak = max(run.peak_rss_mb, run.maxrss_kb / 1024.0)
  progress = _read_json(run.control / "progress.json") or {}
  result = _read_json(run.control / "result.json")
  limits = run.limits

  def done(status: str, reason: str, value: dict | None = None) -> ChildResult:
    return ChildResult(status=status, value=value, reason=reason, wall_seconds=wall,
                       peak_rss_mb=peak, stderr_tail=stderr, progress=progress,
                       cpu_seconds=run.cpu_seconds)

  if run.killed_for == "timeout":
    return done("timeout", f"timeout: still running after {limits.timeout_s:g} s wall clock; "
                "killed its process tree")
  if run.killed_for == "memory":
    return done("memory", f"memory: process tree used {peak:.0f} MB resident, over the "
                f"{limits.memory_mb} MB limit; killed")
  if run.total_output > limits.max_output_bytes:
    return done("output_limit", f"output_limit: wrote more than {limits.max_output_bytes} "
                "bytes to stdout/stderr; killed")
  if run.worker_died:
    return done("crashed", "crashed: the sandbox worker died while the child ran (was it "
                "killed from inside the child?); it will be restarted")
  status = run.wait_status
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


# -------------------------------------------------------------------------- fresh child


def run_in_child(target: str, payload: dict, *, workdir: pathlib.Path,
                 limits: Limits | None = None,
                 extra_env: Mapping[str, str] | None = None) -> ChildResult:
  """Runs ``target(payload)`` in a fresh, jailed Python child.

  Args:
    target: ``"module:function"`` of trusted code; the function takes the JSON payload
      dict and returns a JSON-able dict. Candidate program paths travel in the payload.
    payload: JSON-able dict.
    workdir: private directory of this run (created; becomes cwd, HOME and TMPDIR).
    limits: resource limits (defaults: :class:`Limits`).
    extra_env: additional non-secret environment variables for the child.

  Returns:
    A :class:`ChildResult`; never raises for anything the child does.
  """
  limits = limits or Limits()
  workdir = pathlib.Path(workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  control = _prepare_control(workdir)
  marker = uuid.uuid4().hex
  env = scrubbed_env(home=workdir, extra=extra_env)
  env[MARKER_VAR] = marker
  env[PROGRESS_VAR] = str(control / "progress.json")
  request_path = control / "request.json"
  request_path.write_text(json.dumps(_request(target, payload, workdir, control, limits, env)))
  out_r, out_w = os.pipe()
  err_r, err_w = os.pipe()
  start = time.monotonic()
  try:
    proc = subprocess.Popen(
        [sys.executable, "-m", _CHILD_MODULE, str(request_path)], stdin=subprocess.DEVNULL,
        stdout=out_w, stderr=err_w, cwd=workdir, env=env, start_new_session=True,
        close_fds=True)
  finally:
    os.close(out_w)
    os.close(err_w)
  run = _Run(pid=proc.pid, marker=marker, control=control, limits=limits, start=start,
             out_r=out_r, err_r=err_r)
  pidfd = os.pidfd_open(proc.pid)

  def poll_exit() -> bool:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid == 0:
      return False
    run.wait_status, run.maxrss_kb = status, usage.ru_maxrss
    run.cpu_seconds = usage.ru_utime + usage.ru_stime
    proc.returncode = os.waitstatus_to_exitcode(status)
    return True

  try:
    _supervise(run, pidfd, poll_exit)
  finally:
    kill_tree(proc.pid, marker)
    if run.wait_status is None:
      _, status, usage = os.wait4(proc.pid, 0)
      run.wait_status, run.maxrss_kb = status, usage.ru_maxrss
      run.cpu_seconds = usage.ru_utime + usage.ru_stime
      proc.returncode = os.waitstatus_to_exitcode(status)
    os.close(pidfd)
    _drain(run)
  return _finish(run)


# --------------------------------------------------------------------------- warm worker


class Worker:
  """A warm sandbox: one jailed interpreter imports ``preload`` once, then forks per run.

  Each :meth:`run` gets the same guarantees as :func:`run_in_child` (own session, scrubbed
  env with HOME in its workdir, limits, output cap, tree kill, result file) but skips the
  interpreter start and the JAX import. The worker never initialises a JAX backend, so
  forking it is safe. Use as a context manager; one run at a time (calls are serialised).
  """

  def __init__(self, *, workdir: pathlib.Path,
               preload: Sequence[str] = ("jax", "jax.numpy", "haiku", "numpy"),
               extra_env: Mapping[str, str] | None = None, start_timeout_s: float = 300.0):
    self._workdir = pathlib.Path(workdir).resolve()
    self._preload = list(preload)
    self._extra_env = dict(extra_env or {})
    self._start_timeout_s = start_timeout_s
    self._proc: subprocess.Popen | None = None
    self._sock: socket.socket | None = None
    self._marker = ""
    self._lock = threading.Lock()

  def __enter__(self) -> Worker:
    self.start()
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  @property
  def alive(self) -> bool:
    return self._proc is not None and self._proc.poll() is None

  def start(self) -> None:
    """Starts the worker (a no-op when it is running)."""
    if self.alive:
      return
    self.close()
    home = self._workdir / "worker"
    home.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    self._marker = uuid.uuid4().hex
    env = scrubbed_env(home=home, extra=self._extra_env)
    env[MARKER_VAR] = self._marker
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with open(home / "worker.log", "ab") as log:
      self._proc = subprocess.Popen(
          [sys.executable, "-m", _CHILD_MODULE, "--worker", str(child_sock.fileno()),
           json.dumps(self._preload)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
          cwd=home, env=env, start_new_session=True, pass_fds=(child_sock.fileno(),))
    child_sock.close()
    self._sock = parent_sock
    parent_sock.settimeout(self._start_timeout_s)
    try:
      ready = parent_sock.recv(1 << 16)
    except OSError:
      ready = b""
    if not ready:
      log_tail = _last_line((home / "worker.log").read_text(errors="replace"))
      self.close()
      raise RuntimeError(f"sandbox worker failed to start (preload {self._preload}): "
                         f"{log_tail or 'no output'}; see {home / 'worker.log'}")

  def close(self) -> None:
    """Stops the worker and anything it left behind."""
    if self._sock is not None:
      try:
        self._sock.close()
      except OSError:
        pass
      self._sock = None
    if self._proc is not None:
      kill_tree(self._proc.pid, self._marker)
      self._proc.wait()
      self._proc = None

  def run(self, target: str, payload: dict, *, workdir: pathlib.Path,
          limits: Limits | None = None) -> ChildResult:
    """Like :func:`run_in_child`, in a child forked from the warm worker."""
    with self._lock:
      self.start()
      return self._run_locked(target, payload, pathlib.Path(workdir).resolve(),
                              limits or Limits())

  def _run_locked(self, target: str, payload: dict, workdir: pathlib.Path,
                  limits: Limits) -> ChildResult:
    assert self._sock is not None
    workdir.mkdir(parents=True, exist_ok=True)
    control = _prepare_control(workdir)
    marker = uuid.uuid4().hex
    env = scrubbed_env(home=workdir, extra=self._extra_env)
    env[MARKER_VAR] = marker
    env[PROGRESS_VAR] = str(control / "progress.json")
    request = _request(target, payload, workdir, control, limits, env)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    start = time.monotonic()
    sock = self._sock
    try:
      sock.settimeout(30.0)
      socket.send_fds(sock, [json.dumps(request).encode()], [out_w, err_w])
      reply = sock.recv(1 << 16)
    except OSError:
      reply = b""
    finally:
      os.close(out_w)
      os.close(err_w)
    if not reply:
      os.close(out_r)
      os.close(err_r)
      self.close()
      return ChildResult(status="crashed", value=None, reason="crashed: sandbox worker died "
                         "before forking the child; it will be restarted",
                         wall_seconds=time.monotonic() - start, peak_rss_mb=0.0,
                         stderr_tail="")
    pid = json.loads(reply)["pid"]
    run = _Run(pid=pid, marker=marker, control=control, limits=limits, start=start,
               out_r=out_r, err_r=err_r)
    sock.setblocking(False)

    def poll_exit() -> bool:
      try:
        msg = sock.recv(1 << 16)
      except BlockingIOError:
        return False
      except OSError:
        msg = b""
      if not msg:  # The worker died (e.g. killed from inside the child).
        run.worker_died = True
        return True
      info = json.loads(msg)
      run.wait_status, run.maxrss_kb = info["wait_status"], info["maxrss_kb"]
      run.cpu_seconds = info["cpu_seconds"]
      return True

    try:
      _supervise(run, sock.fileno(), poll_exit)
    finally:
      # Forked children show the worker's exec-time environment, hence its marker.
      kill_tree(pid, self._marker, spare=self._proc.pid if self._proc else None)
      if run.wait_status is None:
        sock.settimeout(10.0)
        try:
          info = json.loads(sock.recv(1 << 16) or b"null")
        except (OSError, ValueError):
          info = None
        if info:
          run.wait_status, run.maxrss_kb = info["wait_status"], info["maxrss_kb"]
          run.cpu_seconds = info["cpu_seconds"]
        else:
          run.worker_died = True
      _drain(run)
      if not self.alive:
        self.close()
    return _finish(run)


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


__all__ = ["ChildResult", "Limits", "STATUSES", "Worker", "accelerator_visible",
           "is_secret_var", "kill_tree", "report_progress", "run_in_child", "scrubbed_env"]
