"""One LLM call, made once: a LiteLLM client with retries, a per-call record and a reply cache.

Every LLM request of a search goes through :class:`LLMClient`. It resolves the model
(``None`` means the built-in rule-based ``spark/offline`` provider), sends the request
through LiteLLM, retries rate limits, server errors, timeouts and dropped connections
with exponential backoff, and returns an :class:`LLMRecord` with what was asked, what
came back, tokens, cost, latency and any error (it never raises for a failed call).

The :class:`ReplyCache` is keyed by the full request (model, api_base, messages,
temperature, max_tokens and a sample index), so re-running a finished run, resuming a
crashed one, or replaying a recorded run offline sends no request twice. The sample
index counts identical requests within one client, so a search that asks the same
question twice still gets two independent answers, and a re-run gets the same two back.

API keys are never taken as arguments, logged or stored: LiteLLM reads them from the
provider's usual environment variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import random
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

# LiteLLM otherwise tries to download its price table on import (no network here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

litellm.suppress_debug_info = True
for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):  # Per-call INFO lines are noise here.
  logging.getLogger(_name).setLevel(logging.WARNING)
log = logging.getLogger(__name__)

OFFLINE_MODEL = "spark/offline"
Message = Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class LLMConfig:
  """How to reach the LLM (SPEC §7); filled from the ``--llm_*`` flags.

  Attributes:
    model: a LiteLLM model name such as ``openai/gpt-4o-mini`` or
      ``ollama/qwen2.5-coder``; ``None`` or ``""`` selects ``spark/offline``.
    api_base: endpoint URL for self-hosted or proxy servers (vLLM, Ollama, ...).
    temperature: sampling temperature.
    timeout: seconds before one request is abandoned (and retried).
    retries: extra attempts after a rate limit, 5xx, timeout or connection error.
    max_tokens: reply length cap, ``None`` for the provider's default.
    backoff_s: first backoff; attempt k waits ``backoff_s * 2**k`` (plus jitter).
    backoff_max_s: upper bound of one backoff wait.
    seed: seeds the offline provider (real LLMs are not sent a seed).
  """

  model: str | None = None
  api_base: str | None = None
  temperature: float = 0.7
  timeout: float = 300.0
  retries: int = 3
  max_tokens: int | None = None
  backoff_s: float = 2.0
  backoff_max_s: float = 60.0
  seed: int = 0

  @property
  def resolved_model(self) -> str:
    return self.model or OFFLINE_MODEL

  @property
  def is_offline(self) -> bool:
    return self.resolved_model == OFFLINE_MODEL


@dataclasses.dataclass
class LLMRecord:
  """One LLM call as it is persisted (SPEC §1: role, model, prompt, reply, tokens, cost, latency).

  Attributes:
    role: who asked, e.g. ``router``, ``refiner``, ``rewriter``.
    model: the resolved LiteLLM model name.
    messages: the chat messages sent.
    reply: the reply text, ``None`` when the call failed.
    prompt_tokens: tokens in the prompt as the provider counted them.
    completion_tokens: tokens in the reply.
    cost: USD cost when LiteLLM knows the model's price, else ``None``.
    latency_s: wall seconds of the successful attempt (of the original call when cached).
    error: one line naming the failure, ``None`` on success.
    cached: the reply came from the reply cache (nothing was sent).
    request_key: the cache key of the request.
    attempts: requests actually sent (0 when cached).
    finish_reason: the provider's finish reason (``length`` means truncated).
    sample: index of this request among identical requests of the same client.
  """

  role: str
  model: str
  messages: list[dict[str, str]]
  reply: str | None
  prompt_tokens: int | None = None
  completion_tokens: int | None = None
  cost: float | None = None
  latency_s: float | None = None
  error: str | None = None
  cached: bool = False
  request_key: str = ""
  attempts: int = 0
  finish_reason: str | None = None
  sample: int = 0

  @property
  def ok(self) -> bool:
    return self.error is None and self.reply is not None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def request_key(model: str, api_base: str | None, messages: Sequence[Message],
                temperature: float, max_tokens: int | None, sample: int,
                seed: int | None = None) -> str:
  """SHA-256 of the canonical JSON of everything that determines a reply.

  ``seed`` is part of the key only for the offline provider, whose replies it decides.
  """
  payload = {
      "model": model, "api_base": api_base or None,
      "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
      "temperature": float(temperature), "max_tokens": max_tokens, "sample": int(sample),
  }
  if seed is not None:
    payload["seed"] = int(seed)
  blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
  """Successful replies keyed by :func:`request_key`, in a SQLite file (WAL).

  Safe to share between processes; a missing file is created. Failed calls are never
  cached, so they are retried by the next run.
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
    if row is None:
      return None
    return {"reply": row[0], **json.loads(row[1])}

  def put(self, key: str, model: str, messages: Sequence[Message], reply: str,
          meta: Mapping[str, Any]) -> None:
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


