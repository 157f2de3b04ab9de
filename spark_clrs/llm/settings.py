"""How to reach the LLM: :class:`LLMConfig`, filled from a search's ``--llm_*`` flags.

:func:`config_of` is the one mapping from the flags (SPEC §7) to the client's settings,
so a new LLM flag never needs an edit anywhere else.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from spark_clrs.config import SearchConfig, parse_model_spec

OFFLINE_MODEL = "spark/offline"
# The largest reply asked for by default: a whole seed program (~8 KB, ~2.5k tokens) three
# times over, plus prose. A model whose table entry says it returns less gets its own limit.
DEFAULT_MAX_TOKENS = 8192
ROLE_FLAGS = {"router": "router_model", "refiner": "refiner_model", "rewriter": "rewriter_model"}


def model_role(role: str) -> str:
  """The model flag a call's role uses: ``router``, ``refiner``, else ``rewriter``.

  Every role that writes code (SPARK's rewriter and the free-form strategies' roles such
  as ``crossover`` or EoH's ``e1``) uses the rewriter's model.
  """
  return role if role in ("router", "refiner") else "rewriter"


@dataclasses.dataclass(frozen=True)
class LLMConfig:
  """How to reach the LLM (SPEC §7); filled from the ``--llm_*`` flags by :func:`config_of`.

  Attributes:
    model: a LiteLLM model name such as ``openai/gpt-4o-mini`` or
      ``ollama/qwen2.5-coder``; ``None`` or ``""`` selects ``spark/offline``.
    api_base: endpoint URL for self-hosted or proxy servers (vLLM, Ollama, ...).
    api_key_env: the environment variable whose value is sent as the key to ``api_base``;
      without it a custom ``api_base`` gets no provider key (it may be anyone's server).
    temperature: sampling temperature (dropped for models that refuse it).
    timeout: seconds one request may take in all (a deadline, however slowly the server
      sends), before it is abandoned (and retried).
    retries: extra attempts after a rate limit, 5xx, timeout or connection error.
    max_tokens: reply length cap per request; ``None`` = the model's own output limit from
      the model table, at most :data:`DEFAULT_MAX_TOKENS`.
    backoff_s: first backoff; attempt k waits ``backoff_s * 2**k`` (plus jitter).
    backoff_max_s: upper bound of one backoff wait (a provider's Retry-After may ask more).
    seed: seeds the offline provider and the mixture draws (real LLMs get no seed).
    models: a ``--llm_models`` mixture (``a:0.7,b:0.3``) for every role without its own.
    role_models: ``(role, spec)`` pairs for ``router``, ``refiner``, ``rewriter``; a spec
      is one model or a weighted mixture.
    max_input_tokens: the input window when the table does not know the model (local
      servers), or to use less of it; ``None`` = the model table's.
    max_consecutive_failures: calls in a row ending in a provider failure (or a refusal)
      before the failure is final (the run stops).
    max_continuations: requests to continue a reply cut by the length limit.
    price_per_mtok: ``(input, output)`` USD per million tokens for models with no known price.
    prices_file: a JSON file in LiteLLM's model-table shape whose entries replace the
      bundled table's (newer prices, limits of new models).
    rpm: requests per minute this client sends at most (all roles together); 0 = no limit.
    tpm: tokens per minute (prompt + reply cap) this client sends at most; 0 = no limit.
    extra_body: a JSON object passed to the provider with every request (e.g. Ollama's
      ``{"options": {"num_ctx": 32768}}``); ``""`` = none.
  """

  model: str | None = None
  api_base: str | None = None
  api_key_env: str | None = None
  temperature: float = 0.7
  timeout: float = 300.0
  retries: int = 3
  max_tokens: int | None = None
  backoff_s: float = 2.0
  backoff_max_s: float = 60.0
  seed: int = 0
  models: str = ""
  role_models: tuple[tuple[str, str], ...] = ()
  max_input_tokens: int | None = None
  max_consecutive_failures: int = 3
  max_continuations: int = 2
  price_per_mtok: tuple[float, float] | None = None
  prices_file: str | None = None
  rpm: int = 0
  tpm: int = 0
  extra_body: str = ""

  @property
  def resolved_model(self) -> str:
    return self.model or OFFLINE_MODEL

  @property
  def is_offline(self) -> bool:
    return self.resolved_model == OFFLINE_MODEL

  @property
  def body(self) -> dict[str, Any]:
    """``extra_body`` parsed (``{}`` when unset)."""
    return dict(json.loads(self.extra_body)) if self.extra_body else {}

  def models_for(self, role: str) -> tuple[tuple[str, float], ...]:
    """``(model, weight)`` pairs the role draws from (one pair when there is no mixture)."""
    spec = dict(self.role_models).get(model_role(role)) or self.models or self.model or ""
    return parse_model_spec(spec) or ((OFFLINE_MODEL, 1.0),)

  def all_models(self) -> list[str]:
    """Every model some role may use, in first-use order."""
    names = [m for role in ROLE_FLAGS for m, _ in self.models_for(role)]
    return list(dict.fromkeys(names))


def config_of(cfg: SearchConfig) -> LLMConfig:
  """The :class:`LLMConfig` of a search's ``--llm_*`` and per-role model flags."""
  return LLMConfig(
      model=cfg.llm_model or None, api_base=cfg.llm_api_base or None,
      api_key_env=cfg.llm_api_key_env or None, temperature=cfg.llm_temperature,
      timeout=cfg.llm_timeout, retries=cfg.llm_retries, seed=cfg.seed,
      max_tokens=cfg.llm_max_tokens or None, backoff_s=cfg.llm_backoff_s, models=cfg.llm_models,
      role_models=tuple((role, getattr(cfg, flag)) for role, flag in ROLE_FLAGS.items()
                        if getattr(cfg, flag)),
      max_input_tokens=cfg.llm_max_input_tokens or None,
      max_consecutive_failures=cfg.llm_max_consecutive_failures,
      price_per_mtok=(tuple(cfg.llm_price_per_mtok)  # type: ignore[arg-type]
                      if cfg.llm_price_per_mtok else None),
      prices_file=cfg.llm_prices or None, rpm=cfg.llm_rpm, tpm=cfg.llm_tpm,
      extra_body=cfg.llm_extra_body)


__all__ = ["DEFAULT_MAX_TOKENS", "LLMConfig", "OFFLINE_MODEL", "ROLE_FLAGS", "config_of",
           "model_role"]
