"""One LLM call, made once: a LiteLLM client with retries, a per-call record and a reply cache.

Every LLM request of a search goes through :class:`LLMClient`. It picks the model of the
call's role (``--router_model`` / ``--refiner_model`` / ``--rewriter_model``, a weighted
``--llm_models`` mixture drawn with a generator seeded by the run's seed and the request,
or ``--llm_model``; none means the built-in rule-based ``spark/offline`` provider), sends
the request through LiteLLM and returns an :class:`LLMRecord` with what was asked, what
came back, tokens, cost, latency, finish reason and attempts.

Two kinds of failure are kept apart, because they mean different things to a search:

* the *provider* failed (connection refused, bad key, unknown model, rate limit or 5xx
  that outlast the retries, timeouts): :class:`ProviderError` is raised. The model never
  answered, so this is not a proposal; the controller stops the run with the one-line
  cause once it is permanent (401/403, 404, missing key) or has happened
  ``max_consecutive_failures`` times in a row, and a re-run asks again;
* the *model* answered badly (or the request itself was bad, e.g. too long): the call
  returns a failed record and the proposal is rejected with its reason.

Replies are made whole before anyone parses them: a reply cut by the length limit is
continued (the partial reply is sent back as the assistant turn with a request to go on)
up to ``max_continuations`` times, and reasoning text is removed in every form (paired
``<think>``/``<thinking>``/``<reasoning>`` blocks, a lone closing tag whose opening tag sat
in the chat template, LiteLLM's ``reasoning_content``). A model that refuses the
``temperature`` parameter is asked again without it, said once in the log, and remembered.

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
import re
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

# LiteLLM otherwise tries to download its price table on import (no network here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

from spark_clrs.config import parse_model_spec  # noqa: E402
from spark_clrs.llm import prompts  # noqa: E402

litellm.suppress_debug_info = True
for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):  # Per-call INFO lines are noise here.
  logging.getLogger(_name).setLevel(logging.WARNING)
log = logging.getLogger(__name__)

OFFLINE_MODEL = "spark/offline"
# Fits a whole seed program (~8 KB, ~2.5k tokens) three times over, plus prose.
DEFAULT_MAX_TOKENS = 8192
ROLE_FLAGS = {"router": "router_model", "refiner": "refiner_model", "rewriter": "rewriter_model"}
# Provider failures: the model never answered. Transient ones are retried with backoff.
PROVIDER_FAILURES = ("auth", "not_found", "connection", "rate_limit", "server", "timeout")
TRANSIENT = ("connection", "rate_limit", "server", "timeout")
CONTINUE_TEMPLATE = "llm/continue"  # prompts/llm/continue.md: the continuation request.
Message = Mapping[str, str]


def model_role(role: str) -> str:
  """The model flag a call's role uses: ``router``, ``refiner``, else ``rewriter``.

  Every role that writes code (SPARK's rewriter and the free-form strategies' roles such
  as ``crossover`` or EoH's ``e1``) uses the rewriter's model.
  """
  return role if role in ("router", "refiner") else "rewriter"


@dataclasses.dataclass(frozen=True)
class LLMConfig:
  """How to reach the LLM (SPEC §7); filled from the ``--llm_*`` flags.

  Attributes:
    model: a LiteLLM model name such as ``openai/gpt-4o-mini`` or
      ``ollama/qwen2.5-coder``; ``None`` or ``""`` selects ``spark/offline``.
    api_base: endpoint URL for self-hosted or proxy servers (vLLM, Ollama, ...).
    temperature: sampling temperature (dropped for models that refuse it).
    timeout: seconds before one request is abandoned (and retried).
    retries: extra attempts after a rate limit, 5xx, timeout or connection error.
    max_tokens: reply length cap per request, ``None`` for the provider's default.
    backoff_s: first backoff; attempt k waits ``backoff_s * 2**k`` (plus jitter).
    backoff_max_s: upper bound of one backoff wait.
    seed: seeds the offline provider and the mixture draws (real LLMs get no seed).
    models: a ``--llm_models`` mixture (``a:0.7,b:0.3``) for every role without its own.
    role_models: ``(role, spec)`` pairs for ``router``, ``refiner``, ``rewriter``; a spec
      is one model or a weighted mixture.
    max_input_tokens: the input window when LiteLLM does not know the model (local
      servers), or to use less of it; ``None`` = LiteLLM's model info.
    max_consecutive_failures: calls in a row ending in a provider failure before the
      failure is final (the run stops).
    max_continuations: requests to continue a reply cut by the length limit.
    price_per_mtok: ``(input, output)`` USD per million tokens for models LiteLLM has
      no price for.
  """

  model: str | None = None
  api_base: str | None = None
  temperature: float = 0.7
  timeout: float = 300.0
  retries: int = 3
  max_tokens: int | None = DEFAULT_MAX_TOKENS
  backoff_s: float = 2.0
  backoff_max_s: float = 60.0
  seed: int = 0
  models: str = ""
  role_models: tuple[tuple[str, str], ...] = ()
  max_input_tokens: int | None = None
  max_consecutive_failures: int = 3
  max_continuations: int = 2
  price_per_mtok: tuple[float, float] | None = None

  @property
  def resolved_model(self) -> str:
    return self.model or OFFLINE_MODEL

  @property
  def is_offline(self) -> bool:
    return self.resolved_model == OFFLINE_MODEL

  def models_for(self, role: str) -> tuple[tuple[str, float], ...]:
    """``(model, weight)`` pairs the role draws from (one pair when there is no mixture)."""
    spec = dict(self.role_models).get(model_role(role)) or self.models or self.model or ""
    return parse_model_spec(spec) or ((OFFLINE_MODEL, 1.0),)

  def all_models(self) -> list[str]:
    """Every model some role may use, in first-use order."""
    names = [m for role in ROLE_FLAGS for m, _ in self.models_for(role)]
    return list(dict.fromkeys(names))


@dataclasses.dataclass
class LLMRecord:
  """One LLM call as it is persisted (SPEC §1: role, model, prompt, reply, tokens, cost, latency).

  Attributes:
    role: who asked, e.g. ``router``, ``refiner``, ``rewriter``.
    model: the resolved LiteLLM model name (the one drawn, for a mixture).
    messages: the chat messages sent.
    reply: the reply text without reasoning, ``None`` when the call failed.
    prompt_tokens: tokens in the prompt as the provider counted them (all requests).
    completion_tokens: tokens in the reply (all requests).
    cost: USD cost when the model has a price, else ``None``.
    latency_s: wall seconds of the requests (of the original call when cached).
    error: one line naming the failure, ``None`` on success.
    error_kind: ``auth``, ``not_found``, ``connection``, ``rate_limit``, ``server``,
      ``timeout`` (provider failures), ``context_window``, ``bad_request`` or
      ``malformed``; ``None`` on success.
    cached: the reply came from the reply cache (nothing was sent).
    request_key: the cache key of the request.
    attempts: requests actually sent (0 when cached), continuations included.
    finish_reason: the provider's finish reason of the last request (``length`` means
      the reply is still truncated after the continuations).
    sample: index of this request among identical requests of the same client.
    estimated: token counts are estimates (the offline provider), not a provider's.
    continuations: continuation requests sent for a reply cut by the length limit.
    reasoning: the reasoning text removed from the reply, if any.
    temperature_sent: whether the temperature parameter was sent.
    context: what the prompt builder dropped to fit the model's window, if anything.
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
  error_kind: str | None = None
  cached: bool = False
  request_key: str = ""
  attempts: int = 0
  finish_reason: str | None = None
  sample: int = 0
  estimated: bool = False
  continuations: int = 0
  reasoning: str | None = None
  temperature_sent: bool = True
  context: dict[str, Any] | None = None

  @property
  def ok(self) -> bool:
    return self.error is None and self.reply is not None

  @property
  def answered_by(self) -> str:
    """``offline`` for the rule-based provider, else ``llm``."""
    return "offline" if self.model == OFFLINE_MODEL else "llm"

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