# Errors worth another attempt: rate limits, server-side failures, timeouts, lost connections.
_RETRYABLE = (litellm.RateLimitError, litellm.InternalServerError, litellm.ServiceUnavailableError,
              litellm.Timeout, litellm.APIConnectionError, litellm.BadGatewayError)


def _is_retryable(error: Exception) -> bool:
  if isinstance(error, _RETRYABLE):
    return True
  status = getattr(error, "status_code", None)
  return isinstance(status, int) and (status == 429 or status >= 500)


def _retry_after_s(error: Exception) -> float | None:
  response = getattr(error, "response", None)
  headers = getattr(response, "headers", None)
  if not headers:
    return None
  try:
    return float(headers.get("retry-after"))
  except (TypeError, ValueError):
    return None


_HINTS = (
    (litellm.AuthenticationError, "check the provider's API key environment variable"),
    (litellm.NotFoundError, "check --llm_model and --llm_api_base"),
    (litellm.Timeout, "raise --llm_timeout or use a faster model"),
    (litellm.RateLimitError, "raise --llm_retries or lower the request rate"),
    (litellm.ContextWindowExceededError, "use a model with a longer context"),
    (litellm.BadRequestError, "check the model name and its supported parameters"),
)


def _one_line(error: Exception) -> str:
  """The error as one line, ending with a hint at the fix where one is known."""
  text = " ".join(str(error).split())[:300]
  hint = next((h for cls, h in _HINTS if isinstance(error, cls)), None)
  return f"{type(error).__name__}: {text}" + (f" ({hint})" if hint else "")


