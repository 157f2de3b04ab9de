"""Child half of the sandbox: runs one trusted target function inside the jail.

``spark_clrs.isolation.sandbox`` starts this module, inside the bubblewrap jail (``jail.py``), as
``python -m spark_clrs.isolation.child REQUEST.json`` (a fresh child) or as ``--worker FD
PRELOAD`` (a pre-started single-use worker: it imports ``PRELOAD`` at low CPU priority,
answers ``ready``, serves exactly one request and exits). It applies the resource limits,
imports the target ``module:function`` (our own code, never the candidate directly), calls
it with the JSON payload and writes the outcome to the result file named in the request.
It imports nothing but the standard library before the limits are set, except the
worker's preload, which runs before any candidate code exists in the process.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback

# Exception texts that mean the child ran out of memory rather than hit a bug.
_MEMORY_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "std::bad_alloc",
                   "Cannot allocate memory")
# CPU priority (nice) of a worker's preload imports, so that they take little CPU from the
# candidate running meanwhile; the request itself runs at the worker's normal priority.
PRELOAD_NICE = 10


def apply_limits(request: dict) -> None:
  """Sets the request's rlimits (hard = soft, so the target cannot raise them).

  ``RLIMIT_AS`` (``address_space_mb`` > 0), ``RLIMIT_FSIZE`` (``max_file_mb`` > 0),
  ``RLIMIT_NPROC`` (``max_processes`` > 0; counted per user namespace, so set only in the
  jail) and no core dumps.
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


def watch_parent(poll_s: float = 0.5) -> None:
  """Kills this process's group as soon as its parent dies (e.g. a SIGKILLed search).

  Needed with ``--sandbox=none`` (every sandbox process leads its own session, so nothing
  else would reap it); in the jail ``--die-with-parent`` does this, and the parent seen
  from inside is the jail's init, which only dies with the jail.
  """
  parent = os.getppid()

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(poll_s)
    try:
      os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
      os._exit(137)

  threading.Thread(target=watch, name="sandbox-parent-watch", daemon=True).start()


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  if len(text) > 400:
    text = text[:400] + "..."
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


def _write_result(path: str, record: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f)
  os.replace(tmp, path)


def execute(request: dict) -> None:
  """Runs one request in this (already isolated) process and exits it."""
  try:
    watch_parent()
    apply_limits(request)
    record = run_target(request["target"], request["payload"])
    _write_result(request["result_path"], record)
  except BaseException as e:  # Even writing the result failed: leave a trace on stderr.
    print(f"sandbox child failed: {_one_line(e)}", file=sys.stderr)
    code = 3
  else:
    code = 0
  try:
    sys.stdout.flush()
    sys.stderr.flush()
  finally:
    os._exit(code)  # Skip atexit hooks and interpreter teardown (slow with JAX loaded).


def _isolate(request: dict, out_fd: int, err_fd: int) -> None:
  """In the worker, once its request came: own stdio, nothing else open, request env."""
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  sys.stdout.flush()
  sys.stderr.flush()
  devnull = os.open(os.devnull, os.O_RDONLY)
  os.dup2(devnull, 0)
  os.dup2(out_fd, 1)
  os.dup2(err_fd, 2)
  os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
  os.chdir(request["workdir"])
  os.environ.clear()
  os.environ.update(request["env"])


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
  """Single-use worker: import ``preload``, say ready, run one request, exit.

  Protocol on the SOCK_SEQPACKET socket ``sock_fd``: the worker sends ``{"ready": true}``
  once the imports are done; the parent sends one JSON request with the run's
  stdout/stderr pipe ends attached (SCM_RIGHTS). The socket is closed before the target
  runs, so candidate code has no channel to the parent but the result file. EOF or
  ``{"quit": true}`` ends the worker.
  """
  _preload(preload)
  sock = socket.socket(fileno=sock_fd)
  sock.sendall(json.dumps({"ready": True}).encode())
  try:
    msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 2)
  except OSError:
    os._exit(0)
  if not msg or len(fds) != 2:
    os._exit(0)
  request = json.loads(msg)
  if request.get("quit"):
    os._exit(0)
  try:
    sock.close()
    _isolate(request, fds[0], fds[1])
  except BaseException as e:
    os.write(2, f"sandbox worker setup failed: {_one_line(e)}\n".encode())
    os._exit(4)
  execute(request)


def main(argv: list[str]) -> None:
  # The private workdir is the cwd: never let files there shadow real modules.
  sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
  if len(argv) == 4 and argv[1] == "--worker":
    serve(int(argv[2]), json.loads(argv[3]))
    return
  if len(argv) != 2:
    print("usage: python -m spark_clrs.isolation.child REQUEST.json | --worker FD PRELOAD_JSON",
          file=sys.stderr)
    sys.exit(2)
  with open(argv[1]) as f:
    request = json.load(f)
  execute(request)


if __name__ == "__main__":
  main(sys.argv)
