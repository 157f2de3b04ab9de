"""One cgroup per jail (as root, where writable): memory that counts everything, a task cap,
and a list of every process the jail ever started.

cgroup v1 (``/sys/fs/cgroup/{memory,pids}``, as on this project's machines): a directory
``spark_clrs_jail_<owner pid>_<owner start>_<id>`` in each of the ``memory`` and ``pids``
hierarchies; ``memory.limit_in_bytes`` and, where swap is accounted,
``memory.memsw.limit_in_bytes`` at the same value (no swap). cgroup v2 (unified): one such
directory with ``memory.max``, ``memory.swap.max = 0`` and ``pids.max``. Either way the
kernel charges the jail's tmpfs (``/tmp``, ``/dev/shm``) and memfd pages to it, which no
RSS watchdog sees, and its OOM killer reports ``oom_kill`` events we read back.

The launcher joins the cgroup before it becomes the jail, so every process of the jail is
a member from its first fork. The directory names carry the owner (the search process),
so :func:`stale` finds the cgroups of a search that died without cleaning up; the runner's
supervision kills what is left in them and removes them.
"""

from __future__ import annotations

import os
import pathlib
import time
import uuid

import psutil

ROOT = pathlib.Path("/sys/fs/cgroup")
PREFIX = "spark_clrs_jail_"
_V1_CONTROLLERS = ("memory", "pids")


def _write(path: pathlib.Path, value: str) -> None:
  with open(path, "w") as f:
    f.write(value)


def _v2() -> bool:
  return (ROOT / "cgroup.controllers").exists()


def bases() -> list[pathlib.Path]:
  """The writable hierarchies a jail cgroup is created in (memory first), or []."""
  if _v2():
    try:
      enabled = (ROOT / "cgroup.subtree_control").read_text().split()
    except OSError:
      return []
    if {"memory", "pids"} <= set(enabled) and os.access(ROOT, os.W_OK):
      return [ROOT]
    return []
  found = [ROOT / c for c in _V1_CONTROLLERS
           if (ROOT / c / "cgroup.procs").exists() and os.access(ROOT / c, os.W_OK)]
  return found if len(found) == len(_V1_CONTROLLERS) else []


def available() -> bool:
  return bool(bases())


def _owner_tag(pid: int) -> str | None:
  try:
    return f"{pid}_{int(psutil.Process(pid).create_time() * 100)}"
  except psutil.Error:
    return None


class JailCgroup:
  """The cgroup directories of one jail (one per v1 hierarchy, or one v2 directory)."""

  def __init__(self, dirs: list[pathlib.Path]):
    self.dirs = dirs

  @property
  def name(self) -> str:
    return self.dirs[0].name

  @classmethod
  def create(cls, *, memory_mb: int, max_tasks: int) -> JailCgroup | None:
    """A new cgroup with these limits, or None where no writable hierarchy exists."""
    roots = bases()
    tag = _owner_tag(os.getpid())
    if not roots or tag is None:
      return None
    name = f"{PREFIX}{tag}_{uuid.uuid4().hex[:12]}"
    group = cls([base / name for base in roots])
    try:
      for path in group.dirs:
        path.mkdir()
      group.set_limits(memory_mb=memory_mb, max_tasks=max_tasks)
    except OSError:
      group.remove()
      return None
    return group

  def _file(self, name: str) -> pathlib.Path | None:
    for path in self.dirs:
      if (path / name).exists():
        return path / name
    return None

  def set_limits(self, *, memory_mb: int, max_tasks: int) -> None:
    """Sets the memory (no swap) and task caps; raises OSError."""
    limit = str(int(memory_mb) << 20)
    if _v2():
      _write(self.dirs[0] / "memory.max", limit)
      if (self.dirs[0] / "memory.swap.max").exists():
        _write(self.dirs[0] / "memory.swap.max", "0")
    else:
      memory = self._file("memory.limit_in_bytes")
      memsw = self._file("memory.memsw.limit_in_bytes")
      if memory is None:
        raise OSError("no memory.limit_in_bytes")
      # memsw must stay >= memory: lower it last when shrinking, raise it first otherwise.
      try:
        _write(memory, limit)
        if memsw is not None:
          _write(memsw, limit)
      except OSError:
        if memsw is None:
          raise
        _write(memsw, limit)
        _write(memory, limit)
      swappiness = self._file("memory.swappiness")
      if swappiness is not None and memsw is None:
        _write(swappiness, "0")
    pids = self._file("pids.max")
    if pids is None:
      raise OSError("no pids.max")
    _write(pids, str(int(max_tasks)))

  def procs_files(self) -> list[str]:
    """The ``cgroup.procs`` files the launcher writes its own pid into."""
    return [str(path / "cgroup.procs") for path in self.dirs]

  def pids(self) -> list[int]:
    out: set[int] = set()
    for path in self.dirs:
      try:
        out.update(int(p) for p in (path / "cgroup.procs").read_text().split())
      except (OSError, ValueError):
        continue
    return sorted(out)

  def oom_kills(self) -> int:
    """Processes the kernel's OOM killer ended in this cgroup."""
    for name in ("memory.events", "memory.oom_control"):
      path = self._file(name)
      if path is None:
        continue
      try:
        for line in path.read_text().splitlines():
          key, _, value = line.partition(" ")
          if key == "oom_kill":
            return int(value)
      except (OSError, ValueError):
        return 0
    return 0

  def memory_failures(self) -> int:
    """Times a charge hit the limit (v1 ``memory.failcnt``; v2 ``max`` events)."""
    path = self._file("memory.failcnt")
    if path is None:
      path = self._file("memory.events")
      try:
        lines = dict(ln.split(" ", 1) for ln in path.read_text().splitlines()) if path else {}
        return int(lines.get("max", 0))
      except (OSError, ValueError):
        return 0
    try:
      return int(path.read_text())
    except (OSError, ValueError):
      return 0

  def remove(self) -> bool:
    """Removes the (empty) directories; True once none is left. The kernel releases the
    last task a little after it died, so this retries for up to 2 s."""
    for _ in range(100):
      left = []
      for path in self.dirs:
        try:
          path.rmdir()
        except FileNotFoundError:
          continue
        except OSError:
          left.append(path)
      if not left:
        return True
      time.sleep(0.02)
    return False


def stale() -> list[JailCgroup]:
  """Jail cgroups whose owner process is gone (a search that was killed)."""
  groups: dict[str, list[pathlib.Path]] = {}
  for base in bases():
    for path in base.glob(f"{PREFIX}*"):
      groups.setdefault(path.name, []).append(path)
  out = []
  for name, dirs in groups.items():
    owner, _, rest = name[len(PREFIX):].partition("_")
    start = rest.partition("_")[0]
    if not owner.isdigit() or _owner_tag(int(owner)) == f"{owner}_{start}":
      continue
    out.append(JailCgroup(dirs))
  return out


def of_owner(pid: int) -> list[JailCgroup]:
  """The jail cgroups a given search process created (for tests and diagnostics)."""
  groups: dict[str, list[pathlib.Path]] = {}
  for base in bases():
    for path in base.glob(f"{PREFIX}{pid}_*"):
      groups.setdefault(path.name, []).append(path)
  return [JailCgroup(dirs) for dirs in groups.values()]