class LLMClient:
  """Sends chat requests through LiteLLM with retries, backoff and a reply cache.

  Args:
    config: model and transport settings.
    cache: reply cache; ``None`` disables caching.
    sleep: the backoff sleep (tests pass a recorder).
  """

  def __init__(self, config: LLMConfig, cache: ReplyCache | None = None,
               sleep: Any = time.sleep):
    self.config = config
    self.cache = cache
    self._sleep = sleep
    self._samples: collections.Counter[str] = collections.Counter()
    self._lock = threading.Lock()
    self._jitter = random.Random(config.seed)
    if config.is_offline:
      from spark_clrs import offline  # Registers the provider with LiteLLM.
      offline.register()
      log.warning("No --llm_model configured: using the built-in offline proposer %s, a "
                  "rule-based mutation operator over a catalogue of factor-local moves (not an "
                  "LLM).", OFFLINE_MODEL)

  @property
  def model(self) -> str:
    return self.config.resolved_model

  def _next_sample(self, base_key: str) -> int:
    with self._lock:
      sample = self._samples[base_key]
      self._samples[base_key] += 1
    return sample

  def _missing_key(self) -> str | None:
    """Names the provider key env var when it is unset and no local ``api_base`` is given."""
    if self.config.is_offline or self.config.api_base:
      return None
    try:
      missing = litellm.validate_environment(self.model).get("missing_keys") or []
    except Exception:  # Unknown provider: let the call itself report it.
      return None
    keys = [k for k in missing if k.endswith("_API_KEY")]
    return keys[0] if keys and len(keys) == len(missing) else None

  def _request_kwargs(self, messages: Sequence[Message], sample: int) -> dict[str, Any]:
    cfg = self.config
    kwargs: dict[str, Any] = {
        "model": self.model,
        "messages": [dict(m) for m in messages],
        "temperature": cfg.temperature,
        "timeout": cfg.timeout,
        "num_retries": 0,   # Retries are ours (counted, backed off, recorded).
        "max_retries": 0,   # Also disables the OpenAI SDK's hidden retries.
    }
    if cfg.max_tokens is not None:
      kwargs["max_tokens"] = cfg.max_tokens
    if cfg.api_base:
      kwargs["api_base"] = cfg.api_base
      if litellm.validate_environment(self.model).get("missing_keys"):
        # A keyless local server (vLLM, Ollama, llama.cpp): the SDK insists on some key.
        kwargs["api_key"] = "no-key-required"
    if cfg.is_offline:
      kwargs["seed"] = cfg.seed * 1_000_003 + sample
    return kwargs

  def complete(self, role: str, messages: Sequence[Message]) -> LLMRecord:
    """Sends one chat request (or answers it from the cache) and records it."""
    cfg = self.config
    seed = cfg.seed if cfg.is_offline else None
    base_key = request_key(self.model, cfg.api_base, messages, cfg.temperature, cfg.max_tokens, 0,
                           seed)
    sample = self._next_sample(base_key)
    key = base_key if sample == 0 else request_key(
        self.model, cfg.api_base, messages, cfg.temperature, cfg.max_tokens, sample, seed)
    record = LLMRecord(role=role, model=self.model, messages=[dict(m) for m in messages],
                       reply=None, request_key=key, sample=sample)
    if self.cache is not None:
      hit = self.cache.get(key)
      if hit is not None:
        record.reply = hit["reply"]
        record.prompt_tokens = hit.get("prompt_tokens")
        record.completion_tokens = hit.get("completion_tokens")
        record.cost = hit.get("cost")
        record.latency_s = hit.get("latency_s")
        record.finish_reason = hit.get("finish_reason")
        record.cached = True
        return record
    missing = self._missing_key()
    if missing:
      record.error = (f"{missing} is not set: export it for {self.model}, or pass "
                      "--llm_api_base for a keyless local server")
      log.error("LLM %s call not sent: %s", role, record.error)
      return record
    kwargs = self._request_kwargs(messages, sample)
    for attempt in range(cfg.retries + 1):
      record.attempts = attempt + 1
      start = time.monotonic()
      retryable = True
      try:
        response = litellm.completion(**kwargs)
      except Exception as e:  # LiteLLM maps provider errors onto its own exception types.
        record.error, retryable, retry_after = _one_line(e), _is_retryable(e), _retry_after_s(e)
      else:
        record.latency_s = time.monotonic() - start
        self._fill_from_response(record, response)
        if record.reply is not None:
          record.error = None
          self._store(key, messages, record)
          return record
        record.error, retry_after = "the reply has no message content (malformed response)", None
      if not retryable or attempt == cfg.retries:
        log.error("LLM %s call failed after %d attempt(s): %s", role, attempt + 1, record.error)
        return record
      wait = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** attempt) * (
          1.0 + 0.1 * self._jitter.random())
      wait = max(wait, min(retry_after or 0.0, cfg.backoff_max_s))
      log.warning("LLM %s call attempt %d failed (%s); retrying in %.1fs", role, attempt + 1,
                  record.error, wait)
      self._sleep(wait)
    return record

  def _store(self, key: str, messages: Sequence[Message], record: LLMRecord) -> None:
    if self.cache is not None and record.reply is not None:
      self.cache.put(key, self.model, messages, record.reply, {
          "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
          "cost": record.cost, "latency_s": record.latency_s,
          "finish_reason": record.finish_reason, "role": record.role, "sample": record.sample})

  @staticmethod
  def _fill_from_response(record: LLMRecord, response: Any) -> None:
    try:
      choice = response.choices[0]
      record.reply = choice.message.content
      record.finish_reason = getattr(choice, "finish_reason", None)
    except (AttributeError, IndexError, TypeError):
      record.reply = None
    usage = getattr(response, "usage", None)
    if usage is not None:
      record.prompt_tokens = getattr(usage, "prompt_tokens", None)
      record.completion_tokens = getattr(usage, "completion_tokens", None)
    try:
      cost = litellm.completion_cost(completion_response=response)
      record.cost = float(cost) if cost is not None else None
    except Exception:  # Unpriced model (local servers, the offline provider).
      record.cost = None


__all__ = ["LLMClient", "LLMConfig", "LLMRecord", "OFFLINE_MODEL", "ReplyCache", "request_key"]
