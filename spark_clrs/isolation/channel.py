"""The control channel between the parent and a jailed child: framed JSON on a socket.

One ``AF_UNIX`` stream socket per child carries everything that is not the candidate's
files: the request (parent -> child), ``{"ready": true}`` once a pre-started worker has
imported its preload, ``{"progress": {...}}`` records and the final ``{"result": {...}}``
(child -> parent). Nothing of it lives in a directory the jail can write, so the jail can
neither replace a control file with a link or a FIFO nor make the parent read without
bound: every frame is a 4-byte big-endian length and that many bytes of a JSON object, and
the parent's :class:`Reader` refuses a frame over :data:`MAX_FRAME_BYTES` and a stream
over its total cap. Standard library only: the child imports it before its limits are set.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import threading
from typing import Any

MAX_FRAME_BYTES = 4 << 20  # One request, progress record or result.
PROGRESS_VAR = "SPARK_SANDBOX_PROGRESS"  # The child's channel fd, for report_progress.
_HEADER = struct.Struct(">I")
_SEND_LOCK = threading.Lock()


class ProtocolError(ValueError):
  """The peer broke the framing (size, JSON, type); the message is one line."""


def encode(message: dict[str, Any]) -> bytes:
  body = json.dumps(message, separators=(",", ":")).encode()
  if len(body) > MAX_FRAME_BYTES:
    raise ProtocolError(f"message of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
  return _HEADER.pack(len(body)) + body


def send_fd(fd: int, message: dict[str, Any]) -> None:
  """Writes one frame to ``fd`` (blocking, whole frame, serialised between threads)."""
  data = memoryview(encode(message))
  with _SEND_LOCK:
    while data:
      data = data[os.write(fd, data):]


class Reader:
  """Parent side: turns bytes read from the socket into messages, with bounds."""

  def __init__(self, max_total_bytes: int):
    self._buffer = bytearray()
    self._max_total = max_total_bytes
    self.total = 0

  def feed(self, data: bytes) -> list[dict[str, Any]]:
    """The complete messages ``data`` finishes; raises ProtocolError past a bound."""
    self.total += len(data)
    if self.total > self._max_total:
      raise ProtocolError(f"more than {self._max_total} bytes on the control channel")
    self._buffer += data
    out = []
    while len(self._buffer) >= _HEADER.size:
      (size,) = _HEADER.unpack_from(self._buffer)
      if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"a control message of {size} bytes (limit {MAX_FRAME_BYTES})")
      if len(self._buffer) < _HEADER.size + size:
        break
      body = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
      del self._buffer[:_HEADER.size + size]
      try:
        message = json.loads(body)
      except ValueError:
        raise ProtocolError("a control message that is not JSON") from None
      if not isinstance(message, dict):
        raise ProtocolError(f"a control message that is a {type(message).__name__}")
      out.append(message)
    return out


def receive(sock: socket.socket) -> dict[str, Any] | None:
  """Child side: blocks for one message from the parent; None at end of stream."""
  reader = Reader(max_total_bytes=MAX_FRAME_BYTES + _HEADER.size)
  while True:
    chunk = sock.recv(1 << 16)
    if not chunk:
      return None
    messages = reader.feed(chunk)
    if messages:
      return messages[0]


def report_progress(**fields: Any) -> None:
  """Child side: records where the target is (e.g. ``stage="shape"``).

  The parent returns the last record as ``ChildResult.progress``, so a child that dies
  (timeout, crash, memory) can still be attributed to the step it was in. A no-op outside
  a sandbox child or once the channel is gone.
  """
  fd = os.environ.get(PROGRESS_VAR)
  if not fd:
    return
  try:
    if stat.S_ISSOCK(os.fstat(int(fd)).st_mode):  # Not a file that reused the number.
      send_fd(int(fd), {"progress": fields})
  except (OSError, ValueError, TypeError):
    pass