class ProviderError(RuntimeError):
  """The provider failed (the model never answered); not a bad answer, not a proposal.

  Attributes:
    kind: one of :data:`PROVIDER_FAILURES`.
    record: the failed call's record (to be stored as a failed call).
    final: the run must stop (a permanent failure, or too many in a row).
    consecutive: calls in a row that ended in a provider failure.
  """

  def __init__(self, message: str, *, kind: str, record: LLMRecord, final: bool,
               consecutive: int):
    super().__init__(message)
    self.kind = kind
    self.record = record
    self.final = final
    self.consecutive = consecutive


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


# ---- reasoning text -------------------------------------------------------------------------

_TAGS = "think|thinking|reasoning|thought"
_PAIRED = re.compile(rf"<({_TAGS})>.*?</\1>", re.DOTALL | re.IGNORECASE)
_CLOSE = re.compile(rf"</({_TAGS})>", re.IGNORECASE)
_OPEN = re.compile(rf"<({_TAGS})>", re.IGNORECASE)


def split_reasoning(text: str) -> tuple[str, str]:
  """``(answer, reasoning)``: reasoning blocks removed from a reply, in every tag form.

  Paired blocks go first; then a lone closing tag (its opening tag was in the chat
  template, as for several open reasoning models) ends the reasoning, so everything
  before the last one goes; then a lone opening tag that never closes (a reply cut off
  while thinking) starts reasoning that runs to the end.
  """
  removed: list[str] = []

  def keep(match: re.Match[str]) -> str:
    removed.append(match.group(0))
    return ""

  answer = _PAIRED.sub(keep, text)
  closes = list(_CLOSE.finditer(answer))
  if closes:
    removed.append(answer[:closes[-1].end()])
    answer = answer[closes[-1].end():]
  opening = _OPEN.search(answer)
  if opening:
    removed.append(answer[opening.start():])
    answer = answer[:opening.start()]
  return answer.strip(), "\n".join(r.strip() for r in removed if r.strip())


