"""Who a jail is on the host: never root.

Run as root, every jail gets a host uid/gid of its own, leased from a range no account
uses (:data:`UID_BASE`, a block that systemd's UID conventions leave unassigned), unique
among the jails of this process and of every other process on the machine: a lease is an
exclusive ``flock`` on ``<lock dir>/<uid>.lock`` held for the jail's life (the kernel drops
it when its holder dies) and is skipped while any process still runs as that uid (a zombie
does not count: it runs nothing). The
launcher drops to it before bubblewrap starts, so the jail's ``uid_map`` reads ``65534
<uid> 1`` and the kernel checks everything the jail does against an unprivileged user. Its
workdir is handed to it with :func:`give_tree` (the only host directory it may write).

Run as any other user, the jail keeps that user's uid (bubblewrap maps it to 65534), as
before: the user cannot create other uids.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pathlib
import stat

UID_BASE = 1_900_000_000
UID_COUNT = 65536
_LOCK_DIRS = ("/run/spark_clrs_jail_uids", "/tmp/spark_clrs_jail_uids")


class IdentityError(RuntimeError):
  """No uid can be leased for a jail (one line)."""


def dropping() -> bool:
  """Whether jails run as uids of their own (we are root)."""
  return os.geteuid() == 0


@dataclasses.dataclass
class Lease:
  """A uid/gid held for one jail until :meth:`release`."""

  uid: int
  gid: int
  _fd: int = -1

  def release(self) -> None:
    if self._fd >= 0:
      os.close(self._fd)  # Also drops the flock.
      self._fd = -1


def _lock_dir() -> str:
  for path in _LOCK_DIRS:
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
      continue
    try:
      os.mkdir(path, 0o700)
    except FileExistsError:
      pass
    except OSError:
      continue
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o077:
      return path
  raise IdentityError(f"no root-only directory for jail uid leases ({', '.join(_LOCK_DIRS)})")


def running_uids() -> dict[int, list[int]]:
  """{uid: [pid, ...]} of every live process (real or effective uid), from /proc."""
  out: dict[int, list[int]] = {}
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/status", "rb") as f:
        text = f.read(4096)
    except OSError:
      continue
    for line in text.splitlines():
      if line.startswith(b"State:") and b"zombie" in line:
        break
      if line.startswith(b"Uid:"):
        real, effective = (int(x) for x in line.split()[1:3])
        for uid in {real, effective}:
          out.setdefault(uid, []).append(int(name))
        break
  return out


def _mapped(uid: int) -> bool:
  """Whether ``uid`` exists in this user namespace (a container may map only a few)."""
  try:
    with open("/proc/self/uid_map") as f:
      for line in f:
        inside, _, count = (int(x) for x in line.split())
        if inside <= uid < inside + count:
          return True
  except (OSError, ValueError):
    return False
  return False


def lease() -> Lease:
  """A fresh uid/gid for one jail (see the module docstring); raises IdentityError."""
  directory = _lock_dir()
  busy = running_uids()
  for uid in range(UID_BASE, UID_BASE + UID_COUNT):  # Lowest free first: few lock files.
    if not _mapped(uid):
      raise IdentityError(f"uid {uid} does not exist in this user namespace; run as a "
                          "normal user, where the jail keeps your uid")
    fd = os.open(os.path.join(directory, f"{uid}.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      continue
    if uid in busy:
      os.close(fd)
      continue
    return Lease(uid=uid, gid=uid, _fd=fd)
  raise IdentityError(f"all {UID_COUNT} jail uids from {UID_BASE} are in use")


def give_tree(root: pathlib.Path, uid: int, gid: int, max_entries: int) -> bool:
  """Makes ``root`` and what is in it owned by ``uid``/``gid`` (``root`` mode 0700) without
  following a link; stops after ``max_entries`` (False then). The tree may hold what an
  earlier jail left: walked through directory descriptors, links changed themselves."""
  fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
  try:
    os.fchown(fd, uid, gid)
    os.fchmod(fd, 0o700)
  finally:
    os.close(fd)
  count = 0
  for _, dirs, files, dirfd in os.fwalk(root, follow_symlinks=False):
    for name in dirs + files:
      count += 1
      if count > max_entries:
        return False
      try:
        os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
      except FileNotFoundError:
        continue
  return True
