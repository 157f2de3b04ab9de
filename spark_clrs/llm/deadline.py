"""A deadline for a whole request, however slowly the server sends.

LiteLLM's ``timeout`` becomes httpx's, which bounds each *read*: a server that sends a
byte a second (DeepSeek keeps a slow non-streaming request alive with blank lines) never
trips it, and a run waits forever. :func:`call` makes ``--llm_timeout`` a deadline:

* the request runs in a worker thread, and the caller stops waiting at the deadline
  (plus :data:`GRACE_S` for httpx to report its own timeout first) with a
  ``litellm.Timeout``;
* the worker's response bodies are read through a stream that checks the same deadline
  between chunks, so an abandoned request ends at the next chunk instead of reading a
  trickle to its end. This wraps ``httpx.HTTPTransport.handle_request``, which every
  synchronous LiteLLM provider path reaches (the OpenAI SDK's client and LiteLLM's own
  HTTP handler alike) whatever transport options (proxies, certificates) they chose;
  the deadline is per thread, so requests made by anyone else are untouched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from spark_clrs.llm.backend import litellm, provider_of

GRACE_S = 0.5
_local = threading.local()
_install_lock = threading.Lock()


class _DeadlineStream(httpx.SyncByteStream):
  """A response body that raises ``httpx.ReadTimeout`` once the deadline has passed."""

  def __init__(self, stream: httpx.SyncByteStream, deadline: float):
    self._stream = stream
    self._deadline = deadline

  def __iter__(self) -> Iterator[bytes]:
    for chunk in self._stream:
      if time.monotonic() > self._deadline:
        raise httpx.ReadTimeout("the request's deadline passed while the body was arriving")
      yield chunk

  def close(self) -> None:
    self._stream.close()


def _install() -> None:
  """Wraps ``HTTPTransport.handle_request`` once (idempotent)."""
  with _install_lock:
    original = httpx.HTTPTransport.handle_request
    if getattr(original, "_spark_deadline", False):
      return

    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
      deadline = getattr(_local, "deadline", None)
      if deadline is not None and time.monotonic() > deadline:
        raise httpx.ReadTimeout("the request's deadline passed before it was sent",
                                request=request)
      response = original(self, request)
      if deadline is not None:
        response.stream = _DeadlineStream(response.stream, deadline)  # type: ignore[arg-type]
      return response

    handle_request._spark_deadline = True  # type: ignore[attr-defined]
    httpx.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign]


def call(fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float) -> Any:
  """``fn(**kwargs)``, or ``litellm.Timeout`` once ``timeout`` seconds have passed.

  Exceptions of ``fn`` are raised as they are. A request abandoned at the deadline ends
  in its own thread at its next chunk (or its read timeout).
  """
  _install()
  deadline = time.monotonic() + timeout
  outcome: dict[str, Any] = {}
  done = threading.Event()

  def run() -> None:
    _local.deadline = deadline
    try:
      outcome["value"] = fn(**kwargs)
    except BaseException as e:  # noqa: BLE001 - handed to the caller as it is.
      outcome["error"] = e
    finally:
      _local.deadline = None
      done.set()

  threading.Thread(target=run, name="llm-request", daemon=True).start()
  if not done.wait(timeout + GRACE_S):
    model = str(kwargs.get("model", ""))
    raise litellm.Timeout(message=f"no complete reply within the {timeout:g} s deadline",
                          model=model, llm_provider=provider_of(model))
  if "error" in outcome:
    raise outcome["error"]
  return outcome["value"]


__all__ = ["GRACE_S", "call"]
