"""Every parent-side read and write in a directory the jail can write (SPEC §9).

A jailed run's workdir belongs to the jail: whatever runs there may have replaced any
file or directory in it by a symlink (to a host secret, to ``/dev/zero``, to a host
folder), a FIFO, a hard link, a directory, or an ``.npz`` whose headers lie. The trusted
parent often runs as root, so one careless ``open`` there reads or writes the host. This
module is the only way the parent touches such a directory, and it holds whether the
jail is still running (the checkpoint selector reads while it trains) or not:

* **Paths.** ``root`` is a directory the jail cannot rename or replace (the workdir
  itself); everything below it is walked one component at a time relative to a
  directory descriptor with ``O_NOFOLLOW``, so no symlink is ever followed and the
  directory checked is the directory used. ``..``, empty and absolute components are
  refused.
* **Reads** open with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO, or a file under a lease,
  cannot block the parent), then ``fstat`` must say a regular file with one link (a
  device such as ``/dev/zero`` or a planted hard link is refused), and at most the
  caller's declared ``max_bytes`` are read, however large the file claims or grows.
* **Writes** create a new file under an unpredictable name with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` and ``renameat`` it over the final name: the parent
  never opens, truncates or writes an existing inode, so a symlink or hard link planted
  at either name changes nothing outside. New directories and files take the owner of
  the directory they are made in (when running as root), so the jail's uid can still use
  what the parent prepared for it.
* **Arrays.** ``.npz`` files are parsed here, not by ``np.load``: every member's ``.npy``
  header (shape x dtype) is read with a bounded read and checked against the declared
  (uncompressed) member size and against what the caller expects *before* any array is
  allocated; only plain bool, integer and float dtypes in native byte order; no pickle
  at all; only stored or deflated members, each inflated to exactly its declared size
  (CRC checked), the declared sizes summing to at most ``max_bytes``. A 300-byte file
  claiming 10^12 elements is a :class:`BoundaryError`, never a ``MemoryError``. Peak
  memory of a load is at most twice ``max_bytes`` (the file, then its arrays).
* **Removal** walks trees through directory descriptors without following links, with
  a bounded number of them open however deep the tree.

Every violation is a :class:`BoundaryError` whose message is one line naming the file
(jail-chosen names sanitised, contents never quoted); callers turn it into a rejected
candidate. The path walk lives in :mod:`~spark_clrs.isolation.boundary` and the ``.npz``
parser in :mod:`~spark_clrs.isolation.npz_format`; callers use this module's API only.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spark_clrs.isolation import npz_format
from spark_clrs.isolation.boundary import (
  DIR_FLAGS,
  BoundaryError,
  chown_like,
  clean,
  open_child_dir,
  open_dir,
  parent_of,
  parts,
  walk,
)
from spark_clrs.isolation.npz_format import ACCEPTED_KINDS, Expect, Shape

MAX_FILE_BYTES = 1 << 30  # A default ceiling for callers; each read states its own.
MAX_ENTRIES = 100_000  # Names in one listed directory.
MAX_DEPTH = 64  # Directory descriptors a tree's removal holds open at most.
_READ_CHUNK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# ----------------------------------------------------------------------------- reading


def _read_fd(fd: int, limit: int, what: str) -> bytes:
  """Up to ``limit`` bytes of the regular file ``fd``; more is a BoundaryError."""
  info = os.fstat(fd)
  if not stat.S_ISREG(info.st_mode):
    raise BoundaryError(f"{clean(what)} is not a regular file")
  if info.st_nlink != 1:
    raise BoundaryError(f"{clean(what)} has {info.st_nlink} hard links, expected 1")
  if info.st_size > limit:
    raise BoundaryError(f"{clean(what)} has {info.st_size} bytes, over the {limit} byte "
                        "limit")
  chunks, total = [], 0
  while True:
    chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - total))
    if not chunk:
      return b"".join(chunks)
    chunks.append(chunk)
    total += len(chunk)
    if total > limit:  # It grew while we read.
      raise BoundaryError(f"{clean(what)} grew past the {limit} byte limit")


def read_bytes(root: Path | str, relpath: str, *, max_bytes: int) -> bytes:
  """Contents of the regular file ``root/relpath``, at most ``max_bytes`` of them.

  Raises:
    BoundaryError: missing, a link, a FIFO/device/directory, hard-linked, or larger
      than ``max_bytes``.
  """
  try:
    with parent_of(root, relpath) as (dir_fd, name):
      try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
      except OSError as e:
        if isinstance(e, FileNotFoundError):
          raise
        raise BoundaryError(f"{clean(relpath)} cannot be opened as a plain file "
                            f"({e.strerror})") from None
      try:
        return _read_fd(fd, max_bytes, relpath)
      finally:
        os.close(fd)
  except FileNotFoundError:
    raise BoundaryError(f"{clean(relpath)} is missing") from None


def read_json(root: Path | str, relpath: str, *, max_bytes: int) -> Any:
  """The JSON value in ``root/relpath`` (read as :func:`read_bytes` reads).

  Raises:
    BoundaryError: as :func:`read_bytes`, or not valid (or too deeply nested) JSON.
  """
  raw = read_bytes(root, relpath, max_bytes=max_bytes)
  try:
    return json.loads(raw.decode("utf-8"))
  except (ValueError, RecursionError, UnicodeDecodeError) as e:
    raise BoundaryError(f"{clean(relpath)} is not valid JSON ({type(e).__name__})") from None


# ------------------------------------------------------------------------------- .npz


def npz_headers(root: Path | str, relpath: str, *, max_bytes: int
                ) -> dict[str, tuple[Shape, str]]:
  """``{array name: (shape, dtype name)}`` of the ``.npz`` at ``root/relpath``, from its
  members' headers only (no array is read or allocated).

  Raises:
    BoundaryError: as :func:`read_bytes`, or not an ``.npz`` of plain numeric arrays
      whose headers agree with their declared sizes.
  """
  return npz_format.headers(read_bytes(root, relpath, max_bytes=max_bytes), relpath,
                            max_bytes)


def load_npz(root: Path | str, relpath: str, *, max_bytes: int,
             expect: Expect | None = None) -> dict[str, np.ndarray]:
  """The arrays of the ``.npz`` at ``root/relpath``, read safely (module docstring).

  Args:
    root: a directory the jail cannot replace.
    relpath: the file, relative to ``root``.
    max_bytes: the largest file, and the largest sum of the members' uncompressed sizes.
    expect: checked on every member's header before any array is allocated: a mapping
      ``{name: (shape, dtype)}`` that the arrays must match exactly (no missing or extra
      name), or a callable ``expect(name, shape, dtype)`` that raises
      :class:`BoundaryError` for a member it does not accept; None accepts any plain
      numeric array.

  Raises:
    BoundaryError: see :func:`read_bytes`; not an ``.npz`` of plain numeric arrays
      (object arrays are refused, nothing is unpickled); a header that disagrees with
      its member's size or with ``expect``; a member that does not inflate to exactly
      its declared size with a valid CRC.
  """
  return npz_format.arrays(read_bytes(root, relpath, max_bytes=max_bytes), relpath,
                           max_bytes, expect)


# ----------------------------------------------------------------------------- writing


def _write_new(dir_fd: int, name: str, relpath: str, write: Callable[[io.BufferedWriter], None]
               ) -> None:
  """Writes a new file under an unpredictable name in ``dir_fd``, then renames it to
  ``name`` (replacing whatever entry, link included, held that name)."""
  for _ in range(8):
    tmp = f".{name[:200]}.{secrets.token_hex(8)}.tmp"
    try:
      fd = os.open(tmp, _CREATE_FLAGS, 0o644, dir_fd=dir_fd)
      break
    except FileExistsError:
      continue
    except OSError as e:
      raise BoundaryError(f"cannot create a file next to {clean(relpath)} ({e.strerror})"
                          ) from None
  else:
    raise BoundaryError(f"cannot create a fresh temporary file next to {clean(relpath)}")
  try:
    chown_like(fd, dir_fd)
    with os.fdopen(fd, "wb", closefd=False) as f:
      write(f)
    os.close(fd)
    fd = -1
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
  except BaseException as e:
    if fd >= 0:
      os.close(fd)
    try:
      os.unlink(tmp, dir_fd=dir_fd)
    except OSError:
      pass
    if isinstance(e, OSError):
      raise BoundaryError(f"cannot write {clean(relpath)} ({e.strerror or e})") from None
    raise


def write_bytes(root: Path | str, relpath: str, data: bytes, *, parents: bool = False
                ) -> None:
  """Writes ``data`` as a new file at ``root/relpath`` (see the module docstring).

  Args:
    parents: create missing directories on the way (each opened without following).

  Raises:
    BoundaryError: a directory on the way is missing (without ``parents``), a link or not
      a directory; the final name is a directory; the write failed.
  """
  try:
    with parent_of(root, relpath, create=parents) as (dir_fd, name):
      _write_new(dir_fd, name, relpath, lambda f: f.write(data))
  except FileNotFoundError:
    raise BoundaryError(f"the directory of {clean(relpath)} is missing") from None


def save_npz(root: Path | str, relpath: str, arrays: Mapping[str, Any], *,
             compress: bool = False, parents: bool = False) -> None:
  """Writes ``arrays`` as an ``.npz`` at ``root/relpath``, as :func:`write_bytes` writes.

  ``compress`` suits mostly-zero data such as blanked hints (spark's inputs: 72 MB raw).

  Raises:
    ValueError: an array is not bool, integer or float (only those cross the boundary).
    BoundaryError: as :func:`write_bytes`.
  """
  clean_arrays = {}
  for name, value in arrays.items():
    value = np.asarray(value)
    if value.dtype.kind not in ACCEPTED_KINDS:
      raise ValueError(f"array {name!r} has dtype {value.dtype}; only numeric arrays cross "
                       "the jail boundary")
    clean_arrays[name] = value
  save = np.savez_compressed if compress else np.savez
  try:
    with parent_of(root, relpath, create=parents) as (dir_fd, name):
      _write_new(dir_fd, name, relpath, lambda f: save(f, **clean_arrays))
  except FileNotFoundError:
    raise BoundaryError(f"the directory of {clean(relpath)} is missing") from None


# ---------------------------------------------------------------------- listing, removal


def list_names(root: Path | str, reldir: str, *, max_entries: int = MAX_ENTRIES
               ) -> list[str]:
  """Names in the directory ``root/reldir`` (empty when it does not exist).

  Raises:
    BoundaryError: a component is a link or not a directory; more than ``max_entries``.
  """
  try:
    fd = walk(root, parts(reldir))
  except FileNotFoundError:
    return []
  try:
    return _names(fd, reldir, max_entries)
  finally:
    os.close(fd)


def _is_dir_entry(dir_fd: int, name: str) -> bool:
  return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)


def _names(fd: int, what: str, max_entries: int = MAX_ENTRIES) -> list[str]:
  """Names in the directory ``fd``, at most ``max_entries`` of them."""
  names = []
  with os.scandir(fd) as entries:
    for entry in entries:
      if len(names) >= max_entries:
        raise BoundaryError(f"{clean(what)} holds more than {max_entries} entries")
      names.append(entry.name)
  return names


def _empty(top_fd: int, what: str, keep: Collection[str] = ()) -> None:
  """Removes everything in the directory ``top_fd`` except the top-level ``keep`` names.

  Iterative (a depth-first stack of directory descriptors), never following a link; an
  entry that vanished meanwhile is skipped. A directory deeper than :data:`MAX_DEPTH` is
  first renamed up into ``top_fd`` under a fresh name, so no tree, however deep, needs
  more than ``MAX_DEPTH`` open descriptors.
  """
  stack: list[tuple[int, list[str]]] = [
      (top_fd, [n for n in _names(top_fd, what) if n not in keep])]
  try:
    while stack:
      fd, names = stack[-1]
      if not names:
        if len(stack) == 1:
          return
        stack.pop()
        os.close(fd)
        parent_fd, parent_names = stack[-1]
        name = parent_names.pop()
        try:
          os.rmdir(name, dir_fd=parent_fd)
        except FileNotFoundError:
          pass
        continue
      name = names[-1]
      try:
        if not _is_dir_entry(fd, name):
          os.unlink(name, dir_fd=fd)
          names.pop()
          continue
        if len(stack) > MAX_DEPTH:
          moved = f".removing.{secrets.token_hex(8)}"
          os.rename(name, moved, src_dir_fd=fd, dst_dir_fd=top_fd)
          names.pop()
          stack[0][1].insert(0, moved)  # The end of the list is in progress.
          continue
        sub = os.open(name, DIR_FLAGS, dir_fd=fd)
      except FileNotFoundError:
        names.pop()
        continue
      try:
        stack.append((sub, _names(sub, what)))
      except BaseException:
        os.close(sub)
        raise
  except OSError as e:
    raise BoundaryError(f"cannot remove {clean(what)} ({e.strerror})") from None
  finally:
    for fd, _ in stack[1:]:
      os.close(fd)


def _remove(dir_fd: int, name: str, what: str) -> None:
  """Removes the entry ``name`` of ``dir_fd``: a file, link, FIFO, or a whole tree."""
  try:
    if not _is_dir_entry(dir_fd, name):
      os.unlink(name, dir_fd=dir_fd)
      return
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
      _empty(fd, what)
    finally:
      os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)
  except FileNotFoundError:
    return
  except OSError as e:
    raise BoundaryError(f"cannot remove {clean(what)} ({e.strerror})") from None


def unlink(root: Path | str, relpath: str) -> None:
  """Removes whatever is at ``root/relpath`` (a file, a link, a FIFO or a directory tree);
  nothing when it is missing. Never acts through a link.

  Raises:
    BoundaryError: a directory on the way is a link or not a directory; removal failed.
  """
  try:
    with parent_of(root, relpath) as (dir_fd, name):
      _remove(dir_fd, name, relpath)
  except FileNotFoundError:
    return


def reset_dir(root: Path | str, relpath: str, *, keep: Collection[str] = ()) -> None:
  """Makes ``root/relpath`` an empty directory (missing directories on the way created),
  removing a jail-written tree without following links; top-level entries named in
  ``keep`` stay (e.g. the saved state of a deferred test), as they are.

  Raises:
    BoundaryError: a directory on the way is a link or not a directory; removal failed.
  """
  with parent_of(root, relpath, create=True) as (dir_fd, name):
    try:
      is_dir = _is_dir_entry(dir_fd, name)
    except FileNotFoundError:
      is_dir = None
    if is_dir is False:
      _remove(dir_fd, name, relpath)
    if is_dir:
      fd = open_child_dir(dir_fd, name, relpath)
      try:
        _empty(fd, relpath, keep)
      finally:
        os.close(fd)
    else:
      os.close(open_child_dir(dir_fd, name, relpath, create=True))


__all__ = ["ACCEPTED_KINDS", "BoundaryError", "Expect", "MAX_FILE_BYTES", "clean",
           "list_names", "load_npz", "npz_headers", "open_dir", "read_bytes", "read_json",
           "reset_dir", "save_npz", "unlink", "write_bytes"]
