"""Rate limits: the wait a provider asks for, and the client's own request/token budget.

:func:`retry_after_s` reads how long a rate-limited (or overloaded) provider asked us to
wait, wherever LiteLLM put it: the exception's ``litellm_response_headers`` (every
provider: hosted_vllm, openrouter, deepseek, anthropic, gemini), the OpenAI SDK's
``response.headers`` (``openai/``), or plain ``headers``; in seconds, as an HTTP date,
or as ``retry-after-ms``; and Gemini's ``RetryInfo.retryDelay`` in the error body.

:class:`MinuteLimiter` keeps one client (all roles of a run) under ``--llm_rpm``
requests and ``--llm_tpm`` tokens per minute, by telling the caller how long to wait
before each request.
"""

from __future__ import annotations

import collections
import email.utils
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

WINDOW_S = 60.0
_GEMINI_DELAY = re.compile(r"retryDelay\W+(\d+(?:\.\d+)?)s", re.IGNORECASE)


def _header_maps(error: Exception) -> list[Mapping[str, str]]:
  maps = [getattr(error, "litellm_response_headers", None), getattr(error, "headers", None),
          getattr(getattr(error, "response", None), "headers", None)]
  return [m for m in maps if m]


def _get(headers: Mapping[str, str], name: str) -> str | None:
  value = headers.get(name)
  if value is None:  # A plain dict is case-sensitive; httpx.Headers is not.
    value = next((v for k, v in headers.items() if str(k).lower() == name), None)
  return None if value is None else str(value).strip()


def parse_retry_after(value: str, now: float | None = None) -> float | None:
  """Seconds of a ``Retry-After`` value: delta-seconds or an HTTP date (``None`` if neither)."""
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError, IndexError):
    return None
  if when is None:
    return None
  return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_s(error: Exception) -> float | None:
  """How long the provider asked to wait before the next request, if it said."""
  for headers in _header_maps(error):
    millis = _get(headers, "retry-after-ms")
    if millis:
      try:
        return max(0.0, float(millis) / 1000.0)
      except ValueError:
        pass
    value = _get(headers, "retry-after")
    if value:
      seconds = parse_retry_after(value)
      if seconds is not None:
        return seconds
  match = _GEMINI_DELAY.search(str(error))
  return float(match.group(1)) if match else None


class MinuteLimiter:
  """At most ``rpm`` requests and ``tpm`` tokens in any 60 s window (0 = no limit).

  :meth:`reserve` books the next request and returns how long to wait before sending
  it; the booking is made at the time the request may go, so requests made from
  several threads are spaced out as one stream. A request larger than ``tpm`` alone
  waits for an empty window and then goes.
  """

  def __init__(self, rpm: int = 0, tpm: int = 0, clock: Any = time.monotonic):
    self.rpm = int(rpm)
    self.tpm = int(tpm)
    self._clock = clock
    self._lock = threading.Lock()
    self._sent: collections.deque[tuple[float, int]] = collections.deque()

  @property
  def active(self) -> bool:
    return self.rpm > 0 or self.tpm > 0

  def reserve(self, tokens: int) -> float:
    """Books a request of ``tokens`` tokens; returns the seconds to wait before sending it."""
    if not self.active:
      return 0.0
    with self._lock:
      now = self._clock()
      while self._sent and self._sent[0][0] <= now - WINDOW_S:
        self._sent.popleft()
      start = now
      booked = list(self._sent)
      while True:
        inside = [(t, n) for t, n in booked if t > start - WINDOW_S]
        over_requests = self.rpm and len(inside) >= self.rpm
        used = sum(n for _, n in inside)
        over_tokens = self.tpm and inside and used + tokens > self.tpm
        if not (over_requests or over_tokens):
          break
        start = inside[0][0] + WINDOW_S  # When the oldest booking leaves the window.
      self._sent.append((start, int(tokens)))
      return max(0.0, start - now)


__all__ = ["MinuteLimiter", "WINDOW_S", "parse_retry_after", "retry_after_s"]
