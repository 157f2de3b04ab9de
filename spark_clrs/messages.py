"""Text shown to people, the LLM or the archive: one printable line, bounded.

Every reason, error and stop line goes through :func:`one_line`, because such text may
embed what candidate code or a provider controls (an exception message, an HTTP body),
and it is written to the archive, the logs and the console.
"""

from __future__ import annotations

import re
from typing import Any

MAX_CHARS = 400  # A whole reason or error line.
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def one_line(text: Any, limit: int = MAX_CHARS) -> str:
  """``text`` as one printable-ASCII line of at most ``limit`` characters.

  Whitespace runs (newlines included) become one space; anything outside printable ASCII
  becomes ``?``; a longer text is cut and ends in ``...``.
  """
  flat = _UNPRINTABLE.sub("?", " ".join(str(text).split()))
  return flat if len(flat) <= limit else flat[:max(0, limit - 3)] + "..."


def error_line(error: BaseException, limit: int = MAX_CHARS) -> str:
  """An exception as one line: its message, or its type name when the message is empty."""
  return one_line(str(error) or type(error).__name__, limit)
