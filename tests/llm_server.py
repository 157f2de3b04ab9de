"""A scripted OpenAI-compatible chat server on 127.0.0.1 for tests (no key, no network).

Tests start it in a thread, point LiteLLM at it with ``model="openai/<name>"`` and
``api_base=server.api_base``, and script what each request gets: a reply, a malformed
body, an HTTP error such as 429, or a delay longer than the client's timeout. The
server counts every request it receives, so a test can prove that a cached run sent
none.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Reply:
  """A well-formed chat completion whose message content is ``content``."""

  content: str
  finish_reason: str = "stop"
  prompt_tokens: int | None = None
  completion_tokens: int | None = None
  reasoning_content: str | None = None  # Sent as the message's ``reasoning_content`` field.


@dataclasses.dataclass(frozen=True)
class Status:
  """An HTTP error status (e.g. 429 or 503) with an OpenAI-style error body."""

  code: int
  message: str = "scripted error"
  headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Raw:
  """A 200 response whose body is ``body`` verbatim (e.g. broken JSON)."""

  body: str


@dataclasses.dataclass(frozen=True)
class Delay:
  """Waits ``seconds`` (longer than the client timeout) and then sends ``then``."""

  seconds: float
  then: Reply | Status | Raw = Reply("late")


Action = Reply | Status | Raw | Delay
Responder = Callable[[dict[str, Any]], Action]


def _completion_body(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
  prompt_chars = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
  prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else max(1, prompt_chars // 4)
  completion_tokens = (reply.completion_tokens if reply.completion_tokens is not None
                       else max(1, len(reply.content) // 4))
  message: dict[str, Any] = {"role": "assistant", "content": reply.content}
  if reply.reasoning_content is not None:
    message["reasoning_content"] = reply.reasoning_content
  return {
      "id": "chatcmpl-scripted",
      "object": "chat.completion",
      "created": int(time.time()),
      "model": request.get("model", "scripted"),
      "choices": [{
          "index": 0,
          "message": message,
          "finish_reason": reply.finish_reason,
      }],
      "usage": {
          "prompt_tokens": prompt_tokens,
          "completion_tokens": completion_tokens,
          "total_tokens": prompt_tokens + completion_tokens,
      },
  }


class ScriptedServer:
  """OpenAI-compatible ``/v1/chat/completions`` server serving scripted actions.

  Use as a context manager. Actions come from ``script`` in order (one per request);
  when it is exhausted, or when no script is given, ``responder(request_json)`` decides.
  """

  def __init__(self, script: Iterable[Action] = (), responder: Responder | None = None):
    self._script = list(script)
    self._responder = responder
    self._lock = threading.Lock()
    self._closing = threading.Event()
    self.requests: list[dict[str, Any]] = []
    self._httpd: http.server.ThreadingHTTPServer | None = None
    self._thread: threading.Thread | None = None

  @property
  def hits(self) -> int:
    """Number of chat-completion requests received so far."""
    with self._lock:
      return len(self.requests)

  @property
  def api_base(self) -> str:
    assert self._httpd is not None, "start the server first"
    host, port = self._httpd.server_address[:2]
    return f"http://{host}:{port}/v1"

  def add(self, *actions: Action) -> None:
    """Appends actions to the script."""
    with self._lock:
      self._script.extend(actions)

  def _next_action(self, request: dict[str, Any]) -> Action:
    with self._lock:
      self.requests.append(request)
      if self._script:
        return self._script.pop(0)
    if self._responder is None:
      return Status(500, "script exhausted: the test sent more requests than it scripted")
    return self._responder(request)

  def _make_handler(self) -> type[http.server.BaseHTTPRequestHandler]:
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      """Answers POST .../chat/completions from the script."""

      protocol_version = "HTTP/1.1"

      def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        del format, args  # Keep test output quiet.

      def _send(self, code: int, body: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        data = body.encode()
        try:
          self.send_response(code)
          self.send_header("Content-Type", "application/json")
          self.send_header("Content-Length", str(len(data)))
          for key, value in headers:
            self.send_header(key, value)
          self.end_headers()
          self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
          pass  # The client gave up (timeout); nothing to deliver.

      def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("chat/completions"):
          self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
          return
        request = json.loads(raw or b"{}")
        action = server._next_action(request)
        if isinstance(action, Delay):
          if server._closing.wait(action.seconds):
            return
          action = action.then
        if isinstance(action, Reply):
          self._send(200, json.dumps(_completion_body(request, action)))
        elif isinstance(action, Raw):
          self._send(200, action.body)
        else:
          body = json.dumps({"error": {"message": action.message, "type": "scripted",
                                       "code": action.code}})
          self._send(action.code, body, action.headers)

    return Handler

  def __enter__(self) -> ScriptedServer:
    self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
    self._httpd.daemon_threads = True
    self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc: Any) -> None:
    self._closing.set()
    assert self._httpd is not None and self._thread is not None
    self._httpd.shutdown()
    self._httpd.server_close()
    self._thread.join(timeout=5)
