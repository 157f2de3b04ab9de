"""One LLM call, made once: :class:`LLMClient`, with retries, guards, a record and a cache.

Every LLM request of a search goes through :meth:`LLMClient.complete`. It picks the
model of the call's role (:mod:`~spark_clrs.llm.draws`), answers from the reply cache
when it can, and otherwise sends the request through LiteLLM, each attempt:

1. checked against the run's spend caps (:class:`~spark_clrs.llm.spend.SpendLimit`, worst
   case: prompt + reply cap) and, when ``--llm_rpm``/``--llm_tpm`` are set, spaced to stay
   under them (:class:`~spark_clrs.llm.ratelimit.MinuteLimiter`);
2. sent with a deadline for the whole request (:mod:`~spark_clrs.llm.deadline`);
3. on failure, classified (:mod:`~spark_clrs.llm.failures`): transient failures back
   off (as long as the provider's Retry-After asks) and retry, permanent ones raise a
   final :class:`ProviderError` at once, a bad request returns a failed record;
4. on a reply, made whole (:mod:`~spark_clrs.llm.replies`): reasoning removed, a cut
   reply continued, an empty one classified by its finish reason.

The record (:class:`LLMRecord`) says what was asked and what came back, tokens, cost,
latency, finish reason and attempts; every record is also kept in a journal the
controller empties with :meth:`LLMClient.take_calls`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from spark_clrs.config import ConfigError
from spark_clrs.llm import deadline, endpoint, prompts, replies, spend, tokens
from spark_clrs.llm.backend import ensure_provider, litellm
from spark_clrs.llm.cache import Message, ReplyCache, request_key
from spark_clrs.llm.draws import Draws, State
from spark_clrs.llm.failures import (
  PROVIDER_FAILURES,
  TRANSIENT,
  ProviderError,
  classify,
  failure_message,
  max_tokens_limit,
  one_line_error,
)
from spark_clrs.llm.models import ModelTable, ModelTableError, load_table
from spark_clrs.llm.ratelimit import MinuteLimiter, retry_after_s
from spark_clrs.llm.records import LLMRecord
from spark_clrs.llm.settings import OFFLINE_MODEL, LLMConfig
from spark_clrs.messages import one_line, register_secret

log = logging.getLogger("spark_clrs.llm")
CONTINUE_TEMPLATE = "llm/continue"  # prompts/llm/continue.md: the continuation request.
MAX_RETRY_AFTER_S = 900.0  # A provider asking for a longer pause is out for the run.
MIN_REPLY_TOKENS = 256  # The least reply room a request is sent with.
WINDOW_MARGIN = 0.9  # Share of the window a prompt may fill (token counts may be estimates).
_CACHED_FIELDS = ("prompt_tokens", "completion_tokens", "cost", "latency_s", "finish_reason")


class LLMClient:
  """Sends chat requests through LiteLLM with retries, guards, backoff and a reply cache.

  Args:
    config: model and transport settings.
    cache: reply cache; ``None`` disables caching.
    spend_limit: the run's spend caps, checked before every request; ``None`` = none.
    sleep: the backoff and rate-limit sleep (tests pass a recorder).
    clock: monotonic seconds (tests pass a fake one with ``sleep``).

  Raises:
    ConfigError: the ``--llm_prices`` file is unreadable, or a cost cap is set and a
      configured model has no known price.
  """

  def __init__(self, config: LLMConfig, cache: ReplyCache | None = None, *,
               spend_limit: spend.SpendLimit | None = None, sleep: Any = time.sleep,
               clock: Any = time.monotonic):
    self.config = config
    self.cache = cache
    self.spend_limit = spend_limit
    self._sleep = sleep
    self._clock = clock
    try:
      self.table = ModelTable(load_table(config.prices_file), config.price_per_mtok)
    except ModelTableError as e:
      raise ConfigError(str(e)) from None
    self.limiter = MinuteLimiter(config.rpm, config.tpm, clock)
    self.draws = Draws(config)
    self._lock = threading.Lock()
    self._jitter = random.Random(config.seed)
    self._journal: list[LLMRecord] = []
    self._no_temperature: set[str] = set()
    self.consecutive_failures = 0
    self.consecutive_refusals = 0
    self._failing_since: float | None = None  # Clock time of the first failure since an answer.
    self._retry_after_until = 0.0  # Clock time before which the provider asked us not to call.
    models = config.all_models()
    for model in models:
      ensure_provider(model)
    unpriced = spend.check_prices(models, self.table, spend_limit)
    if unpriced:
      log.warning("No known price for %s: its calls are recorded without a cost; give one with "
                  "--llm_price_per_mtok=IN,OUT or --llm_prices=FILE", ", ".join(unpriced))
    if config.api_key_env:
      register_secret(os.environ.get(config.api_key_env))
    if OFFLINE_MODEL in models:
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

  def checkpoint(self) -> State:
    """The sample and mixture-draw counters, to :meth:`restore` after a failed attempt."""
    return self.draws.save()

  def restore(self, state: State) -> None:
    """Forgets the requests made since :meth:`checkpoint`, so asking again asks the same."""
    self.draws.load(state)

  def choose_model(self, role: str, messages: Sequence[Message]) -> str:
    return self.draws.model(role, messages)

  # ---- windows and tokens -------------------------------------------------------------------

  def max_tokens_for(self, model: str) -> int:
    """The reply cap of a request to ``model``: ``--llm_max_tokens``, else the model's own."""
    return self.config.max_tokens or self.table.default_max_tokens(model)

  def _window(self, model: str) -> int | None:
    if model == OFFLINE_MODEL:
      return None
    return self.config.max_input_tokens or self.table.max_input_tokens(model)

  def input_window(self, role: str) -> int | None:
    """Input tokens the role's model(s) accept (the smallest of a mixture); ``None`` = unknown."""
    known = [w for w in (self._window(m) for m, _ in self.config.models_for(role)) if w]
    return min(known) if known else None

  def prompt_budget(self, role: str) -> int | None:
    """Prompt tokens a role's request may have: its window less room for the reply.

    The room is the reply cap, but at most half the window (a small local window with a
    large cap leaves the prompt half, and the request's cap is lowered to what is left).
    ``None`` when no window of the role's models is known.
    """
    budgets = []
    for model, _ in self.config.models_for(role):
      window = self._window(model)
      if window:
        room = min(self.max_tokens_for(model), window // 2)
        budgets.append(int((window - room) * WINDOW_MARGIN))
    return min(budgets) if budgets else None

  def count_tokens(self, role: str, messages: Sequence[Message]) -> int:
    """Prompt tokens of ``messages`` for the role's (first) model, never downloading a tokenizer."""
    return tokens.count(self.config.models_for(role)[0][0], messages)

  # ---- one call -----------------------------------------------------------------------------

  def complete(self, role: str, messages: Sequence[Message]) -> LLMRecord:
    """Sends one chat request (or answers it from the cache) and records it.

    Returns a record (failed for a bad request, a refused, empty or malformed reply).

    Raises:
      ProviderError: the provider failed after the retries (the record is in it).
      SpendExhausted: the next request could break a spend cap; it was not sent.
    """
    cfg = self.config
    model = self.choose_model(role, messages)
    offline = model == OFFLINE_MODEL
    max_tokens = self.max_tokens_for(model)
    window = self._window(model)
    if window:  # Leave the reply no more room than the window has (local servers).
      max_tokens = max(MIN_REPLY_TOKENS, min(max_tokens, window - tokens.count(model, messages)))
    seed = cfg.seed if offline else None
    key_args = (model, cfg.api_base, messages, cfg.temperature, max_tokens)
    base_key = request_key(*key_args, 0, seed, cfg.extra_body)
    sample = self.draws.next_sample(base_key)
    key = base_key if sample == 0 else request_key(*key_args, sample, seed, cfg.extra_body)
    record = LLMRecord(role=role, model=model, messages=[dict(m) for m in messages],
                       reply=None, request_key=key, sample=sample, estimated=offline,
                       temperature_sent=model not in self._no_temperature)
    with self._lock:
      self._journal.append(record)
    hit = self.cache.get(key) if self.cache is not None else None
    if hit is not None:
      record.reply = hit["reply"]
      for name in _CACHED_FIELDS:
        setattr(record, name, hit.get(name))
      record.continuations = int(hit.get("continuations") or 0)
      record.cached = True
      return record
    missing = endpoint.missing_key(model, cfg.api_base, cfg.api_key_env)
    if missing:
      record.error, record.error_kind = f"{missing} is not set", "auth"
      fix = (f"export it with the key of {cfg.api_base or model}" if cfg.api_key_env else
             f"export it for {model}, or pass --llm_api_base for a keyless local server")
      self._provider_failure(record, f"{missing} is not set: {fix}", force_final=True)
    content = self._send(record, messages, max_tokens)
    if content is None:
      return record
    for _ in range(cfg.max_continuations):
      if record.finish_reason not in replies.CUT:
        break
      more = self._send(record, [*messages, {"role": "assistant", "content": content},
                                 {"role": "user", "content": prompts.render(CONTINUE_TEMPLATE)}],
                        max_tokens)
      if more is None:  # The continuation failed: keep the cut reply (rejected as truncated).
        record.error = record.error_kind = None
        record.finish_reason = "length"
        break
      record.continuations += 1
      content = replies.join(content, more)
    answer, reasoning = replies.split_reasoning(content)
    record.reasoning = "\n".join(r for r in (record.reasoning, reasoning) if r) or None
    if not answer:
      record.error, record.error_kind = "the reply holds only reasoning, no answer", "empty"
      log.error("LLM %s call failed: %s", role, record.error)
      return record
    record.reply = answer
    self._answered()
    self._store(key, messages, record)
    return record

  def _send(self, record: LLMRecord, messages: Sequence[Message], max_tokens: int) -> str | None:
    """One request with retries; the reply content (raw), or ``None`` with ``record.error``.

    Adds tokens, cost, latency and attempts to ``record``; raises :class:`ProviderError`
    and :class:`~spark_clrs.llm.spend.SpendExhausted`.
    """
    cfg = self.config
    model = record.model
    retries_left = cfg.retries
    raised_cap = False
    while True:
      self._before_request(record, messages, max_tokens)
      record.attempts += 1
      start = self._clock()
      try:
        response = deadline.call(litellm.completion,
                                 self._request_kwargs(model, messages, record.sample, max_tokens),
                                 cfg.timeout)
      except Exception as e:  # LiteLLM maps provider errors onto its own exception types.
        record.latency_s = (record.latency_s or 0.0) + self._clock() - start
        kind = classify(e)
        if kind == "temperature" and model not in self._no_temperature:
          self._no_temperature.add(model)
          record.temperature_sent = False
          log.warning("%s refuses the temperature parameter (%s); calling it without one for "
                      "the rest of the run", model, one_line(e, 160))
          continue  # Not a failed attempt: the same request, minus the parameter.
        record.error, record.error_kind = one_line_error(e, kind), kind
        if kind in PROVIDER_FAILURES:
          self._failing_since = self._failing_since if self._failing_since is not None else start
        if kind == "timeout" and "connect" not in str(e).lower():
          self._charge_unanswered(record, messages)
        wait = retry_after_s(e) if kind in TRANSIENT else None
        if wait is not None:
          self._retry_after_until = max(self._retry_after_until, self._clock() + wait)
          if wait > MAX_RETRY_AFTER_S:
            self._provider_failure(record, failure_message(
                kind, model, record.role, cfg.api_base, one_line(e, 160), record.attempts,
                waited_s=self._waited()) + f"; it asks to wait {wait:.0f} s: re-run later",
                force_final=True)
        if kind in TRANSIENT and retries_left > 0:
          self._backoff(record.role, record.attempts, record.error, wait)
          retries_left -= 1
          continue
        if kind in PROVIDER_FAILURES:
          self._provider_failure(record, failure_message(
              kind, model, record.role, cfg.api_base, one_line(e, 160), record.attempts,
              api_key_env=cfg.api_key_env, max_tokens=max_tokens,
              limit=max_tokens_limit(str(e)), waited_s=self._waited()))
        log.error("LLM %s call failed: %s", record.role, record.error)
        if kind == "content_filter":
          self._refused(record)
        return None
      record.latency_s = (record.latency_s or 0.0) + self._clock() - start
      reply = replies.read(response)
      cost = self._cost(model, response, reply.prompt_tokens, reply.completion_tokens)
      record.add_usage(reply.prompt_tokens, reply.completion_tokens, cost)
      self._charge(record, (reply.prompt_tokens or 0) + (reply.completion_tokens or 0), cost)
      record.finish_reason = reply.finish_reason
      if reply.reasoning:
        record.reasoning = "\n".join(r for r in (record.reasoning, reply.reasoning) if r)
      empty = "malformed" if reply.malformed else replies.empty_kind(reply)
      if empty is None:
        record.error = record.error_kind = None
        return reply.content
      record.error_kind = empty
      record.error = self._empty_error(empty, reply, max_tokens)
      if empty == "truncated" and not raised_cap:
        raised = self._raised_cap(model, max_tokens)
        if raised is not None:
          log.warning("LLM %s call: %s; asking again with a reply cap of %d", record.role,
                      record.error, raised)
          max_tokens, raised_cap = raised, True
          continue
      if empty in ("malformed", "server") and retries_left > 0:
        self._backoff(record.role, record.attempts, record.error, None)
        retries_left -= 1
        continue
      if empty == "server":
        self._failing_since = self._failing_since if self._failing_since is not None else start
        self._provider_failure(record, failure_message(
            "server", model, record.role, cfg.api_base, record.error, record.attempts,
            waited_s=self._waited()))
      log.error("LLM %s call failed: %s", record.role, record.error)
      if empty == "content_filter":
        self._refused(record)
      return None

  @staticmethod
  def _empty_error(kind: str, reply: replies.Response, max_tokens: int) -> str:
    finish = reply.finish_reason or "none"
    if kind == "malformed":
      return "the reply has no message content (malformed response)"
    if kind == "truncated":
      return (f"the model spent all {max_tokens} reply tokens without an answer (finish reason "
              f"{finish}); raise --llm_max_tokens")
    if kind == "content_filter":
      said = f": {one_line(reply.refusal, 200)}" if reply.refusal else ""
      return f"the provider refused or blocked the reply (finish reason {finish}){said}"
    if kind == "server":
      detail = f": {one_line(reply.detail, 200)}" if reply.detail else ""
      return f"the provider failed while answering (finish reason {finish}){detail}"
    return f"the reply is empty (finish reason {finish})"

  def _raised_cap(self, model: str, max_tokens: int) -> int | None:
    """A larger reply cap the model is known to allow, ``None`` when there is none."""
    limit = self.table.max_output_tokens(model)
    if limit is None or limit <= max_tokens:
      return None
    return min(limit, 2 * max_tokens)

  def _request_kwargs(self, model: str, messages: Sequence[Message], sample: int,
                      max_tokens: int) -> dict[str, Any]:
    cfg = self.config
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": [dict(m) for m in messages],
        "timeout": cfg.timeout,
        "num_retries": 0,   # Retries are ours (counted, backed off, recorded).
        "max_retries": 0,   # Also disables the OpenAI SDK's hidden retries.
        "drop_params": True,  # Parameters a provider does not support are left out.
        "max_tokens": max_tokens,
    }
    if model not in self._no_temperature:
      kwargs["temperature"] = cfg.temperature
    if model == OFFLINE_MODEL:
      kwargs["seed"] = cfg.seed * 1_000_003 + sample
    kwargs.update(endpoint.address(model, cfg.api_base, cfg.api_key_env, cfg.body))
    return kwargs

  # ---- spend, rate limits, waits ------------------------------------------------------------

  def _before_request(self, record: LLMRecord, messages: Sequence[Message],
                      max_tokens: int) -> None:
    """The spend guard and the client's rate limit, before a request is sent."""
    limit = self.spend_limit
    guarded = limit is not None and bool(limit.caps)
    if not guarded and not self.limiter.active:
      return
    prompt = tokens.count(record.model, messages)
    if guarded:
      try:
        limit.check(model=record.model, role=record.role, prompt_tokens=prompt,
                    max_tokens=max_tokens, price=self.table.price(record.model),
                    estimated=record.estimated)
      except spend.SpendExhausted as e:
        record.error, record.error_kind = str(e), "spend_limit"
        if record.attempts == 0:  # Nothing of this call was sent: it is no call at all.
          with self._lock:
            self._journal = [r for r in self._journal if r is not record]
        e.record = record if record.attempts else None
        log.warning("LLM %s call not sent: %s", record.role, e)
        raise
    wait = self.limiter.reserve(prompt + max_tokens)
    if wait > 0:
      log.info("LLM %s call waits %.1f s for --llm_rpm/--llm_tpm", record.role, wait)
      self._sleep(wait)

  def _charge(self, record: LLMRecord, used: int, cost: float | None) -> None:
    if self.spend_limit is not None:
      self.spend_limit.charge(used, cost, estimated=record.estimated)

  def _charge_unanswered(self, record: LLMRecord, messages: Sequence[Message]) -> None:
    """Counts the prompt of a request that timed out after it was sent (it is billed)."""
    prompt = tokens.count(record.model, messages)
    price = self.table.price(record.model)
    cost = price.cost(prompt, 0) if price is not None else None
    record.add_usage(prompt, None, cost)
    self._charge(record, prompt, cost)

  def _cost(self, model: str, response: Any, prompt: int | None,
            completion: int | None) -> float | None:
    """The model table's price (LiteLLM's own cost where it prices the model)."""
    price = self.table.price(model) if model != OFFLINE_MODEL else None
    if price is None:
      return None
    if price.source == "litellm":
      try:
        cost = litellm.completion_cost(completion_response=response, model=model)
        if cost:
          return float(cost)
      except Exception:  # Fall back to the table's per-token prices.
        pass
    return price.cost(prompt, completion)

  def _waited(self) -> float:
    """Seconds since the provider last answered, if it has failed since."""
    return 0.0 if self._failing_since is None else self._clock() - self._failing_since

  def _backoff(self, role: str, attempt: int, error: str | None, retry_after: float | None) -> None:
    cfg = self.config
    wait = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (attempt - 1)) * (
        1.0 + 0.1 * self._jitter.random())
    wait = max(wait, retry_after or 0.0)
    log.warning("LLM %s call attempt %d failed (%s); retrying in %.1fs", role, attempt, error,
                wait)
    self._sleep(wait)

  def wait_before_retry(self) -> None:
    """The pause before a proposal is re-asked after a provider failure (grows with them)."""
    cfg = self.config
    wait = min(cfg.backoff_max_s,
               cfg.backoff_s * 2 ** (cfg.retries + max(0, self.consecutive_failures - 1)))
    self._sleep(max(wait, self._retry_after_until - self._clock()))

  # ---- outcomes -----------------------------------------------------------------------------

  def _answered(self) -> None:
    self.consecutive_failures = self.consecutive_refusals = 0
    self._failing_since = None

  def _refused(self, record: LLMRecord) -> None:
    """Counts a refusal; refusals that repeat stop the run (the prompts will not pass)."""
    self.consecutive_refusals += 1
    if self.consecutive_refusals >= self.config.max_consecutive_failures:
      record.error_kind = "refusal"
      self._provider_failure(record, failure_message(
          "refusal", record.model, record.role, self.config.api_base, record.error or "",
          self.consecutive_refusals), force_final=True)

  def _provider_failure(self, record: LLMRecord, message: str,
                        force_final: bool = False) -> NoReturn:
    self.consecutive_failures += 1
    kind = record.error_kind or "server"
    final = (force_final or kind not in TRANSIENT
             or self.consecutive_failures >= self.config.max_consecutive_failures)
    record.error = message = one_line(message, 600)
    log.error("LLM %s call: provider failure (%s, %d in a row): %s", record.role, kind,
              self.consecutive_failures, message)
    raise ProviderError(message, kind=kind, record=record, final=final,
                        consecutive=self.consecutive_failures, waited_s=self._waited())

  def _store(self, key: str, messages: Sequence[Message], record: LLMRecord) -> None:
    if self.cache is not None and record.reply:
      self.cache.put(key, record.model, messages, record.reply, {
          "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
          "cost": record.cost, "latency_s": record.latency_s,
          "finish_reason": record.finish_reason, "role": record.role, "sample": record.sample,
          "continuations": record.continuations})


__all__ = ["CONTINUE_TEMPLATE", "LLMClient", "MAX_RETRY_AFTER_S", "WINDOW_MARGIN"]
