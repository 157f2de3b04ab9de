"""Watching a started child and ending it: watchdogs, bounded reads, and the one kill.

:func:`supervise` pumps the child's stdout/stderr pipes (counting bytes against the output
cap, keeping tails) and its control socket (bounded frames: progress records, the result),
and enforces the wall clock, the resident-memory watchdog and the workdir's size and file
count, until the child exits or is killed. The parent never blocks on anything the child
controls: every read is non-blocking and the loop wakes at least every 50 ms.

:meth:`Proc.kill` is the one place that ends processes: in the jail, SIGKILL for the
process tree, every member of the jail's cgroup and every process running as the jail's
uid, repeated until none is left (the jail's init dying makes the kernel kill the rest of
its PID namespace); without the jail, the process group, the tree and anything carrying the
run's marker in its environment. :func:`reap_stale` uses it for the cgroups of a search
that died without cleaning up.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import selectors
import signal
import socket
import time
from typing import Any

import psutil

from spark_clrs.isolation import cgroups, channel, identity, launch
from spark_clrs.isolation.limits import Limits

TAIL_BYTES = 8192
_RSS_POLL_S = 0.05
_DISK_POLL_S = 0.25
_CONTROL_BYTES = 64 << 20  # Progress records and the result, all together.


def _tree(pid: int) -> list[psutil.Process]:
  try:
    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)
  except psutil.Error:
    return []


def _alive(p: psutil.Process) -> bool:
  try:
    return p.status() != psutil.STATUS_ZOMBIE
  except psutil.Error:
    return False


def tree_usage(pid: int) -> tuple[float, float, float]:
  """(resident MiB, CPU seconds, largest CPU seconds of one process) of the tree."""
  rss, cpu, most = 0, 0.0, 0.0
  for p in _tree(pid):
    try:
      rss += p.memory_info().rss
      t = p.cpu_times()
    except psutil.Error:
      continue
    cpu += t.user + t.system
    most = max(most, t.user + t.system)
  return rss / 2**20, cpu, most


def _processes(pids: list[int]) -> list[psutil.Process]:
  out = []
  for pid in pids:
    try:
      out.append(psutil.Process(pid))
    except psutil.Error:  # Exited meanwhile.
      continue
  return out


def _marked(marker: str) -> list[psutil.Process]:
  """Live processes of our uid (not us) whose initial environment has ``marker``."""
  found = []
  me, uid = os.getpid(), os.getuid()
  for p in psutil.process_iter(["uids"]):
    try:
      if p.pid == me or p.info["uids"] is None or p.info["uids"].real != uid:
        continue
      if p.environ().get(launch.MARKER_VAR) == marker and _alive(p):
        found.append(p)
    except psutil.Error:
      continue
  return found


def kill_until_gone(pid: int | None, *, group: cgroups.JailCgroup | None = None,
                    uid: int | None = None, marker: str | None = None,
                    pgid: int | None = None) -> None:
  """SIGKILLs the tree of ``pid`` (a process not reaped yet, so its pid is still ours),
  the process group ``pgid``, the members of ``group``, the processes of ``uid`` and
  those carrying ``marker``, until none is alive (at most ~2 s)."""
  for _ in range(200):
    victims = _tree(pid) if pid else []
    if pgid:
      try:
        os.killpg(pgid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass
    if group is not None:
      victims += _processes(group.pids())
    if uid is not None:
      victims += _processes(identity.running_uids().get(uid, []))
    if marker:
      victims += _marked(marker)
    for p in victims:
      try:
        p.kill()
      except psutil.Error:
        pass
    if not any(_alive(p) for p in victims):
      return
    time.sleep(0.01)


def kill_tree(pgid: int, marker: str | None) -> None:
  """Without the jail: kills the process group ``pgid``, the descendants of its leader
  (not reaped yet), and anything carrying ``marker`` in its environment (descendants
  that left the group)."""
  kill_until_gone(pgid, pgid=pgid, marker=marker)


def reap_stale() -> None:
  """Kills what is left in the jail cgroups of dead searches and removes them."""
  for group in cgroups.stale():
    kill_until_gone(None, group=group)
    group.remove()


@dataclasses.dataclass
class Proc:
  """One started sandbox process (the launcher/bwrap, or the child itself unjailed)."""

  started: launch.Started
  pidfd: int = -1
  wait_status: int | None = None
  maxrss_kb: int = 0
  cpu_seconds: float = 0.0
  oom_kills: int = 0
  memory_failures: int = 0

  def __post_init__(self) -> None:
    self.pidfd = os.pidfd_open(self.pid)

  @property
  def pid(self) -> int:
    return self.started.popen.pid

  @property
  def jailed(self) -> bool:
    return self.started.jailed

  @property
  def cgroup(self) -> cgroups.JailCgroup | None:
    return self.started.cgroup

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
    self.started.popen.returncode = os.waitstatus_to_exitcode(status) if status else 0

  def kill(self) -> None:
    """Kills the process and everything it started, reaps it, releases its cgroup and
    uid. Idempotent. Once reaped, its pid may belong to someone else: then only the
    jail's cgroup and uid (or, unjailed, its process group and marker) are used."""
    if self.pidfd < 0:
      return
    lease, group = self.started.lease, self.started.cgroup
    tree = self.pid if self.wait_status is None else None
    if self.jailed:
      kill_until_gone(tree, group=group, uid=lease.uid if lease else None)
    else:
      kill_until_gone(tree, pgid=self.pid, marker=self.started.marker)
    if self.wait_status is None:
      try:
        _, status, usage = os.wait4(self.pid, 0)
        self._reaped(status, usage)
      except ChildProcessError:
        self.wait_status = 0
    if self.pidfd >= 0:
      os.close(self.pidfd)
      self.pidfd = -1
    if group is not None:
      self.oom_kills = group.oom_kills()
      self.memory_failures = group.memory_failures()
      group.remove()
      self.started.cgroup = None
    if lease is not None:
      lease.release()
      self.started.lease = None


