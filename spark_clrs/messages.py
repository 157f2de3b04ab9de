"""Text shown to people, the LLM or the archive: one printable line, bounded, without secrets.

Every reason, error and stop line goes through :func:`one_line`, because such text may
embed what candidate code or a provider controls (an exception message, an HTTP body),
and it is written to the archive, the logs and the console. A provider that echoes the
request's ``Authorization`` header in an error would otherwise put an API key in all of
them, so :func:`one_line` also applies :func:`redact`.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

MAX_CHARS = 400  # A whole reason or error line.
REDACTED = "[redacted]"
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
# Environment variables whose values are secrets (OPENAI_API_KEY, HF_TOKEN, AWS_SECRET_...).
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)
_MIN_SECRET_CHARS = 8  # Shorter values (KEYBOARD=us) are not secrets worth a false match.
_TOKEN = r"[A-Za-z0-9._~+/=-]"
# A generated key: long, letters and digits (so code such as ``key = hk.next_rng_key()`` stays).
_KEYLIKE = r"(?=[A-Za-z0-9._~+/=-]*\d)(?=[A-Za-z0-9._~+/=-]*[A-Za-z])[A-Za-z0-9._~+/=-]{16,}"
# Text shaped like a credential, whatever variable (if any) it came from.
_SHAPES = (
    re.compile(rf"\b((?:bearer|basic)\s+){_TOKEN}{{8,}}", re.IGNORECASE),
    re.compile(rf"\b(?:sk|pk|rk|gsk|xai|hf|ghp|gho|github_pat)[-_]{_KEYLIKE}"),
    re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"),  # Google API keys.
    re.compile(rf"((?:api[-_]?key|x-api-key|x-goog-api-key|access[-_]?token|secret|password|"
               rf"\bkey)[\"']?\s*[:=]\s*[\"']?){_KEYLIKE}", re.IGNORECASE),
)
_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
  """Redacts ``value`` from now on, whatever its name (e.g. the ``--llm_api_key_env`` key)."""
  if value and len(value) >= _MIN_SECRET_CHARS:
    with _lock:
      _registered.add(value)


def _secrets() -> list[str]:
  """Secret values of this process: registered ones and those of secret-named variables.

  Read on every call, so a key exported (or patched by a test) after import is covered.
  Longest first, so a key that contains another is removed whole.
  """
  found = {v for k, v in os.environ.items()
           if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_CHARS}
  with _lock:
    found |= _registered
  return sorted(found, key=len, reverse=True)


def redact(text: Any) -> str:
  """``text`` with every API key of the environment and every key-shaped token replaced.

  Values of environment variables named like secrets (``*KEY*``, ``*TOKEN*``, ``*SECRET*``,
  ...) and values given to :func:`register_secret` are removed wherever they appear;
  then anything shaped like a credential (``Bearer ...``, ``sk-...``, ``AIza...``,
  ``api_key=...``) is, so a key from another machine quoted in a provider's error goes too.
  """
  out = str(text)
  for secret in _secrets():
    if secret in out:
      out = out.replace(secret, REDACTED)
  for shape in _SHAPES:
    out = shape.sub(lambda m: (m.group(1) if m.groups() and m.group(1) else "") + REDACTED, out)
  return out


def one_line(text: Any, limit: int = MAX_CHARS) -> str:
  """``text`` as one printable-ASCII line of at most ``limit`` characters, secrets redacted.

  Whitespace runs (newlines included) become one space; anything outside printable ASCII
  becomes ``?``; a longer text is cut and ends in ``...``.
  """
  flat = _UNPRINTABLE.sub("?", " ".join(redact(text).split()))
  return flat if len(flat) <= limit else flat[:max(0, limit - 3)] + "..."


def error_line(error: BaseException, limit: int = MAX_CHARS) -> str:
  """An exception as one line: its message, or its type name when the message is empty."""
  return one_line(str(error) or type(error).__name__, limit)
