"""How a supervised run ended, as one :class:`ChildResult` with a one-line reason.

The parent never raises for anything the child does: a limit the parent enforced, the
kernel's verdict (cgroup OOM kill, a signal, ``RLIMIT_CPU``), the result the child sent
over its control channel, or the lack of one each map to one of ``STATUSES``.
"""

from __future__ import annotations

import os
import re
import signal
import time

from spark_clrs.isolation.limits import ChildResult
from spark_clrs.isolation.supervision import Run
from spark_clrs.messages import one_line

_MEMORY_WORDS = re.compile(r"RESOURCE_EXHAUSTED|[Oo]ut of memory|bad_alloc|Cannot allocate memory")


def signal_name(signum: int) -> str:
  try:
    return signal.Signals(signum).name
  except ValueError:
    return f"signal {signum}"


def last_line(text: str) -> str:
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  return one_line(lines[-1], 300) if lines else ""


def _from_record(record: dict) -> tuple[str, str, dict | None] | None:
  """(status, reason, value) of the child's result record, or None if it is malformed."""
  status = record.get("status")
  if status == "ok":
    value = record.get("value")
    if not isinstance(value, dict):
      return ("error", f"error: target returned {type(value).__name__}, expected a JSON "
              "object (dict)", None)
    return "ok", "", value
  if status in ("error", "memory"):
    return status, f"{status}: {one_line(record.get('reason', ''))}", None
  return None


def classify(run: Run) -> ChildResult:
  """The outcome of a finished (and fully killed) run."""
  wall = time.monotonic() - run.start
  stderr = run.stderr_tail.decode("utf-8", "replace")
  proc, limits = run.proc, run.limits
  peak = max(run.peak_rss_mb, proc.maxrss_kb / 1024.0)
  # bwrap's own rusage misses what its PID namespace's init reaped: the sampled tree too.
  cpu = max(0.0, max(proc.cpu_seconds, run.tree_cpu_s) - run.cpu_baseline)

  def done(status: str, reason: str, value: dict | None = None) -> ChildResult:
    return ChildResult(status=status, value=value, reason=reason, wall_seconds=wall,
                       peak_rss_mb=peak, stderr_tail=stderr, progress=run.progress,
                       cpu_seconds=cpu)

  record = _from_record(run.result) if run.result is not None else None
  if run.killed_for == "timeout":
    return done("timeout", f"timeout: still running after {limits.timeout_s:g} s wall clock; "
                "killed its process tree")
  if run.killed_for == "memory":
    return done("memory", f"memory: process tree used {peak:.0f} MB resident, over the "
                f"{limits.memory_mb} MB limit; killed")
  if proc.oom_kills and (record is None or record[0] != "ok"):
    return done("memory", f"memory: the jail reached its {limits.memory_mb} MB memory cgroup "
                "limit (which counts tmpfs and memfd pages too); the kernel killed it")
  if run.killed_for == "disk":
    return done("output_limit", f"output_limit: the workdir holds {run.detail}; killed")
  if run.killed_for == "output_limit" or run.total_output > limits.max_output_bytes:
    return done("output_limit", f"output_limit: wrote more than {limits.max_output_bytes} "
                "bytes to stdout/stderr; killed")
  if run.killed_for == "protocol":
    return done("error", f"error: the child broke its control channel ({run.detail}); killed")
  status = proc.wait_status
  if status is not None and os.WIFSIGNALED(status):
    return _signalled(os.WTERMSIG(status), done, stderr, limits, run.process_cpu_s)
  if record is not None:
    if record[0] == "error" and proc.memory_failures and "MemoryError" in record[1]:
      return done("memory", f"memory: {record[1][len('error: '):]} at the jail's "
                  f"{limits.memory_mb} MB memory cgroup limit")
    return done(*record)
  code = os.WEXITSTATUS(status) if status is not None else -1
  detail = last_line(stderr)
  return done("error", f"error: child exited with code {code} without a result"
              + (f"; last stderr line: {detail}" if detail else ""))


def _signalled(sig: int, done, stderr: str, limits, process_cpu: float) -> ChildResult:
  name = signal_name(sig)
  cpu_limit = limits.resolved_cpu_seconds()
  if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_limit
                               and process_cpu >= cpu_limit - 0.5):
    return done("timeout", f"timeout: used its {cpu_limit} s of CPU time (RLIMIT_CPU); "
                f"killed by {name}")
  if sig in (signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV) and _MEMORY_WORDS.search(stderr):
    return done("memory", f"memory: killed by {name} after running out of memory "
                f"(address-space limit {limits.resolved_address_space_mb()} MB)")
  detail = last_line(stderr)
  hint = " (not by the sandbox: perhaps the kernel's OOM killer)" if sig == signal.SIGKILL else ""
  return done("crashed", f"crashed: killed by {name} (signal {sig}){hint}"
              + (f"; last stderr line: {detail}" if detail else ""))
