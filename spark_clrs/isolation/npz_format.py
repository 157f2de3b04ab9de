"""The ``.npz`` format, parsed defensively from bytes a jail wrote (no ``np.load``).

:mod:`spark_clrs.isolation.exchange` reads the file with a bound, then this module parses
it: every member's ``.npy`` header (shape x dtype) is read with a bounded read and checked
against the member's declared (uncompressed) size and against what the caller expects
*before* any array is allocated; only plain bool, integer and float dtypes in native byte
order; nothing is unpickled; only stored or deflated members, each inflated to exactly
its declared size (CRC checked), the declared sizes summing to at most ``max_bytes``. A
300-byte file claiming 10^12 elements is a :class:`BoundaryError`, never a
``MemoryError``.
"""

from __future__ import annotations

import ast
import io
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from spark_clrs.isolation.boundary import BoundaryError, clean

MAX_MEMBERS = 100_000  # Arrays in one .npz.
MAX_HEADER_BYTES = 10_000  # An .npy header (numpy's own default cap).
ACCEPTED_KINDS = "biuf"  # bool, signed and unsigned integers, floats.
_READ_CHUNK = 1 << 20
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# What a hostile zip or .npy header can make the standard library raise while parsing.
_PARSE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError,
                 NotImplementedError, RuntimeError, struct.error, OverflowError, KeyError,
                 TypeError, SyntaxError, RecursionError, MemoryError, UnicodeDecodeError)

Shape = tuple[int, ...]
Expect = (Callable[[str, Shape, np.dtype], None]
          | Mapping[str, tuple[Shape, str | np.dtype]])


class _Member:
  """One checked ``.npz`` member: its zip entry and its parsed ``.npy`` header."""

  def __init__(self, info: zipfile.ZipInfo, name: str, shape: Shape, dtype: np.dtype,
               fortran: bool, offset: int):
    self.info, self.name, self.shape, self.dtype = info, name, shape, dtype
    self.fortran, self.offset = fortran, offset

  @property
  def nbytes(self) -> int:
    return self.info.file_size - self.offset


def _read_exact(stream: Any, n: int, what: str) -> bytes:
  data = stream.read(n)
  if len(data) != n:
    raise BoundaryError(f"{what} ends inside its .npy header")
  return data