def strip_reasoning(text: str) -> str:
  """The reply without any reasoning text (see :func:`split_reasoning`)."""
  return split_reasoning(text)[0]


# ---- the reply cache --------------------------------------------------------------------------


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


# ---- failure classification -------------------------------------------------------------------

# The environment variable of each provider's key (LiteLLM's names).
KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY", "mistral": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY",
    "openrouter": "OPENROUTER_API_KEY", "together_ai": "TOGETHERAI_API_KEY",
    "fireworks_ai": "FIREWORKS_API_KEY", "xai": "XAI_API_KEY", "azure": "AZURE_API_KEY",
    "cohere": "COHERE_API_KEY", "perplexity": "PERPLEXITYAI_API_KEY",
    "hosted_vllm": "HOSTED_VLLM_API_KEY", "dashscope": "DASHSCOPE_API_KEY",
}


def provider_of(model: str) -> str:
  try:
    return str(litellm.get_llm_provider(model)[1])
  except Exception:  # Unknown provider prefix: name it as written.
    return model.split("/", 1)[0]


def key_variable(model: str) -> str:
  """The environment variable holding the API key for ``model``'s provider."""
  provider = provider_of(model)
  return KEY_VARIABLES.get(provider, f"{provider.upper()}_API_KEY")


def _status(error: Exception) -> int | None:
  status = getattr(error, "status_code", None)
  return status if isinstance(status, int) else None


def classify(error: Exception) -> str:
  """What an exception from ``litellm.completion`` means.

  Returns one of :data:`PROVIDER_FAILURES`, or ``temperature`` (the model refuses the
  parameter), ``context_window`` (the prompt is too long for the model) or
  ``bad_request`` (anything else about the request: a bad answer to the proposal).
  """
  text = str(error).lower()
  status = _status(error)
  if isinstance(error, litellm.ContextWindowExceededError):
    return "context_window"
  if isinstance(error, (litellm.BadRequestError, litellm.UnsupportedParamsError)) and (
      "temperature" in text):
    return "temperature"
  if "missing credentials" in text or "api_key client option must be set" in text:
    return "auth"  # The SDK refused to send without a key.
  if "connection error" in text or "connection refused" in text or (
      isinstance(error, litellm.APIConnectionError) and not isinstance(error, litellm.Timeout)):
    return "connection"
  if isinstance(error, (litellm.AuthenticationError, litellm.PermissionDeniedError)) or (
      status in (401, 403)):
    return "auth"
  if isinstance(error, litellm.NotFoundError) or status == 404:
    return "not_found"
  if isinstance(error, litellm.RateLimitError) or status == 429:
    return "rate_limit"
  if isinstance(error, litellm.Timeout) or status in (408, 504):
    return "timeout"
  if isinstance(error, (litellm.InternalServerError, litellm.ServiceUnavailableError,
                        litellm.BadGatewayError)) or (status is not None and status >= 500):
    return "server"
  return "bad_request"


