"""Replies made whole before anyone parses them: reasoning removed, cuts joined, empties named.

* :func:`split_reasoning` removes reasoning text in every form (paired
  ``<think>``/``<thinking>``/``<reasoning>`` blocks, a lone closing tag whose opening tag sat
  in the chat template, an opening tag that never closes);
* :func:`join` glues a reply cut by the length limit to its continuation;
* :func:`read` takes what a provider's response says: content, finish reason (the
  provider's own when LiteLLM mapped it away: OpenRouter's ``error``, DeepSeek's
  ``insufficient_system_resource`` both arrive as ``stop``), reasoning, usage;
* :func:`empty_kind` says what an empty reply (``None`` or ``""``) means, from its finish
  reason: the model spent the reply cap (``truncated``), a filter or the model refused
  (``content_filter``), the provider failed mid-answer (``server``: retried), or it simply
  said nothing (``empty``). None of them is ever an answer, so none is cached.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_TAGS = "think|thinking|reasoning|thought"
_PAIRED = re.compile(rf"<({_TAGS})>.*?</\1>", re.DOTALL | re.IGNORECASE)
_CLOSE = re.compile(rf"</({_TAGS})>", re.IGNORECASE)
_OPEN = re.compile(rf"<({_TAGS})>", re.IGNORECASE)
# Finish reasons, as LiteLLM maps them or as providers send them natively.
REFUSED = ("content_filter", "refusal", "safety", "recitation", "prohibited_content",
           "blocklist", "spii", "sensitive")
PROVIDER_ERROR = ("error", "insufficient_system_resource", "network_error")
CUT = ("length", "max_tokens")


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


def join(head: str, tail: str) -> str:
  """A cut reply and its continuation as one text (a re-opened code fence is dropped)."""
  fences = re.findall(r"^[ \t]*(?:```|~~~)", head, re.MULTILINE)
  if len(fences) % 2 == 1:  # The cut fell inside a code block.
    first, _, rest = tail.lstrip("\n").partition("\n")
    if re.match(r"^[ \t]*(```|~~~)[A-Za-z0-9_+.-]*[ \t]*$", first):
      tail = rest
  return head + tail


@dataclasses.dataclass(frozen=True)
class Response:
  """What one provider response says.

  Attributes:
    content: the message text, ``None`` when there is none (or the body is malformed).
    finish_reason: the provider's own finish reason when LiteLLM mapped an unknown one
      to ``stop``, else LiteLLM's.
    reasoning: ``reasoning_content`` (or a refusal text), if any.
    refusal: the message's ``refusal`` field (OpenAI's structured refusal), if any.
    detail: the provider's error attached to the choice (OpenRouter), if any.
    prompt_tokens / completion_tokens: the usage it reports.
    malformed: the body has no choices or message at all.
  """

  content: str | None
  finish_reason: str | None = None
  reasoning: str | None = None
  refusal: str | None = None
  detail: str | None = None
  prompt_tokens: int | None = None
  completion_tokens: int | None = None
  malformed: bool = False


def _field(obj: Any, name: str) -> Any:
  value = getattr(obj, name, None)
  if value is None and isinstance(obj, dict):
    value = obj.get(name)
  return value


def read(response: Any) -> Response:
  """The :class:`Response` of a ``litellm.completion`` result."""
  try:
    choice = response.choices[0]
    message = choice.message
  except (AttributeError, IndexError, TypeError):
    return Response(None, malformed=True)
  native = _field(choice, "provider_specific_fields") or {}
  finish = _field(native, "native_finish_reason") or getattr(choice, "finish_reason", None)
  if getattr(choice, "finish_reason", None) not in (None, "stop"):
    finish = choice.finish_reason  # LiteLLM's mapping is right when it is not the default.
  reasoning = getattr(message, "reasoning_content", None)
  refusal = getattr(message, "refusal", None)
  detail = _field(native, "error")
  usage = getattr(response, "usage", None)
  content = getattr(message, "content", None)
  return Response(
      content=content if isinstance(content, str) else None,
      finish_reason=str(finish) if finish else None,
      reasoning=reasoning.strip() if isinstance(reasoning, str) and reasoning.strip() else None,
      refusal=refusal if isinstance(refusal, str) and refusal.strip() else None,
      detail=str(_field(detail, "message") or detail) if detail else None,
      prompt_tokens=getattr(usage, "prompt_tokens", None) if usage is not None else None,
      completion_tokens=getattr(usage, "completion_tokens", None) if usage is not None else None)


def empty_kind(reply: Response) -> str | None:
  """What a reply without text means; ``None`` when it has text.

  ``truncated``: the reply cap was spent before any text (a reasoning model thinking);
  ``content_filter``: refused or blocked; ``server``: the provider failed mid-answer;
  ``empty``: nothing, for no stated reason. A refusal with text is a refusal too.
  """
  finish = (reply.finish_reason or "").lower()
  if reply.refusal or finish in REFUSED:
    return "content_filter"
  if reply.content and reply.content.strip():
    return None
  if finish in CUT:
    return "truncated"
  if finish in PROVIDER_ERROR or reply.detail:
    return "server"
  return "empty"


__all__ = ["CUT", "PROVIDER_ERROR", "REFUSED", "Response", "empty_kind", "join", "read",
           "split_reasoning", "strip_reasoning"]
