"""Child half of the sandbox: runs one trusted target function inside the jail.

The runner starts this module, inside the bubblewrap jail, as ``python -m
spark_clrs.isolation.child --serve FD PRELOAD`` (``FD``: its end of the control socket of
:mod:`channel`). It first closes every other inherited descriptor but stdin/stdout/stderr,
imports ``PRELOAD`` (a pre-started worker: at low CPU priority), says ready, takes exactly
one request, applies the request's resource limits, imports the target ``module:function``
(our own code, never the candidate directly), calls it with the JSON payload, sends the
outcome back over the socket and exits. Before the limits are set it imports only the
standard library, :mod:`channel` and :mod:`spark_clrs.messages` (both standard library
only), and the preload, which runs before any candidate code exists in the process. Should the parent die, the socket's
hang-up ends the child at once.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import select
import signal
import socket
import sys
import threading
import traceback

from spark_clrs import messages
from spark_clrs.isolation import channel

# Exception texts that mean the child ran out of memory rather than hit a bug.
_MEMORY_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "std::bad_alloc",
                   "Cannot allocate memory")
# CPU priority (nice) of a worker's preload imports, so that they take little CPU from the
# candidate running meanwhile; the request itself runs at the worker's normal priority.
PRELOAD_NICE = 10
_CPU_GRACE_S = 5  # Between RLIMIT_CPU's SIGXCPU (soft) and its SIGKILL (hard).


def apply_limits(request: dict) -> None:
  """Sets the request's rlimits (hard = soft, so the target cannot raise them).

  ``RLIMIT_AS`` (``address_space_mb`` > 0), ``RLIMIT_FSIZE`` (``max_file_mb`` > 0),
  ``RLIMIT_NPROC`` (``max_processes`` > 0; counted per user, so set only in the jail),
  ``RLIMIT_CPU`` (``cpu_seconds`` > 0, on top of what the process has used so far) and no
  core dumps.
  """
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  limits = ((resource.RLIMIT_AS, request.get("address_space_mb", 0)),
            (resource.RLIMIT_FSIZE, request.get("max_file_mb", 0)))
  for kind, mb in limits:
    if mb and int(mb) > 0:
      value = int(mb) * 2**20
      resource.setrlimit(kind, (value, value))
  nproc = int(request.get("max_processes", 0) or 0)
  if nproc > 0:
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
  cpu = int(request.get("cpu_seconds", 0) or 0)
  if cpu > 0:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime) + cpu
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + _CPU_GRACE_S))


def _watch_channel(sock_fd: int) -> None:
  """Ends this process (and, unjailed, its group) when the parent's end of the control
  socket goes away: a SIGKILLed search takes its children along."""

  def watch() -> None:
    poller = select.poll()
    poller.register(sock_fd, select.POLLRDHUP)
    while True:
      events = poller.poll()
      if any(mask & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL)
             for _, mask in events):
        break
    try:
      os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
      os._exit(137)

  threading.Thread(target=watch, name="sandbox-parent-watch", daemon=True).start()


def _one_line(e: BaseException) -> str:
  """``Type: message`` on one line (``messages.one_line``; nothing secret is in the jail)."""
  text = messages.one_line(str(e), 400)
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _where(e: BaseException) -> str:
  """'file:line' of the innermost frame, to make error reasons actionable."""
  frames = traceback.extract_tb(e.__traceback__)
  if not frames:
    return ""
  last = frames[-1]
  return f" (at {os.path.basename(last.filename)}:{last.lineno})"


def run_target(target: str, payload: dict) -> dict:
  """Calls ``module:function`` on ``payload``; returns a result record (never raises)."""
  try:
    module_name, _, func_name = target.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    value = func(payload)
    json.dumps(value)  # Fail here, with a clear reason, if the value is not JSON-able.
    return {"status": "ok", "value": value, "reason": ""}
  except MemoryError as e:
    return {"status": "memory", "value": None, "reason": f"MemoryError{_where(e)}: {e}"}
  except BaseException as e:  # The target's own failure, reported in one line.
    reason = _one_line(e)
    status = "memory" if any(m in reason for m in _MEMORY_MARKERS) else "error"
    return {"status": status, "value": None, "reason": reason + _where(e)}


def _isolate(request: dict, sock_fd: int) -> None:
  """Once the request came: default signals, its cwd and environment, progress channel."""
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  os.chdir(request["workdir"])
  os.environ.clear()
  os.environ.update(request["env"])
  os.environ[channel.PROGRESS_VAR] = str(sock_fd)


def _preload(names: list[str]) -> None:
  """Imports ``names`` in a thread at nice :data:`PRELOAD_NICE` (per-thread on Linux).

  numpy goes first, in this thread, so that its BLAS threads keep normal priority; the
  main thread, which serves the request, is never reniced.
  """
  if "numpy" in names:
    importlib.import_module("numpy")
  errors: list[BaseException] = []

  def body() -> None:
    try:
      os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PRELOAD_NICE)
    except OSError:
      pass
    try:
      for name in names:
        importlib.import_module(name)
    except BaseException as e:  # Reported by the parent as a start failure.
      errors.append(e)

  thread = threading.Thread(target=body, name="sandbox-preload")
  thread.start()
  thread.join()
  if errors:
    raise errors[0]


def serve(sock_fd: int, preload: list[str]) -> None:
  """Import ``preload``, say ready, run one request, send its outcome, exit."""
  _watch_channel(sock_fd)
  sock = socket.socket(fileno=sock_fd)
  _preload(preload)
  channel.send_fd(sock_fd, {"ready": True})
  request = channel.receive(sock)
  if request is None:
    os._exit(0)
  try:
    _isolate(request, sock_fd)
    apply_limits(request)
  except BaseException as e:
    os.write(2, f"sandbox child setup failed: {_one_line(e)}\n".encode())
    os._exit(4)
  record = run_target(request["target"], request["payload"])
  code = 0
  try:
    channel.send_fd(sock_fd, {"result": record})
  except (OSError, channel.ProtocolError) as e:  # E.g. a value over the frame size.
    os.write(2, f"sandbox child could not send its result: {_one_line(e)}\n".encode())
    code = 3
  try:
    sys.stdout.flush()
    sys.stderr.flush()
  finally:
    os._exit(code)  # Skip atexit hooks and interpreter teardown (slow with JAX loaded).


def _close_inherited(keep: int) -> None:
  """Closes every descriptor but 0-2 and ``keep``: none of the host's reaches the target."""
  for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    if fd > 2 and fd != keep:
      try:
        os.close(fd)
      except OSError:
        pass


def main(argv: list[str]) -> None:
  # The private workdir is the cwd: never let files there shadow real modules.
  sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
  if len(argv) != 4 or argv[1] != "--serve":
    print("usage: python -m spark_clrs.isolation.child --serve FD PRELOAD_JSON",
          file=sys.stderr)
    sys.exit(2)
  sock_fd = int(argv[2])
  _close_inherited(sock_fd)
  serve(sock_fd, json.loads(argv[3]))


if __name__ == "__main__":
  main(sys.argv)