def _retry_after_s(error: Exception) -> float | None:
  response = getattr(error, "response", None)
  headers = getattr(response, "headers", None)
  if not headers:
    return None
  try:
    return float(headers.get("retry-after"))
  except (TypeError, ValueError):
    return None


_HINTS = {
    "timeout": "raise --llm_timeout or use a faster model",
    "rate_limit": "raise --llm_retries or lower the request rate",
    "context_window": "use a model with a longer context",
    "bad_request": "check the model name and its supported parameters",
    "auth": "check the provider's API key environment variable",
    "not_found": "check --llm_model and --llm_api_base",
}


def _one_line(error: Exception, kind: str) -> str:
  """The error as one line, ending with a hint at the fix where one is known."""
  text = " ".join(str(error).split())[:300]
  hint = _HINTS.get(kind)
  return f"{type(error).__name__}: {text}" + (f" ({hint})" if hint else "")


def _flag_of(role: str) -> str:
  return f"--{ROLE_FLAGS[model_role(role)]} / --llm_model / --llm_models"


def failure_message(kind: str, model: str, role: str, api_base: str | None, detail: str,
                    attempts: int) -> str:
  """One line naming a provider failure's cause and its fix."""
  where = api_base or f"the {provider_of(model)} API"
  if kind == "auth":
    return (f"{model} at {where} rejected the API key ({detail}): set {key_variable(model)} "
            "to a valid key")
  if kind == "not_found":
    return (f"{model} is not found at {where} ({detail}): check the model name "
            f"({_flag_of(role)}) and --llm_api_base")
  if kind == "connection":
    return (f"cannot connect to {where} for {model} ({detail}): check --llm_api_base and that "
            "the server is running")
  if kind == "rate_limit":
    return (f"{model} is still rate-limited after {attempts} attempt(s) ({detail}): wait, "
            "raise --llm_retries, or lower --parallel_evaluations")
  if kind == "timeout":
    return (f"{model} at {where} timed out {attempts} time(s) ({detail}): raise --llm_timeout "
            "or check the server")
  return (f"{model} at {where} failed with a server error {attempts} time(s) ({detail}): the "
          "provider is down or overloaded; try again later")


# ---- the client -------------------------------------------------------------------------------