@dataclasses.dataclass
class Run:
  """Bookkeeping of one supervised request."""

  proc: Proc
  workdir: pathlib.Path
  limits: Limits
  start: float
  out_r: int
  err_r: int
  sock: socket.socket
  cpu_baseline: float = 0.0
  total_output: int = 0
  stdout_tail: bytes = b""
  stderr_tail: bytes = b""
  peak_rss_mb: float = 0.0
  tree_cpu_s: float = 0.0  # The CPU seconds of the tree, as last sampled.
  process_cpu_s: float = 0.0  # The most one process of the tree had used.
  killed_for: str | None = None
  detail: str = ""
  progress: dict = dataclasses.field(default_factory=dict)
  result: dict | None = None
  reader: channel.Reader = dataclasses.field(
      default_factory=lambda: channel.Reader(_CONTROL_BYTES))


def workdir_usage(root: pathlib.Path, max_files: int) -> tuple[int, int]:
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


def _take_output(run: Run, fd: int, chunk: bytes) -> None:
  run.total_output += len(chunk)
  if fd == run.out_r:
    run.stdout_tail = (run.stdout_tail + chunk)[-TAIL_BYTES:]
  else:
    run.stderr_tail = (run.stderr_tail + chunk)[-TAIL_BYTES:]


def _take_control(run: Run, chunk: bytes) -> None:
  """Feeds the control stream; a broken one kills the run (raises ProtocolError)."""
  for message in run.reader.feed(chunk):
    if isinstance(message.get("progress"), dict):
      run.progress = message["progress"]
    elif isinstance(message.get("result"), dict) and run.result is None:
      run.result = message["result"]


def _read(run: Run, fd: int, sel: selectors.BaseSelector | None) -> bool:
  """Reads what is available on ``fd`` (a pipe or the socket); False once a bound broke."""
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
  if fd == run.sock.fileno():
    try:
      _take_control(run, chunk)
    except channel.ProtocolError as e:
      run.killed_for, run.detail = "protocol", str(e)
      return False
    return True
  _take_output(run, fd, chunk)
  if run.total_output > run.limits.max_output_bytes:
    run.killed_for = "output_limit"
    return False
  return True


def _check_limits(run: Run, now: float, next_rss: float, next_disk: float
                  ) -> tuple[float, float]:
  limits = run.limits
  if now - run.start > limits.timeout_s:
    run.killed_for = "timeout"
  elif now >= next_rss:
    rss, cpu, most = tree_usage(run.proc.pid)
    run.peak_rss_mb = max(run.peak_rss_mb, rss)
    run.tree_cpu_s = max(run.tree_cpu_s, cpu)
    run.process_cpu_s = max(run.process_cpu_s, most)
    if run.peak_rss_mb > limits.memory_mb:
      run.killed_for = "memory"
    next_rss = now + _RSS_POLL_S
  if run.killed_for is None and now >= next_disk:
    used, files = workdir_usage(run.workdir, limits.workdir_files)
    if files > limits.workdir_files:
      run.killed_for, run.detail = "disk", f"more than {limits.workdir_files} files"
    elif used > limits.workdir_mb * 2**20:
      run.killed_for = "disk"
      run.detail = f"{used / 2**20:.0f} MB, over the {limits.workdir_mb} MB limit"
    next_disk = now + _DISK_POLL_S
  return next_rss, next_disk


def supervise(run: Run) -> None:
  """Supervises ``run`` to its end (module docstring), then kills what is left and reads
  what is left in the pipes and the socket (bounded), and closes them."""
  sel = selectors.DefaultSelector()
  fds = (run.out_r, run.err_r, run.sock.fileno())
  for fd in fds:
    os.set_blocking(fd, False)
    sel.register(fd, selectors.EVENT_READ)
  sel.register(run.proc.pidfd, selectors.EVENT_READ)
  next_rss = next_disk = 0.0
  try:
    while run.killed_for is None and not run.proc.poll():
      now = time.monotonic()
      next_rss, next_disk = _check_limits(run, now, next_rss, next_disk)
      if run.killed_for is not None:
        break
      wait = min(_RSS_POLL_S, max(0.0, run.start + run.limits.timeout_s - now))
      for key, _ in sel.select(timeout=wait):
        if key.fd != run.proc.pidfd and not _read(run, key.fd, sel):
          break
  finally:
    sel.close()
    run.proc.kill()
    drain(run)


def drain(run: Run, deadline_s: float = 1.0) -> None:
  """After the tree is dead: reads what is left (bounded), then closes the pipes/socket."""
  end = time.monotonic() + deadline_s
  cap = 4 * run.limits.max_output_bytes
  for fd in (run.out_r, run.err_r, run.sock.fileno()):
    os.set_blocking(fd, False)
    while time.monotonic() < end and run.total_output <= cap:
      try:
        chunk = os.read(fd, 1 << 16)
      except BlockingIOError:
        time.sleep(0.005)
        continue
      except OSError:
        break
      if not chunk:
        break
      if fd == run.sock.fileno():
        try:
          _take_control(run, chunk)
        except channel.ProtocolError as e:
          run.killed_for = run.killed_for or "protocol"
          run.detail = run.detail or str(e)
          break
      else:
        _take_output(run, fd, chunk)
  os.close(run.out_r)
  os.close(run.err_r)
  run.sock.close()
