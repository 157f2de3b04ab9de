"""A scripted chat server on 127.0.0.1 for tests, in three providers' wire formats (no key).

Tests start it in a thread, point LiteLLM at it with ``api_base=server.api_base`` and a
model of the provider they imitate, and script what each request gets: a reply, a
malformed body, an HTTP error such as 429 (with the provider's own error body and
headers), a delay longer than the client's timeout, or a body trickled a byte at a time.

It speaks OpenAI's ``.../chat/completions`` (``openai/``, ``hosted_vllm/``, ``openrouter/``,
``deepseek/``), Anthropic's ``/v1/messages`` (``anthropic/``) and Gemini's
``.../models/<model>:generateContent`` (``gemini/``). Whatever the format, a scripted
responder sees the request as ``{"model", "messages", "max_tokens", ["temperature"]}``
with string contents (Anthropic's and Gemini's requests are translated), plus the raw
body under ``"raw"`` for those two. The server records every request, its headers and
the time it arrived, so a test can prove that a cached run sent none, that a key was (or
was not) sent, or how long the client waited between two requests.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

_GEMINI = re.compile(r"/models/([^/:]+):generateContent$")


@dataclasses.dataclass(frozen=True)
class Reply:
  """A well-formed completion whose message content is ``content`` (``None`` = no content)."""

  content: str | None
  finish_reason: str = "stop"  # In the provider's own words (end_turn, MAX_TOKENS, ...).
  prompt_tokens: int | None = None
  completion_tokens: int | None = None
  reasoning_content: str | None = None  # Sent as the message's ``reasoning_content`` field.
  choice: tuple[tuple[str, Any], ...] = ()  # Extra fields of the OpenAI choice (``error``).


@dataclasses.dataclass(frozen=True)
class Status:
  """An HTTP error status with the provider's error body (``body`` replaces it when given)."""

  code: int
  message: str = "scripted error"
  headers: tuple[tuple[str, str], ...] = ()
  body: str | None = None


@dataclasses.dataclass(frozen=True)
class Raw:
  """A 200 response whose body is ``body`` verbatim (e.g. broken JSON)."""

  body: str


@dataclasses.dataclass(frozen=True)
class Delay:
  """Waits ``seconds`` (longer than the client timeout) and then sends ``then``."""

  seconds: float
  then: Reply | Status | Raw = Reply("late")


@dataclasses.dataclass(frozen=True)
class Trickle:
  """Sends 200 headers, then a blank line every ``interval`` seconds (DeepSeek's keep-alive).

  It never sends a body: only the client's deadline (or the server closing) ends it.
  """

  interval: float = 0.2


Action = Reply | Status | Raw | Delay | Trickle
Responder = Callable[[dict[str, Any]], Action]


def _text(content: Any) -> str:
  if isinstance(content, list):
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
  return str(content or "")


def _tokens(request: dict[str, Any], reply: Reply) -> tuple[int, int]:
  prompt_chars = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
  prompt = reply.prompt_tokens if reply.prompt_tokens is not None else max(1, prompt_chars // 4)
  completion = (reply.completion_tokens if reply.completion_tokens is not None
                else max(1, len(reply.content or "") // 4))
  return prompt, completion


class _OpenAI:
  """OpenAI's chat-completions format (and what OpenRouter, DeepSeek and vLLM send)."""

  @staticmethod
  def request(body: dict[str, Any]) -> dict[str, Any]:
    return body

  @staticmethod
  def reply(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    prompt, completion = _tokens(request, reply)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning_content is not None:
      message["reasoning_content"] = reply.reasoning_content
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model", "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason,
                         **dict(reply.choice)}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}

  @staticmethod
  def error(status: Status) -> dict[str, Any]:
    return {"error": {"message": status.message, "type": "scripted", "code": status.code}}


class _Anthropic:
  """Anthropic's messages format."""

  TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
           403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
           529: "overloaded_error"}

  @staticmethod
  def request(body: dict[str, Any]) -> dict[str, Any]:
    messages = [{"role": "system", "content": _text(body["system"])}] if body.get("system") else []
    messages += [{"role": m["role"], "content": _text(m["content"])} for m in body["messages"]]
    out = {"model": body.get("model"), "messages": messages, "max_tokens": body.get("max_tokens"),
           "raw": body}
    if "temperature" in body:
      out["temperature"] = body["temperature"]
    return out

  @staticmethod
  def reply(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    prompt, completion = _tokens(request, reply)
    content = [] if reply.content is None else [{"type": "text", "text": reply.content}]
    return {"id": "msg_scripted", "type": "message", "role": "assistant", "content": content,
            "model": request.get("model"), "stop_reason": reply.finish_reason,
            "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": completion}}

  @classmethod
  def error(cls, status: Status) -> dict[str, Any]:
    return {"type": "error", "error": {"type": cls.TYPES.get(status.code, "api_error"),
                                       "message": status.message}}


class _Gemini:
  """Gemini's generateContent format."""

  STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
            429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}

  @staticmethod
  def request(body: dict[str, Any]) -> dict[str, Any]:
    messages = []
    system = body.get("system_instruction") or body.get("systemInstruction")
    if system:
      messages.append({"role": "system", "content": _text(system.get("parts"))})
    for item in body.get("contents", []):
      role = "assistant" if item.get("role") == "model" else "user"
      messages.append({"role": role, "content": _text(item.get("parts"))})
    config = body.get("generationConfig") or {}
    out = {"model": None, "messages": messages, "raw": body,
           "max_tokens": config.get("max_output_tokens", config.get("maxOutputTokens"))}
    if "temperature" in config:
      out["temperature"] = config["temperature"]
    return out

  @staticmethod
  def reply(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    prompt, completion = _tokens(request, reply)
    parts = [] if reply.content is None else [{"text": reply.content}]
    return {"candidates": [{"content": {"parts": parts, "role": "model"},
                            "finishReason": reply.finish_reason, "index": 0}],
            "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": completion,
                              "totalTokenCount": prompt + completion},
            "modelVersion": request.get("model")}

  @classmethod
  def error(cls, status: Status) -> dict[str, Any]:
    return {"error": {"code": status.code, "message": status.message,
                      "status": cls.STATUS.get(status.code, "UNKNOWN")}}


