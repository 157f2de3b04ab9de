"""Child half of the sandbox: runs one trusted target function inside the jail.

``spark_clrs.sandbox`` starts this module as ``python -m spark_clrs._sandbox_child
REQUEST.json`` (a fresh child) or calls :func:`serve` in its warm worker. It applies the
resource limits, imports the target ``module:function`` (our own code, never the
candidate directly), calls it with the JSON payload and writes the outcome to the result
file named in the request. It deliberately imports nothing but the standard library, so
that the limits are in force before JAX or any candidate code is loaded.
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

def apply_limits(address_space_mb: int) -> None:
  """Sets RLIMIT_AS (``address_space_mb`` > 0) and disables core dumps."""
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  if address_space_mb > 0:
    limit = address_space_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def watch_parent(poll_s: float = 0.5) -> None:
  """Kills this process's group as soon as its parent dies (e.g. a SIGKILLed search).

  Every sandbox process leads its own session, so nothing else would reap it: without
  this a killed search leaves its evaluation running. The check is a daemon thread
  comparing ``getppid()`` with the parent at start (re-parenting means the parent died).
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
    apply_limits(int(request["address_space_mb"]))
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
  """In a freshly forked worker child: new session, private cwd and env, own stdio."""
  os.setsid()
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  devnull = os.open(os.devnull, os.O_RDONLY)
  os.dup2(devnull, 0)
  os.dup2(out_fd, 1)
  os.dup2(err_fd, 2)
  os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
  os.chdir(request["workdir"])
  os.environ.clear()
  os.environ.update(request["env"])


def serve(sock_fd: int, preload: list[str]) -> None:
  """Warm worker loop: import ``preload`` once, then fork one jailed child per request.

  Protocol on the SOCK_SEQPACKET socket ``sock_fd``: the parent sends a JSON request with
  the child's stdout/stderr pipe ends attached (SCM_RIGHTS); the worker answers
  ``{"pid": PID}`` once the child is forked and ``{"pid": PID, "wait_status": S,
  "maxrss_kb": K, "cpu_seconds": C}`` when it has exited. A request ``{"quit": true}`` or EOF ends the loop.
  """
  watch_parent()
  for name in preload:
    importlib.import_module(name)
  sock = socket.socket(fileno=sock_fd)
  sock.sendall(json.dumps({"ready": True}).encode())
  while True:
    try:
      msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 2)
    except OSError:
      return
    if not msg:
      return
    request = json.loads(msg)
    if request.get("quit"):
      return
    out_fd, err_fd = fds
    pid = os.fork()
    if pid == 0:
      try:
        sock.close()
        _isolate(request, out_fd, err_fd)
      except BaseException as e:
        os.write(2, f"sandbox child setup failed: {_one_line(e)}\n".encode())
        os._exit(4)
      execute(request)
    os.close(out_fd)
    os.close(err_fd)
    sock.sendall(json.dumps({"pid": pid}).encode())
    _, status, usage = os.wait4(pid, 0)
    sock.sendall(json.dumps({"pid": pid, "wait_status": status, "maxrss_kb": usage.ru_maxrss,
                             "cpu_seconds": usage.ru_utime + usage.ru_stime}).encode())


def main(argv: list[str]) -> None:
  # The private workdir is the cwd: never let files there shadow real modules.
  sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
  if len(argv) == 4 and argv[1] == "--worker":
    serve(int(argv[2]), json.loads(argv[3]))
    return
  if len(argv) != 2:
    print("usage: python -m spark_clrs._sandbox_child REQUEST.json | --worker FD PRELOAD_JSON",
          file=sys.stderr)
    sys.exit(2)
  with open(argv[1]) as f:
    request = json.load(f)
  execute(request)


if __name__ == "__main__":
  main(sys.argv)
