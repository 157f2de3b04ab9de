"""One LLM call as it is persisted: :class:`LLMRecord`."""

from __future__ import annotations

import dataclasses
from typing import Any

from spark_clrs.llm.settings import OFFLINE_MODEL
from spark_clrs.messages import redact


@dataclasses.dataclass
class LLMRecord:
  """One LLM call as it is persisted (SPEC §1: role, model, prompt, reply, tokens, cost, latency).

  Attributes:
    role: who asked, e.g. ``router``, ``refiner``, ``rewriter``.
    model: the resolved LiteLLM model name (the one drawn, for a mixture).
    messages: the chat messages sent.
    reply: the reply text without reasoning, ``None`` when the call failed.
    prompt_tokens: tokens in the prompt as the provider counted them (all requests), plus
      our count of the prompt of each attempt that timed out after it was sent (a provider
      bills a request it received whether or not the answer arrived).
    completion_tokens: tokens in the reply (all requests).
    cost: USD cost when the model has a price, else ``None``.
    latency_s: wall seconds of the requests (of the original call when cached).
    error: one line naming the failure, ``None`` on success.
    error_kind: a provider failure (:data:`spark_clrs.llm.failures.PROVIDER_FAILURES`), or
      what was wrong with the answer: ``context_window``, ``bad_request``, ``malformed``,
      ``content_filter`` (refused or blocked), ``empty`` (no text), ``truncated`` (all of
      the reply cap spent without an answer); ``None`` on success.
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

  def add_usage(self, prompt: int | None, completion: int | None, cost: float | None) -> None:
    """Adds one request's tokens and cost (``None`` leaves a total as it is)."""
    if prompt is not None:
      self.prompt_tokens = (self.prompt_tokens or 0) + int(prompt)
    if completion is not None:
      self.completion_tokens = (self.completion_tokens or 0) + int(completion)
    if cost is not None:
      self.cost = (self.cost or 0.0) + float(cost)

  def to_dict(self) -> dict[str, Any]:
    """The record as stored, every text redacted (a provider may echo a key in any of them)."""
    return _redacted(dataclasses.asdict(self))


def _redacted(value: Any) -> Any:
  if isinstance(value, str):
    return redact(value)
  if isinstance(value, dict):
    return {k: _redacted(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_redacted(v) for v in value]
  return value


__all__ = ["LLMRecord"]
