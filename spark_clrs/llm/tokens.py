"""Counting prompt tokens without touching the network.

LiteLLM counts with the model's own tokenizer where it ships one (tiktoken for OpenAI
models, bundled Anthropic and DeepSeek tokenizers) but *downloads* one from the Hugging
Face hub for Llama- and Command-R-named models: a 20-odd second stall on a machine
without internet, in the middle of fitting a prompt. Those models are counted with
the bundled OpenAI tokenizer instead (an estimate: what the count is for, fitting a
window with a margin and bounding spend, tolerates it); a count that fails at all falls
back to three characters per token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from spark_clrs.llm.backend import litellm

# Model names for which LiteLLM fetches a tokenizer from the Hugging Face hub.
DOWNLOADED_TOKENIZER = re.compile(r"llama|replicate|command-r", re.IGNORECASE)
ESTIMATE_WITH = "gpt-4o"  # Its tokenizer is bundled with LiteLLM (tiktoken, cached files).


def counted_as(model: str) -> str:
  """The model whose tokenizer counts ``model``'s prompts (itself unless it would download)."""
  return ESTIMATE_WITH if DOWNLOADED_TOKENIZER.search(model) else model


def count(model: str, messages: Sequence[Mapping[str, str]]) -> int:
  """Prompt tokens of ``messages`` for ``model``, never fetching a tokenizer."""
  try:
    return int(litellm.token_counter(model=counted_as(model),
                                     messages=[dict(m) for m in messages]))
  except Exception:  # No tokenizer at all: about 3 characters per token of code.
    return sum(len(str(m.get("content") or "")) for m in messages) // 3 + 4 * len(messages)


__all__ = ["DOWNLOADED_TOKENIZER", "count", "counted_as"]
