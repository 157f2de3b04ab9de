"""LLM access (SPEC §7): every request of a search, sent once, bounded, recorded.

One concept per module; the public names are re-exported here, so
``from spark_clrs import llm; llm.LLMClient(...)`` is all a caller needs.

* :mod:`.settings` — :class:`LLMConfig` and :func:`config_of` (the ``--llm_*`` flags);
* :mod:`.client` — :class:`LLMClient`: one call with retries, guards, record and cache;
* :mod:`.records` — :class:`LLMRecord`, a call as stored (texts redacted);
* :mod:`.cache` — :class:`ReplyCache` and :func:`request_key`;
* :mod:`.failures` — what a failure means in any provider's wording
  (:class:`ProviderError`, :func:`classify`, :func:`failure_message`);
* :mod:`.replies` — reasoning removed, cut replies joined, empty replies classified;
* :mod:`.spend` — :class:`SpendLimit` / :class:`SpendExhausted`, the guard before every
  request, and no cost cap without a price;
* :mod:`.models` — prices and limits (LiteLLM's table, ``--llm_prices``);
* :mod:`.ratelimit` — Retry-After as providers send it, ``--llm_rpm``/``--llm_tpm``;
* :mod:`.deadline` — ``--llm_timeout`` as a deadline for the whole request;
* :mod:`.endpoint` — base URL, key and provider options of a request;
* :mod:`.tokens` — token counts that never download a tokenizer;
* :mod:`.draws` — seeded model mixtures and sample indexes;
* :mod:`.backend` — LiteLLM as configured here, and the provider-registration hook
  through which :mod:`.offline` (the built-in ``spark/offline`` proposer) plugs in;
* :mod:`.prompts` — prompt templates.

API keys are never taken as arguments, logged or stored: LiteLLM reads them from the
provider's usual environment variables, and a custom ``--llm_api_base`` gets only the
key in the variable ``--llm_api_key_env`` names.
"""

from spark_clrs.llm import prompts
from spark_clrs.llm.backend import litellm
from spark_clrs.llm.cache import ReplyCache, request_key
from spark_clrs.llm.client import CONTINUE_TEMPLATE, LLMClient
from spark_clrs.llm.failures import (
  PROVIDER_FAILURES,
  TRANSIENT,
  ProviderError,
  classify,
  failure_message,
  key_variable,
)
from spark_clrs.llm.records import LLMRecord
from spark_clrs.llm.replies import split_reasoning, strip_reasoning
from spark_clrs.llm.settings import (
  DEFAULT_MAX_TOKENS,
  OFFLINE_MODEL,
  LLMConfig,
  config_of,
  model_role,
)
from spark_clrs.llm.spend import SpendExhausted, SpendLimit

__all__ = ["CONTINUE_TEMPLATE", "DEFAULT_MAX_TOKENS", "LLMClient", "LLMConfig", "LLMRecord",
           "OFFLINE_MODEL", "PROVIDER_FAILURES", "ProviderError", "ReplyCache", "SpendExhausted",
           "SpendLimit", "TRANSIENT", "classify", "config_of", "failure_message", "key_variable",
           "litellm", "model_role", "prompts", "request_key", "split_reasoning",
           "strip_reasoning"]
