"""LiteLLM as this package uses it: imported offline, quiet, redacted, with a provider hook.

Every module of :mod:`spark_clrs.llm` (and the offline provider) takes ``litellm`` from
here, so it is configured once, before anything else touches it:

* its price table is the bundled one (it would otherwise try to download one on import);
* its per-call INFO lines are silenced and whatever it still logs passes through
  :func:`spark_clrs.messages.redact`, so a key quoted in an error never reaches a log;
* custom providers (the built-in ``spark/offline``) register through :func:`register_provider`;
  a provider named in :data:`LAZY_PROVIDERS` is imported by name the first time a model of
  it is used, so this package never imports the providers that build on it.
"""

from __future__ import annotations

import importlib
import logging
import os

from spark_clrs.messages import redact

# LiteLLM otherwise tries to download its price table on import (no network here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

litellm.suppress_debug_info = True
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
# Provider prefix -> the module that registers it when imported.
LAZY_PROVIDERS = {"spark": "spark_clrs.llm.offline"}


class _Redact(logging.Filter):
  """Rewrites a log record's message with secrets redacted (LiteLLM quotes provider errors)."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    cleaned = redact(message)
    if cleaned != message:
      record.msg, record.args = cleaned, ()
    return True


for _name in LITELLM_LOGGERS:  # Per-call INFO lines are noise here.
  logging.getLogger(_name).setLevel(logging.WARNING)
  logging.getLogger(_name).addFilter(_Redact())


def register_provider(prefix: str, handler: litellm.CustomLLM) -> None:
  """Routes ``prefix/<model>`` through ``litellm.completion`` to ``handler`` (idempotent)."""
  if not any(item.get("provider") == prefix for item in litellm.custom_provider_map):
    litellm.custom_provider_map.append({"provider": prefix, "custom_handler": handler})


def ensure_provider(model: str) -> None:
  """Imports the module that registers ``model``'s provider, if it is a lazy one."""
  module = LAZY_PROVIDERS.get(model.split("/", 1)[0])
  if module is not None:
    importlib.import_module(module)


def provider_of(model: str) -> str:
  """LiteLLM's provider name of ``model`` (``openai``, ``anthropic``, ...), else its prefix."""
  try:
    return str(litellm.get_llm_provider(model)[1])
  except Exception:  # Unknown provider prefix: name it as written.
    return model.split("/", 1)[0]


__all__ = ["LAZY_PROVIDERS", "ensure_provider", "litellm", "provider_of", "register_provider"]