class LLMClient:
  """Sends chat requests through LiteLLM with retries, backoff and a reply cache.

  Args:
    config: model and transport settings.
    cache: reply cache; ``None`` disables caching.
    sleep: the backoff sleep (tests pass a recorder).

  Every record it makes is also appended to a journal that :meth:`take_calls` empties,
  so the controller stores the calls of a proposal even when the proposer raised.
  """

  def __init__(self, config: LLMConfig, cache: ReplyCache | None = None,
               sleep: Any = time.sleep):
    self.config = config
    self.cache = cache
    self._sleep = sleep
    self._samples: collections.Counter[str] = collections.Counter()
    self._draws: collections.Counter[str] = collections.Counter()
    self._lock = threading.Lock()
    self._jitter = random.Random(config.seed)
    self._journal: list[LLMRecord] = []
    self._no_temperature: set[str] = set()
    self._windows: dict[str, int | None] = {}
    self.consecutive_failures = 0
    if OFFLINE_MODEL in config.all_models():
      from spark_clrs.llm import offline  # Registers the provider with LiteLLM.
      offline.register()
      log.warning("No --llm_model configured: using the built-in offline proposer %s, a "
                  "rule-based mutation operator over a catalogue of factor-local moves (not an "
                  "LLM).", OFFLINE_MODEL)

  @property
  def model(self) -> str:
    return self.config.resolved_model

  def take_calls(self) -> list[LLMRecord]:
    """Every record made since the last call, in order (and forgets them)."""
    with self._lock:
      calls, self._journal = self._journal, []
    return calls

  def checkpoint(self) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """The sample and mixture-draw counters, to :meth:`restore` after a failed attempt."""
    with self._lock:
      return collections.Counter(self._samples), collections.Counter(self._draws)

  def restore(self, state: tuple[collections.Counter[str], collections.Counter[str]]) -> None:
    """Forgets the requests made since :meth:`checkpoint`, so asking again asks the same.

    A proposal re-made after a provider failure then draws the same models and sample
    indexes as a resumed run would, and its successful calls come from the reply cache.
    """
    with self._lock:
      self._samples, self._draws = collections.Counter(state[0]), collections.Counter(state[1])

  def _next_sample(self, base_key: str) -> int:
    with self._lock:
      sample = self._samples[base_key]
      self._samples[base_key] += 1
    return sample

  def choose_model(self, role: str, messages: Sequence[Message]) -> str:
    """The role's model; a mixture is drawn with a generator seeded by the run and request.

    The draw depends on the seed, the role, the messages and how often this request was
    made before, so a resumed run draws the same model again (and hits its cache).
    """
    choices = self.config.models_for(role)
    if len(choices) == 1:
      return choices[0][0]
    blob = json.dumps([self.config.seed, role, [dict(m) for m in messages]], sort_keys=True)
    digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    with self._lock:
      n = self._draws[digest]
      self._draws[digest] += 1
    rng = random.Random(f"{digest}:{n}")
    names, weights = zip(*choices, strict=True)
    return rng.choices(names, weights=weights)[0]

  # ---- context window -----------------------------------------------------------------------

  def input_window(self, role: str) -> int | None:
    """Input tokens the role's model(s) accept (the smallest of a mixture); ``None`` = unknown."""
    windows = [self._window(m) for m, _ in self.config.models_for(role)]
    known = [w for w in windows if w]
    return min(known) if known else None

  def _window(self, model: str) -> int | None:
    if model not in self._windows:
      window = self.config.max_input_tokens
      if window is None and model != OFFLINE_MODEL:
        try:
          info = litellm.get_model_info(model)
          window = info.get("max_input_tokens") or info.get("max_tokens")
        except Exception:  # Not in LiteLLM's table (local servers): unknown.
          window = None
      self._windows[model] = int(window) if window else None
    return self._windows[model]

  def count_tokens(self, role: str, messages: Sequence[Message]) -> int:
    """Prompt tokens of ``messages`` for the role's (first) model (estimated when unknown)."""
    model = self.config.models_for(role)[0][0]
    try:
      return int(litellm.token_counter(model=model, messages=[dict(m) for m in messages]))
    except Exception:  # No tokenizer for this model: about 3 characters per token of code.
      return sum(len(str(m.get("content") or "")) for m in messages) // 3 + 4 * len(messages)

  # ---- one call -----------------------------------------------------------------------------

  def _missing_key(self, model: str) -> str | None:
    """Names the provider key env var when it is unset and no local ``api_base`` is given."""
    if model == OFFLINE_MODEL or self.config.api_base:
      return None
    try:
      missing = litellm.validate_environment(model).get("missing_keys") or []
    except Exception:  # Unknown provider: let the call itself report it.
      return None
    keys = [k for k in missing if k.endswith("_API_KEY")]
    return keys[0] if keys and len(keys) == len(missing) else None

  def _request_kwargs(self, model: str, messages: Sequence[Message],
                      sample: int) -> dict[str, Any]:
    cfg = self.config
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": [dict(m) for m in messages],
        "timeout": cfg.timeout,
        "num_retries": 0,   # Retries are ours (counted, backed off, recorded).
        "max_retries": 0,   # Also disables the OpenAI SDK's hidden retries.
        "drop_params": True,  # Parameters a provider does not support are left out.
    }
    if model not in self._no_temperature:
      kwargs["temperature"] = cfg.temperature
    if cfg.max_tokens is not None:
      kwargs["max_tokens"] = cfg.max_tokens
    if cfg.api_base and model != OFFLINE_MODEL:
      kwargs["api_base"] = cfg.api_base
      if litellm.validate_environment(model).get("missing_keys") or not os.environ.get(
          key_variable(model), "x"):
        # A keyless local server (vLLM, Ollama, llama.cpp): the SDK insists on some key.
        kwargs["api_key"] = "no-key-required"
    if model == OFFLINE_MODEL:
      kwargs["seed"] = cfg.seed * 1_000_003 + sample
    return kwargs

  def complete(self, role: str, messages: Sequence[Message]) -> LLMRecord:
    """Sends one chat request (or answers it from the cache) and records it.

    Returns a record (failed for a bad request or a malformed/too-long exchange).

    Raises:
      ProviderError: the provider failed after the retries (the record is in it).
    """
    cfg = self.config
    model = self.choose_model(role, messages)
    offline = model == OFFLINE_MODEL
    seed = cfg.seed if offline else None
    base_key = request_key(model, cfg.api_base, messages, cfg.temperature, cfg.max_tokens, 0,
                           seed)
    sample = self._next_sample(base_key)
    key = base_key if sample == 0 else request_key(
        model, cfg.api_base, messages, cfg.temperature, cfg.max_tokens, sample, seed)
    record = LLMRecord(role=role, model=model, messages=[dict(m) for m in messages],
                       reply=None, request_key=key, sample=sample, estimated=offline,
                       temperature_sent=model not in self._no_temperature)
    with self._lock:
      self._journal.append(record)
    if self.cache is not None:
      hit = self.cache.get(key)
      if hit is not None:
        record.reply = hit["reply"]
        for name in ("prompt_tokens", "completion_tokens", "cost", "latency_s", "finish_reason"):
          setattr(record, name, hit.get(name))
        record.continuations = int(hit.get("continuations") or 0)
        record.cached = True
        return record
    missing = self._missing_key(model)
    if missing:
      record.error, record.error_kind = f"{missing} is not set", "auth"
      self._provider_failure(record, f"{missing} is not set: export it for {model}, or pass "
                             "--llm_api_base for a keyless local server", force_final=True)
    content = self._send(record, messages, sample)
    if content is None:
      return record
    for _ in range(cfg.max_continuations):
      if record.finish_reason != "length" or not content:
        break
      more = self._send(record, [*messages, {"role": "assistant", "content": content},
                                 {"role": "user", "content": prompts.render(CONTINUE_TEMPLATE)}], sample)
      if more is None:  # The continuation failed: keep the cut reply (rejected as truncated).
        record.error = record.error_kind = None
        record.finish_reason = "length"
        break
      record.continuations += 1
      content = _join(content, more)
    answer, reasoning = split_reasoning(content)
    record.reply = answer
    record.reasoning = "\n".join(r for r in (record.reasoning, reasoning) if r) or None
    self.consecutive_failures = 0
    self._store(key, messages, record)
    return record

  def _send(self, record: LLMRecord, messages: Sequence[Message], sample: int) -> str | None:
    """One request with retries; the reply content (raw), or ``None`` with ``record.error``.

    Adds tokens, cost, latency and attempts to ``record``; raises :class:`ProviderError`.
    """
    cfg = self.config
    model = record.model
    retries_left = cfg.retries
    attempt = 0
    while True:
      attempt += 1
      record.attempts += 1
      start = time.monotonic()
      try:
        response = litellm.completion(**self._request_kwargs(model, messages, sample))
      except Exception as e:  # LiteLLM maps provider errors onto its own exception types.
        elapsed = time.monotonic() - start
        record.latency_s = (record.latency_s or 0.0) + elapsed
        kind = classify(e)
        if kind == "temperature" and model not in self._no_temperature:
          self._no_temperature.add(model)
          record.temperature_sent = False
          log.warning("%s refuses the temperature parameter (%s); calling it without one for "
                      "the rest of the run", model, " ".join(str(e).split())[:160])
          continue  # Not a failed attempt: the same request, minus the parameter.
        record.error, record.error_kind = _one_line(e, kind), kind
        retry_after = _retry_after_s(e)
        if kind in TRANSIENT and retries_left > 0:
          self._backoff(record.role, attempt, record.error, retry_after)
          retries_left -= 1
          continue
        if kind in PROVIDER_FAILURES:
          detail = " ".join(str(e).split())[:160]
          self._provider_failure(record, failure_message(kind, model, record.role,
                                                         cfg.api_base, detail, attempt))
        log.error("LLM %s call failed: %s", record.role, record.error)
        return None
      record.latency_s = (record.latency_s or 0.0) + time.monotonic() - start
      content = self._fill_from_response(record, response)
      if content is not None:
        record.error = record.error_kind = None
        return content
      record.error = "the reply has no message content (malformed response)"
      record.error_kind = "malformed"
      if retries_left <= 0:
        log.error("LLM %s call failed: %s", record.role, record.error)
        return None
      self._backoff(record.role, attempt, record.error, None)
      retries_left -= 1

  def _backoff(self, role: str, attempt: int, error: str, retry_after: float | None) -> None:
    cfg = self.config
    wait = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (attempt - 1)) * (
        1.0 + 0.1 * self._jitter.random())
    wait = max(wait, min(retry_after or 0.0, cfg.backoff_max_s))
    log.warning("LLM %s call attempt %d failed (%s); retrying in %.1fs", role, attempt, error,
                wait)
    self._sleep(wait)

  def wait_before_retry(self) -> None:
    """The pause before a proposal is re-asked after a provider failure (grows with them)."""
    cfg = self.config
    self._sleep(min(cfg.backoff_max_s,
                    cfg.backoff_s * 2 ** (cfg.retries + max(0, self.consecutive_failures - 1))))

  def _provider_failure(self, record: LLMRecord, message: str,
                        force_final: bool = False) -> NoReturn:
    self.consecutive_failures += 1
    kind = record.error_kind or "server"
    final = (force_final or kind not in TRANSIENT
             or self.consecutive_failures >= self.config.max_consecutive_failures)
    record.error = message
    log.error("LLM %s call: provider failure (%s, %d in a row): %s", record.role, kind,
              self.consecutive_failures, message)
    raise ProviderError(message, kind=kind, record=record, final=final,
                        consecutive=self.consecutive_failures)

  def _store(self, key: str, messages: Sequence[Message], record: LLMRecord) -> None:
    if self.cache is not None and record.reply is not None:
      self.cache.put(key, record.model, messages, record.reply, {
          "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
          "cost": record.cost, "latency_s": record.latency_s,
          "finish_reason": record.finish_reason, "role": record.role, "sample": record.sample,
          "continuations": record.continuations})

  def _fill_from_response(self, record: LLMRecord, response: Any) -> str | None:
    """Adds one response's usage and cost to ``record``; returns its raw content."""
    try:
      choice = response.choices[0]
      content = choice.message.content
      record.finish_reason = getattr(choice, "finish_reason", None)
      reasoning = getattr(choice.message, "reasoning_content", None)
    except (AttributeError, IndexError, TypeError):
      return None
    if isinstance(reasoning, str) and reasoning.strip():
      record.reasoning = "\n".join(r for r in (record.reasoning, reasoning.strip()) if r)
    usage = getattr(response, "usage", None)
    prompt = getattr(usage, "prompt_tokens", None) if usage is not None else None
    completion = getattr(usage, "completion_tokens", None) if usage is not None else None
    if prompt is not None:
      record.prompt_tokens = (record.prompt_tokens or 0) + int(prompt)
    if completion is not None:
      record.completion_tokens = (record.completion_tokens or 0) + int(completion)
    cost = self._cost(record.model, response, prompt, completion)
    if cost is not None:
      record.cost = (record.cost or 0.0) + cost
    return content if isinstance(content, str) else None

  def _cost(self, model: str, response: Any, prompt: int | None,
            completion: int | None) -> float | None:
    """LiteLLM's price table; ``price_per_mtok`` for models it has no price for."""
    if model == OFFLINE_MODEL:
      return None
    cost = None
    try:
      cost = litellm.completion_cost(completion_response=response, model=model)
    except Exception:  # Unpriced model (local servers).
      cost = None
    if (cost is None or cost == 0) and self.config.price_per_mtok is not None:
      price_in, price_out = self.config.price_per_mtok
      cost = ((prompt or 0) * price_in + (completion or 0) * price_out) / 1e6
    return float(cost) if cost is not None else None


def _join(head: str, tail: str) -> str:
  """A cut reply and its continuation as one text (a re-opened code fence is dropped)."""
  fences = re.findall(r"^[ \t]*(?:```|~~~)", head, re.MULTILINE)
  if len(fences) % 2 == 1:  # The cut fell inside a code block.
    first, _, rest = tail.lstrip("\n").partition("\n")
    if re.match(r"^[ \t]*(```|~~~)[A-Za-z0-9_+.-]*[ \t]*$", first):
      tail = rest
  return head + tail


__all__ = ["CONTINUE_TEMPLATE", "DEFAULT_MAX_TOKENS", "LLMClient", "LLMConfig", "LLMRecord",
           "OFFLINE_MODEL", "PROVIDER_FAILURES", "ProviderError", "ReplyCache", "TRANSIENT",
           "classify", "failure_message", "key_variable", "model_role", "request_key",
           "split_reasoning", "strip_reasoning"]