class ScriptedServer:
  """A chat server serving scripted actions (OpenAI, Anthropic and Gemini formats).

  Use as a context manager. Actions come from ``script`` in order (one per request);
  when it is exhausted, or when no script is given, ``responder(request)`` decides.
  """

  def __init__(self, script: Iterable[Action] = (), responder: Responder | None = None):
    self._script = list(script)
    self._responder = responder
    self._lock = threading.Lock()
    self._closing = threading.Event()
    self.requests: list[dict[str, Any]] = []
    self.headers: list[dict[str, str]] = []  # Request headers, lower-case names.
    self.times: list[float] = []  # time.monotonic() at each request's arrival.
    self.paths: list[str] = []
    self._httpd: http.server.ThreadingHTTPServer | None = None
    self._thread: threading.Thread | None = None

  @property
  def hits(self) -> int:
    """Number of chat requests received so far."""
    with self._lock:
      return len(self.requests)

  @property
  def url(self) -> str:
    """``http://127.0.0.1:PORT`` (the root; add the path a provider expects)."""
    assert self._httpd is not None, "start the server first"
    host, port = self._httpd.server_address[:2]
    return f"http://{host}:{port}"

  @property
  def api_base(self) -> str:
    return f"{self.url}/v1"

  def add(self, *actions: Action) -> None:
    """Appends actions to the script."""
    with self._lock:
      self._script.extend(actions)

  def _next_action(self, request: dict[str, Any], headers: dict[str, str], path: str) -> Action:
    with self._lock:
      self.requests.append(request)
      self.headers.append(headers)
      self.times.append(time.monotonic())
      self.paths.append(path)
      if self._script:
        return self._script.pop(0)
    if self._responder is None:
      return Status(500, "script exhausted: the test sent more requests than it scripted")
    return self._responder(request)

  def _make_handler(self) -> type[http.server.BaseHTTPRequestHandler]:
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      """Answers POST requests of the three formats from the script."""

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

      def _trickle(self, interval: float) -> None:
        try:
          self.send_response(200)
          self.send_header("Content-Type", "application/json")
          self.send_header("Connection", "close")
          self.end_headers()
          while not server._closing.wait(interval):
            self.wfile.write(b"\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
          pass
        self.close_connection = True

      def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        raw = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.split("?", 1)[0].rstrip("/")
        gemini = _GEMINI.search(path)
        if path.endswith("chat/completions"):
          wire: Any = _OpenAI
        elif path.endswith("/v1/messages") and not path.endswith("/v1/v1/messages"):
          wire = _Anthropic
        elif gemini:
          wire = _Gemini
        else:
          self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
          return
        request = wire.request(raw)
        if gemini:
          request["model"] = gemini.group(1)
        headers = {k.lower(): v for k, v in self.headers.items()}
        action = server._next_action(request, headers, self.path)
        if isinstance(action, Delay):
          if server._closing.wait(action.seconds):
            return
          action = action.then
        if isinstance(action, Trickle):
          self._trickle(action.interval)
        elif isinstance(action, Reply):
          self._send(200, json.dumps(wire.reply(request, action)))
        elif isinstance(action, Raw):
          self._send(200, action.body)
        else:
          body = action.body if action.body is not None else json.dumps(wire.error(action))
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
