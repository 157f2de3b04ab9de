"""Where a request goes and what it carries: base URL, key, provider options.

* **Keys.** Without ``--llm_api_base`` LiteLLM reads the provider's usual variable
  (``OPENAI_API_KEY``, ...). A custom ``--llm_api_base`` may be anyone's server, so it
  never gets a provider key: it gets the key in the variable ``--llm_api_key_env`` names,
  else a placeholder (keyless local servers such as vLLM or Ollama need none, and the
  SDKs insist on some key). A key this package sends is registered for redaction.
* **Base URLs.** LiteLLM appends ``/v1/messages`` to an Anthropic base, so a base that
  already ends in ``/v1`` (as every other provider's does) would call ``/v1/v1/messages``;
  the ``/v1`` is dropped.
* **Provider options** (``--llm_extra_body``, a JSON object) reach the provider's request
  body. OpenAI-compatible providers take them as ``extra_body``; Anthropic's and Ollama's
  request builders do not, so their items go as keyword arguments (Ollama's ``options``
  flattened, so LiteLLM merges ``num_ctx`` with its own ``temperature`` and
  ``num_predict`` instead of replacing them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from spark_clrs.llm.backend import litellm, provider_of
from spark_clrs.llm.settings import OFFLINE_MODEL
from spark_clrs.messages import register_secret

NO_KEY = "no-key-required"
_KWARG_PROVIDERS = ("anthropic",)
_OLLAMA = ("ollama", "ollama_chat")


def api_base_for(model: str, api_base: str | None) -> str | None:
  """``api_base`` as LiteLLM needs it for ``model``'s provider (Anthropic: no trailing /v1)."""
  if not api_base:
    return None
  base = api_base.rstrip("/")
  if provider_of(model) == "anthropic" and base.endswith("/v1"):
    return base[:-len("/v1")]
  return base


def api_key_for(model: str, api_base: str | None, api_key_env: str | None) -> str | None:
  """The key to send, ``None`` to let LiteLLM read the provider's variable."""
  if model == OFFLINE_MODEL:
    return None
  if api_key_env:
    value = os.environ.get(api_key_env) or None
    register_secret(value)
    return value
  return NO_KEY if api_base else None


def missing_key(model: str, api_base: str | None, api_key_env: str | None) -> str | None:
  """The unset variable a request to ``model`` needs, ``None`` when nothing is missing."""
  if model == OFFLINE_MODEL:
    return None
  if api_key_env:
    return None if os.environ.get(api_key_env) else f"{api_key_env} (--llm_api_key_env)"
  if api_base:
    return None
  try:
    missing = litellm.validate_environment(model).get("missing_keys") or []
  except Exception:  # Unknown provider: let the call itself report it.
    return None
  keys = [k for k in missing if k.endswith("_API_KEY")]
  return keys[0] if keys and len(keys) == len(missing) else None


def provider_options(model: str, body: Mapping[str, Any]) -> dict[str, Any]:
  """Keyword arguments of ``litellm.completion`` that put ``body`` in the provider's request."""
  if not body or model == OFFLINE_MODEL:
    return {}
  provider = provider_of(model)
  if provider in _OLLAMA:
    options = body.get("options")
    rest = {k: v for k, v in body.items() if k != "options"}
    return {**rest, **(options if isinstance(options, Mapping) else {})}
  if provider in _KWARG_PROVIDERS:
    return dict(body)
  return {"extra_body": dict(body)}


def address(model: str, api_base: str | None, api_key_env: str | None,
            body: Mapping[str, Any]) -> dict[str, Any]:
  """The base URL, key and provider options of a request to ``model``."""
  kwargs = provider_options(model, body)
  if model == OFFLINE_MODEL:
    return kwargs
  base = api_base_for(model, api_base)
  if base:
    kwargs["api_base"] = base
  key = api_key_for(model, api_base, api_key_env)
  if key:
    kwargs["api_key"] = key
  return kwargs


__all__ = ["NO_KEY", "address", "api_base_for", "api_key_for", "missing_key",
           "provider_options"]
