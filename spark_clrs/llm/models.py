"""What is known about a model: its price, its input window and how long a reply it returns.

The source is LiteLLM's model table as installed, with entries from a user's file
(``--llm_prices``, in LiteLLM's own JSON shape, e.g. a newer
``model_prices_and_context_window.json``) taking precedence, so prices and limits of models
newer than the installed LiteLLM can be given without upgrading it.

A price is *known* when the file or the table gives a non-zero one, when the model is
served locally (Ollama, vLLM, LM Studio, llamafile: free), or when the user gave one with
``--llm_price_per_mtok`` (which prices every model without a known price, ``0,0``
included). A zero price from LiteLLM's table for any other model is not trusted: LiteLLM
prices names it does not know, such as new ``openai/gpt-*`` ones, at 0.0.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping
from typing import Any

from spark_clrs.llm.backend import litellm, provider_of
from spark_clrs.llm.settings import DEFAULT_MAX_TOKENS, OFFLINE_MODEL

LOCAL_PROVIDERS = ("ollama", "ollama_chat", "hosted_vllm", "lm_studio", "llamafile", "spark")


class ModelTableError(ValueError):
  """The ``--llm_prices`` file cannot be read as a model table (one line)."""


@dataclasses.dataclass(frozen=True)
class Price:
  """USD per token of prompt and reply, and where it came from."""

  prompt: float
  completion: float
  source: str  # "file", "litellm", "local" or "flag".

  def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float:
    return (prompt_tokens or 0) * self.prompt + (completion_tokens or 0) * self.completion


def load_table(path: str | None) -> dict[str, dict[str, Any]]:
  """The model entries of a LiteLLM-shaped JSON file (``{}`` without a path).

  Raises:
    ModelTableError: the file is missing, not JSON, or not an object of objects.
  """
  if not path:
    return {}
  try:
    data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise ModelTableError(f"--llm_prices={path}: cannot read it as JSON ({e})") from None
  if not isinstance(data, dict):
    raise ModelTableError(f"--llm_prices={path}: expected a JSON object of models, like "
                          "LiteLLM's model_prices_and_context_window.json")
  return {str(k): v for k, v in data.items() if isinstance(v, dict) and k != "sample_spec"}


def is_local(model: str) -> bool:
  """Served on the user's own machine (free): Ollama, vLLM, LM Studio, llamafile, offline."""
  return model == OFFLINE_MODEL or provider_of(model) in LOCAL_PROVIDERS


class ModelTable:
  """Prices and limits of models: the user's file first, then LiteLLM's table.

  Args:
    entries: model name -> LiteLLM-shaped entry (``input_cost_per_token``,
      ``output_cost_per_token``, ``max_input_tokens``, ``max_output_tokens``); a name is
      matched with and without its provider prefix.
    price_per_mtok: ``(prompt, completion)`` USD per million tokens for every model without
      a known price.
  """

  def __init__(self, entries: Mapping[str, Mapping[str, Any]] | None = None,
               price_per_mtok: tuple[float, float] | None = None):
    self.entries = dict(entries or {})
    self.price_per_mtok = price_per_mtok
    self._info: dict[str, tuple[dict[str, Any], str | None]] = {}

  def info(self, model: str) -> tuple[dict[str, Any], str | None]:
    """``(entry, source)``: the model's entry and ``"file"``/``"litellm"`` (``None``: unknown)."""
    if model not in self._info:
      bare = model.split("/", 1)[1] if "/" in model else model
      entry = self.entries.get(model) or self.entries.get(bare)
      if entry is not None:
        self._info[model] = (dict(entry), "file")
      elif model == OFFLINE_MODEL:
        self._info[model] = ({}, None)
      else:
        try:
          self._info[model] = (dict(litellm.get_model_info(model)), "litellm")
        except Exception:  # Not in LiteLLM's table (local servers, new models): unknown.
          self._info[model] = ({}, None)
    return self._info[model]

  def _int(self, model: str, *names: str) -> int | None:
    entry, _ = self.info(model)
    for name in names:
      value = entry.get(name)
      if isinstance(value, (int, float)) and value > 0:
        return int(value)
    return None

  def max_input_tokens(self, model: str) -> int | None:
    """The model's input window in tokens, ``None`` when unknown."""
    return self._int(model, "max_input_tokens", "max_tokens")

  def max_output_tokens(self, model: str) -> int | None:
    """The longest reply the model returns, ``None`` when unknown."""
    return self._int(model, "max_output_tokens")

  def default_max_tokens(self, model: str) -> int:
    """The reply cap to ask for: the model's output limit, at most :data:`DEFAULT_MAX_TOKENS`."""
    limit = self.max_output_tokens(model)
    return min(limit, DEFAULT_MAX_TOKENS) if limit else DEFAULT_MAX_TOKENS

  def price(self, model: str) -> Price | None:
    """The model's price per token, ``None`` when it is not known (see the module doc)."""
    entry, source = self.info(model)
    prompt, completion = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    known = isinstance(prompt, (int, float)) and isinstance(completion, (int, float))
    if known and source == "file":
      return Price(float(prompt), float(completion), "file")
    if known and (prompt or completion):
      return Price(float(prompt), float(completion), "litellm")
    if is_local(model):
      return Price(0.0, 0.0, "local")
    if self.price_per_mtok is not None:
      return Price(self.price_per_mtok[0] / 1e6, self.price_per_mtok[1] / 1e6, "flag")
    return None


__all__ = ["LOCAL_PROVIDERS", "ModelTable", "ModelTableError", "Price", "is_local",
           "load_table"]
