"""The jail around every process that runs candidate code: on, off, and whether it works.

What the jail is: :mod:`spark_clrs.isolation.bwrap` (namespaces, mounts, no nested user
namespaces), :mod:`seccomp` (the system-call filter), :mod:`identity` (as root, a host uid
of its own per jail), :mod:`cgroups` (as root, memory that counts tmpfs and memfd, a task
cap) and :mod:`launch` (how they are put together when a child starts). This module holds
the process-wide mode (``bwrap``, the default, or ``none`` for ``--sandbox=none``) and the
fail-closed gate: :func:`require` probes once, by starting the real jail on ``python -c
pass``, and raises :class:`JailUnavailableError` with one line naming ``--sandbox=none``
where it cannot be built (no bubblewrap, no user namespaces, no libseccomp, no uid to
lease).
"""

from __future__ import annotations

import functools
import os
import pathlib
import socket
import subprocess
import sys
import tempfile

from spark_clrs.isolation import launch, supervision
from spark_clrs.isolation.bwrap import (
  BWRAP_VAR,
  HOSTNAME,
  JAIL_UID,
  MIN_VERSION,
  NONE_HINT,
  SHM_MB,
  TMP_MB,
  Bwrap,
  JailUnavailableError,
  find_bwrap,
)

MODES = ("bwrap", "none")
_PROBE_TIMEOUT_S = 60.0

_mode = "bwrap"


def set_mode(mode: str) -> None:
  """Selects ``bwrap`` (default) or ``none`` for every sandboxed process of this process."""
  if mode not in MODES:
    raise ValueError(f"--sandbox={mode!r} is not one of {', '.join(MODES)}")
  global _mode
  _mode = mode


def mode() -> str:
  """The isolation new sandboxed processes get: ``bwrap`` or ``none``."""
  return _mode


def _probe_once(work: pathlib.Path) -> str | None:
  parent, child = socket.socketpair()
  try:
    started = launch.start([sys.executable, "-c", "pass"], jailed=True, workdir=work,
                           env={"PATH": "/usr/bin:/bin"}, gpu=False, inputs=None,
                           memory_mb=1024, max_tasks=64, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, channel_fd=child.fileno(), max_entries=16)
  finally:
    child.close()
  proc = supervision.Proc(started)
  try:
    _, stderr = started.popen.communicate(timeout=_PROBE_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    stderr = b"timed out"
  finally:
    proc.kill()
    parent.close()
  code = started.popen.returncode
  if code == 0:
    return None
  detail = " ".join(stderr.decode(errors="replace").split())[:200] or f"exit {code}"
  return (f"{find_bwrap().describe()} cannot create the jail here ({detail}); "
          f"{NONE_HINT}")


@functools.lru_cache(maxsize=8)
def _probe(override: str, euid: int) -> str | None:
  del override, euid  # Part of the cache key only.
  try:
    with tempfile.TemporaryDirectory(prefix="spark_clrs_jail_probe_") as tmp:
      return _probe_once(pathlib.Path(tmp))
  except JailUnavailableError as e:
    return str(e)
  except OSError as e:
    return f"the jail cannot be started ({type(e).__name__}: {e}); {NONE_HINT}"


def unavailable_reason() -> str | None:
  """None when the jail works here, else one line saying why (probed once per binary)."""
  return _probe(os.environ.get(BWRAP_VAR, ""), os.geteuid())


def available() -> bool:
  return unavailable_reason() is None


def require() -> Bwrap:
  """The bwrap in use; raises JailUnavailableError (one line, names --sandbox=none)."""
  reason = unavailable_reason()
  if reason is not None:
    raise JailUnavailableError(f"cannot run candidate code in the bubblewrap jail: {reason}")
  return find_bwrap()


def check_mode(requested: str) -> str:
  """For the CLIs: sets ``requested`` and fails closed; returns a line for the log."""
  set_mode(requested)
  if requested == "none":
    return ("sandbox: NONE (--sandbox=none): candidate code runs WITHOUT the bubblewrap jail, "
            "only with the process limits")
  who = "own uid per jail" if os.geteuid() == 0 else "your uid"
  return f"sandbox: bubblewrap jail ({who}, seccomp), {require().describe()}"


def require_for_cli(requested: str) -> None:
  """A CLI's fail-closed gate: exit 2 with one line when the jail is unavailable.

  With ``requested == "none"`` it prints the explicit opt-in line instead.
  """
  try:
    line = check_mode(requested)
  except JailUnavailableError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if requested == "none":
    print(line, file=sys.stderr)


__all__ = ["BWRAP_VAR", "Bwrap", "HOSTNAME", "JAIL_UID", "JailUnavailableError", "MIN_VERSION",
           "MODES", "SHM_MB", "TMP_MB", "available", "check_mode", "find_bwrap", "mode",
           "require", "require_for_cli", "set_mode", "unavailable_reason"]