def _npy_header(stream: Any, what: str) -> tuple[Shape, np.dtype, bool, int]:
  """(shape, dtype, fortran order, header length) of an ``.npy`` stream; bounded reads."""
  magic = _read_exact(stream, 8, what)
  if magic[:6] != _NPY_MAGIC:
    raise BoundaryError(f"{what} is not an .npy array")
  major = magic[6]
  if major == 1:
    (length,) = struct.unpack("<H", _read_exact(stream, 2, what))
    offset = 10
  elif major in (2, 3):
    (length,) = struct.unpack("<I", _read_exact(stream, 4, what))
    offset = 12
  else:
    raise BoundaryError(f"{what} has .npy format version {major}")
  if length > MAX_HEADER_BYTES:
    raise BoundaryError(f"{what} has a {length} byte .npy header, over {MAX_HEADER_BYTES}")
  text = _read_exact(stream, length, what).decode("utf-8" if major == 3 else "latin1")
  header = ast.literal_eval(text)
  if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
    raise BoundaryError(f"{what} has a malformed .npy header")
  shape, fortran = header["shape"], header["fortran_order"]
  if (not isinstance(shape, tuple) or not isinstance(fortran, bool)
      or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
    raise BoundaryError(f"{what} has a malformed .npy header")
  dtype = np.lib.format.descr_to_dtype(header["descr"])
  if dtype.hasobject or dtype.kind not in ACCEPTED_KINDS:
    raise BoundaryError(f"{what} has dtype {clean(dtype)}; only bool, integer and float "
                        "arrays are accepted")
  if not dtype.isnative:
    raise BoundaryError(f"{what} has dtype {clean(dtype.str)} in non-native byte order")
  return shape, dtype, fortran, offset + length


def _members(raw: bytes, relpath: str, max_bytes: int
             ) -> tuple[zipfile.ZipFile, list[_Member]]:
  """The archive and its members' checked headers (no array data read or allocated)."""
  archive = zipfile.ZipFile(io.BytesIO(raw))
  try:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
      raise BoundaryError(f"{clean(relpath)} holds {len(infos)} arrays, over {MAX_MEMBERS}")
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
      raise BoundaryError(f"{clean(relpath)} unpacks to {declared} bytes, over the "
                          f"{max_bytes} byte limit")
    members, seen = [], set()
    for info in infos:
      what = f"{relpath}: member {clean(info.filename)}"
      if not info.filename.endswith(".npy") or info.is_dir():
        raise BoundaryError(f"{what} is not an .npy array")
      name = info.filename[:-len(".npy")]
      if name in seen:
        raise BoundaryError(f"{relpath} holds array {clean(name)} twice")
      seen.add(name)
      if info.compress_type not in _ZIP_METHODS or info.flag_bits & 0x1:
        raise BoundaryError(f"{what} is encrypted or compressed with method "
                            f"{info.compress_type}; only stored or deflated members")
      with archive.open(info) as stream:
        shape, dtype, fortran, offset = _npy_header(stream, what)
      count = 1
      for d in shape:
        count *= d
      if info.file_size != offset + count * dtype.itemsize:
        raise BoundaryError(f"{what} claims {dtype.name}{list(shape)} "
                            f"({count * dtype.itemsize} bytes) but declares "
                            f"{info.file_size - offset} bytes of data")
      members.append(_Member(info, name, shape, dtype, fortran, offset))
  except BaseException:
    archive.close()
    raise
  return archive, members


def _check_expected(members: Sequence[_Member], expect: Expect | None, relpath: str) -> None:
  if expect is None:
    return
  if callable(expect):
    for m in members:
      expect(m.name, m.shape, m.dtype)
    return
  names = {m.name for m in members}
  missing = sorted(set(expect) - names)
  if missing:
    raise BoundaryError(f"{clean(relpath)}: no array {clean(missing[0])!r} "
                        f"({len(missing)} missing)")
  extra = sorted(names - set(expect))
  if extra:
    raise BoundaryError(f"{clean(relpath)}: unexpected array {clean(extra[0])!r} "
                        f"({len(extra)} in all)")
  for m in members:
    shape, dtype = expect[m.name]
    if m.shape != tuple(shape) or m.dtype != np.dtype(dtype):
      raise BoundaryError(f"{clean(relpath)}: array {clean(m.name)} is {m.dtype.name}"
                          f"{list(m.shape)}, expected {np.dtype(dtype).name}{list(shape)}")


def _read_member(archive: zipfile.ZipFile, m: _Member, relpath: str) -> np.ndarray:
  """The member's array, inflated to exactly its declared size (CRC checked)."""
  flat = np.empty(m.nbytes // m.dtype.itemsize, m.dtype)
  view = memoryview(flat.view(np.uint8))
  with archive.open(m.info) as stream:
    stream.read(m.offset)  # The header, checked already.
    filled = 0
    while filled < m.nbytes:
      got = stream.readinto(view[filled:filled + _READ_CHUNK])
      if not got:
        raise BoundaryError(f"{clean(relpath)}: member {clean(m.name)} ends early")
      filled += got
    if stream.read(1):  # Never more than declared; also runs the CRC check at the end.
      raise BoundaryError(f"{clean(relpath)}: member {clean(m.name)} is longer than declared")
  return flat.reshape(m.shape, order="F" if m.fortran else "C")


def _parse(raw: bytes, relpath: str, max_bytes: int) -> tuple[zipfile.ZipFile,
                                                               list[_Member]]:
  try:
    return _members(raw, relpath, max_bytes)
  except BoundaryError:
    raise
  except _PARSE_ERRORS as e:
    raise BoundaryError(f"{clean(relpath)} is not a valid .npz of plain arrays "
                        f"({type(e).__name__})") from None


def headers(raw: bytes, relpath: str, max_bytes: int) -> dict[str, tuple[Shape, str]]:
  """``{array name: (shape, dtype name)}`` of the ``.npz`` bytes ``raw`` (from ``relpath``),
  from its members' headers only (no array is read or allocated).

  Raises:
    BoundaryError: not an ``.npz`` of plain numeric arrays whose headers agree with
      their declared sizes, or declared sizes summing to more than ``max_bytes``.
  """
  archive, members = _parse(raw, relpath, max_bytes)
  archive.close()
  return {m.name: (m.shape, m.dtype.name) for m in members}


def arrays(raw: bytes, relpath: str, max_bytes: int, expect: Expect | None
           ) -> dict[str, np.ndarray]:
  """The arrays of the ``.npz`` bytes ``raw``, each header checked against ``expect``
  (see ``exchange.load_npz``) before any array is allocated.

  Raises:
    BoundaryError: as :func:`headers`; a header that disagrees with ``expect``; a
      member that does not inflate to exactly its declared size with a valid CRC.
  """
  archive, members = _parse(raw, relpath, max_bytes)
  with archive:
    _check_expected(members, expect, relpath)
    try:
      return {m.name: _read_member(archive, m, relpath) for m in members}
    except BoundaryError:
      raise
    except _PARSE_ERRORS as e:
      raise BoundaryError(f"{clean(relpath)} is not a valid .npz of plain arrays "
                          f"({type(e).__name__})") from None


__all__ = ["ACCEPTED_KINDS", "Expect", "MAX_HEADER_BYTES", "MAX_MEMBERS", "Shape", "arrays",
           "headers"]
