"""The reply cache: a request asked before is answered from disk, never sent twice.

:func:`request_key` hashes the full request (model, api_base, messages, temperature,
max_tokens, extra body and a sample index), so re-running a finished run, resuming a
crashed one, or replaying a recorded run offline sends no request twice. The sample
index counts identical requests within one client, so a search that asks the same
question twice still gets two independent answers, and a re-run gets the same two back.
Only answers are cached: a failed, refused or empty reply is asked again by the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

Message = Mapping[str, str]


def request_key(model: str, api_base: str | None, messages: Sequence[Message],
                temperature: float, max_tokens: int | None, sample: int,
                seed: int | None = None, extra_body: str = "") -> str:
  """SHA-256 of the canonical JSON of everything that determines a reply.

  ``seed`` is part of the key only for the offline provider, whose replies it decides;
  ``extra_body`` only when set (provider options such as a context size change replies).
  """
  payload: dict[str, Any] = {
      "model": model, "api_base": api_base or None,
      "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
      "temperature": float(temperature), "max_tokens": max_tokens, "sample": int(sample),
  }
  if seed is not None:
    payload["seed"] = int(seed)
  if extra_body:
    payload["extra_body"] = json.loads(extra_body)
  blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
  """Answers keyed by :func:`request_key`, in a SQLite file (WAL).

  Safe to share between processes; a missing file is created.
  """

  _SCHEMA = """CREATE TABLE IF NOT EXISTS replies (
      key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL,
      reply TEXT NOT NULL, meta TEXT NOT NULL, created REAL NOT NULL)"""

  def __init__(self, path: str | os.PathLike[str]):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._lock = threading.Lock()
    self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
    self._conn.execute("PRAGMA journal_mode=WAL")
    self._conn.execute(self._SCHEMA)
    self._conn.commit()

  def get(self, key: str) -> dict[str, Any] | None:
    """``{"reply": str, **meta}`` for a cached request, else ``None``."""
    with self._lock:
      row = self._conn.execute("SELECT reply, meta FROM replies WHERE key = ?", (key,)).fetchone()
    if row is None or not row[0].strip():  # An empty reply is never an answer.
      return None
    return {"reply": row[0], **json.loads(row[1])}

  def put(self, key: str, model: str, messages: Sequence[Message], reply: str,
          meta: Mapping[str, Any]) -> None:
    """Stores an answer; an empty one is refused (it would be replayed as a success)."""
    if not reply.strip():
      raise ValueError("an empty reply is not an answer and is never cached")
    request = json.dumps(list(messages), ensure_ascii=False)
    with self._lock:
      self._conn.execute(
          "INSERT OR REPLACE INTO replies (key, model, request, reply, meta, created) "
          "VALUES (?, ?, ?, ?, ?, ?)",
          (key, model, request, reply, json.dumps(dict(meta)), time.time()))
      self._conn.commit()

  def __len__(self) -> int:
    with self._lock:
      return int(self._conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

  def close(self) -> None:
    with self._lock:
      self._conn.close()


__all__ = ["Message", "ReplyCache", "request_key"]
