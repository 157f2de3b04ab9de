"""How the trusted parent reaches into a directory the jail can write, one step at a time.

The base of :mod:`spark_clrs.isolation.exchange` (read that module's docstring first):
the error every violation raises, and the walk from a trusted root down to a directory
below it, one component at a time relative to a directory descriptor with
``O_NOFOLLOW``, so no symlink is ever followed and the directory checked is the directory
used. Only exchange and its ``.npz`` parser import this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spark_clrs.messages import one_line

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_LIMIT = 80
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.|:/~-]")


class BoundaryError(ValueError):
  """A file from the jail's side is missing, not a plain file, too large or malformed.

  The message is always one printable line (callers record it as the reason a candidate
  was rejected).
  """

  def __init__(self, reason: str):
    super().__init__(one_line(reason))


def clean(name: Any, limit: int = _NAME_LIMIT) -> str:
  """A jail-chosen name, safe to put in a reason (printable, short)."""
  text = _SAFE_NAME.sub("?", str(name))
  return text if len(text) <= limit else text[:limit] + "..."


def parts(relpath: str) -> list[str]:
  """The components of a relative path, each a plain name."""
  if not relpath:
    return []
  names = relpath.split("/")
  for name in names:
    if name in ("", ".", "..") or "\0" in name or len(name) > 255:
      raise BoundaryError(f"bad path component {clean(name)!r} in {clean(relpath)}")
  return names


def chown_like(fd: int, dir_fd: int) -> None:
  """Gives the new file or directory ``fd`` the owner of ``dir_fd`` (root only).

  Under the jail's own uid the parent (root) would otherwise leave root-owned entries
  in the jail's workdir, which the jail could then not write into.
  """
  if os.geteuid() != 0:
    return
  parent = os.fstat(dir_fd)
  mine = os.fstat(fd)
  if (mine.st_uid, mine.st_gid) != (parent.st_uid, parent.st_gid):
    os.fchown(fd, parent.st_uid, parent.st_gid)


def open_child_dir(dir_fd: int, name: str, what: str, *, create: bool = False) -> int:
  """fd of the directory ``name`` in ``dir_fd`` (never through a symlink)."""
  try:
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
  except FileNotFoundError:
    if not create:
      raise
  except OSError as e:
    raise BoundaryError(f"{clean(what)} is not a plain directory ({e.strerror})") from None
  try:
    os.mkdir(name, 0o755, dir_fd=dir_fd)
  except FileExistsError:  # Made meanwhile (or a link planted): opened without following.
    pass
  except OSError as e:
    raise BoundaryError(f"cannot create {clean(what)} ({e.strerror})") from None
  try:
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
  except OSError as e:
    raise BoundaryError(f"{clean(what)} is not a plain directory ({e.strerror})") from None
  chown_like(fd, dir_fd)
  return fd


def walk(root: Path | str, names: Sequence[str], *, create: bool = False) -> int:
  """fd of ``root/names...``; ``root`` is trusted, every name opened with O_NOFOLLOW.

  Raises:
    FileNotFoundError: a component is missing (and ``create`` is False).
    BoundaryError: a component is a link or not a directory.
  """
  fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
  try:
    for i, name in enumerate(names):
      nxt = open_child_dir(fd, name, "/".join(names[:i + 1]), create=create)
      os.close(fd)
      fd = nxt
  except BaseException:
    os.close(fd)
    raise
  return fd


def open_dir(root: Path | str, relpath: str = "") -> int:
  """A descriptor of the directory ``root/relpath``, no link followed below ``root``.

  The caller closes it. ``root`` must be a directory the jail cannot replace.

  Raises:
    BoundaryError: missing, a link, or not a directory.
  """
  try:
    return walk(root, parts(relpath))
  except FileNotFoundError:
    raise BoundaryError(f"{clean(relpath) or '.'} is missing") from None


@contextmanager
def parent_of(root: Path | str, relpath: str, *, create: bool = False
              ) -> Iterator[tuple[int, str]]:
  """(fd of the directory holding ``relpath``, its last component); FileNotFoundError
  when a directory on the way is missing."""
  names = parts(relpath)
  if not names:
    raise BoundaryError("an empty path names no file")
  fd = walk(root, names[:-1], create=create)
  try:
    yield fd, names[-1]
  finally:
    os.close(fd)


__all__ = ["BoundaryError", "DIR_FLAGS", "chown_like", "clean", "open_child_dir", "open_dir",
           "parent_of", "parts", "walk"]
