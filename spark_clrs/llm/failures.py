"""What a failed request means, in any provider's wording, and the one line that says so.

Two kinds of failure are kept apart, because they mean different things to a search:

* the *provider* failed (:data:`PROVIDER_FAILURES`): the model never answered, so this is
  not a proposal. :class:`ProviderError` is raised; the controller stops the run with its
  one line once it is final. Permanent ones are final at once, whatever the retries:
  a bad or missing key, an unknown model (404, or a 400 worded "not a valid model ID",
  "Model Not Exist", ...), no credits left (402, "insufficient_quota"), ``max_tokens``
  above what the model can return, and refusals that repeat. Transient ones
  (:data:`TRANSIENT`) are retried with backoff and become final after
  ``max_consecutive_failures`` calls in a row;
* the *model* answered badly, or the request itself was bad for this prompt (too long,
  one content filter hit): the call returns a failed record and only that proposal is
  rejected, with its reason.

Every message is one line (:func:`spark_clrs.messages.one_line`, which redacts keys) that
names the cause and the fix.
"""

from __future__ import annotations

import re

from spark_clrs.llm.backend import litellm, provider_of
from spark_clrs.llm.records import LLMRecord
from spark_clrs.llm.settings import ROLE_FLAGS, model_role
from spark_clrs.messages import one_line

PERMANENT = ("auth", "not_found", "credits", "max_tokens", "refusal")
TRANSIENT = ("connection", "rate_limit", "server", "timeout")
PROVIDER_FAILURES = PERMANENT + TRANSIENT

# The environment variable of each provider's key (LiteLLM's names).
KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY", "mistral": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY",
    "openrouter": "OPENROUTER_API_KEY", "together_ai": "TOGETHERAI_API_KEY",
    "fireworks_ai": "FIREWORKS_API_KEY", "xai": "XAI_API_KEY", "azure": "AZURE_API_KEY",
    "cohere": "COHERE_API_KEY", "perplexity": "PERPLEXITYAI_API_KEY",
    "hosted_vllm": "HOSTED_VLLM_API_KEY", "dashscope": "DASHSCOPE_API_KEY",
}

_UNKNOWN_MODEL = re.compile(
    r"model\b[^.]{0,80}?(?:does not exist|not exist|not found|is not a valid model|"
    r"isn't a valid|is not supported for generatecontent)"
    r"|(?:invalid|unknown|no such) model|not a valid model id|llm provider not provided"
    r"|no endpoints found", re.IGNORECASE)
_CREDITS = re.compile(
    r"insufficient[ _](?:credits|balance|funds|quota)|credit balance is too low|"
    r"exceeded your current quota|payment required|out of credits", re.IGNORECASE)
_MAX_TOKENS = re.compile(
    r"(?:max_tokens|max_completion_tokens|max_output_tokens|maxoutputtokens|"
    r"max(?:imum)? output tokens)[^.]{0,120}?(?:too large|at most|valid range|exceed|"
    r"greater than|supported range|maximum|>\s*\d)", re.IGNORECASE)
_MAX_TOKENS_LIMIT = (
    (re.compile(r"at most (\d+)"), 0), (re.compile(r"\[\s*1\s*,\s*(\d+)\s*\]"), 0),
    (re.compile(r">\s*(\d+),? which is the maximum"), 0),
    (re.compile(r"to (\d+) \(exclusive\)"), -1),
    (re.compile(r"less than or equal to (\d+)"), 0),
)
_CONTENT_FILTER = re.compile(
    r"content[ _-]?(?:filter|management policy|policy)|safety (?:system|filter|settings)|"
    r"responsible ai|prohibited content|flagged (?:as|by)", re.IGNORECASE)
_HINTS = {
    "context_window": "use a model with a longer context",
    "bad_request": "check the model name and its supported parameters",
    "content_filter": "the provider's content filter refused this prompt",
}


class ProviderError(RuntimeError):
  """The provider failed (the model never answered); not a bad answer, not a proposal.

  Attributes:
    kind: one of :data:`PROVIDER_FAILURES`.
    record: the failed call's record (to be stored as a failed call).
    final: the run must stop (a permanent failure, or too many in a row).
    consecutive: calls in a row that ended in a provider failure.
    waited_s: seconds spent on the provider since it last answered (requests, backoffs and
      the pauses before a proposal was asked again), part of the message.
  """

  def __init__(self, message: str, *, kind: str, record: LLMRecord, final: bool,
               consecutive: int, waited_s: float = 0.0):
    super().__init__(message)
    self.kind = kind
    self.record = record
    self.final = final
    self.consecutive = consecutive
    self.waited_s = waited_s


def key_variable(model: str, api_key_env: str | None = None) -> str:
  """The environment variable holding the API key for ``model`` (``api_key_env`` if named)."""
  if api_key_env:
    return api_key_env
  provider = provider_of(model)
  return KEY_VARIABLES.get(provider, f"{provider.upper()}_API_KEY")


def status_of(error: Exception) -> int | None:
  status = getattr(error, "status_code", None)
  return status if isinstance(status, int) else None


def classify(error: Exception) -> str:
  """What an exception from ``litellm.completion`` means.

  Returns one of :data:`PROVIDER_FAILURES` (``refusal`` excepted: a refusal is a reply),
  or ``temperature`` (the model refuses the parameter), ``context_window`` (the prompt is
  too long), ``content_filter`` (the provider's filter refused this prompt) or
  ``bad_request`` (anything else about the request: a bad answer to the proposal).
  """
  text = str(error)
  status = status_of(error)
  if isinstance(error, litellm.ContextWindowExceededError):
    return "context_window"
  if isinstance(error, (litellm.BadRequestError, litellm.UnsupportedParamsError)) and (
      "temperature" in text.lower()):
    return "temperature"
  if re.search(r"missing credentials|api_key client option must be set", text, re.IGNORECASE):
    return "auth"  # The SDK refused to send without a key.
  if re.search(r"connection (?:error|refused)", text, re.IGNORECASE) or (
      isinstance(error, litellm.APIConnectionError) and not isinstance(error, litellm.Timeout)):
    return "connection"
  if status == 402 or _CREDITS.search(text):
    return "credits"
  if isinstance(error, (litellm.AuthenticationError, litellm.PermissionDeniedError)) or (
      status in (401, 403)):
    return "auth"
  if isinstance(error, litellm.Timeout) or status in (408, 504):
    return "timeout"
  if isinstance(error, litellm.RateLimitError) or status == 429:
    return "rate_limit"
  if isinstance(error, (litellm.InternalServerError, litellm.ServiceUnavailableError,
                        litellm.BadGatewayError)) or (status is not None and status >= 500):
    return "server"
  if isinstance(error, litellm.NotFoundError) or status == 404 or _UNKNOWN_MODEL.search(text):
    return "not_found"
  if _MAX_TOKENS.search(text):
    return "max_tokens"
  if isinstance(error, litellm.ContentPolicyViolationError) or _CONTENT_FILTER.search(text):
    return "content_filter"
  return "bad_request"


def max_tokens_limit(text: str) -> int | None:
  """The reply-length limit a provider's ``max_tokens`` error names, if it names one."""
  for pattern, offset in _MAX_TOKENS_LIMIT:
    match = pattern.search(text)
    if match:
      return int(match.group(1)) + offset
  return None


def one_line_error(error: Exception, kind: str) -> str:
  """The error as one line, ending with a hint at the fix where one is known."""
  hint = _HINTS.get(kind)
  return one_line(f"{type(error).__name__}: {one_line(error, 300)}" +
                  (f" ({hint})" if hint else ""))


def _flag_of(role: str) -> str:
  return f"--{ROLE_FLAGS[model_role(role)]} / --llm_model / --llm_models"


def failure_message(kind: str, model: str, role: str, api_base: str | None, detail: str,
                    attempts: int, *, api_key_env: str | None = None,
                    max_tokens: int | None = None, limit: int | None = None,
                    waited_s: float = 0.0) -> str:
  """One line naming a provider failure's cause and its fix (and the time spent waiting).

  ``limit`` is the reply-length limit a ``max_tokens`` error named (:func:`max_tokens_limit`
  of its whole text; ``detail`` is cut short).
  """
  where = api_base or f"the {provider_of(model)} API"
  waited = f"; waited {waited_s:.0f} s on the provider" if waited_s >= 1 else ""
  detail = one_line(detail, 160)
  if kind == "auth" and api_base and not api_key_env:
    text = (f"{where} refused {model} without an API key ({detail}): name the environment "
            "variable that holds its key with --llm_api_key_env (a provider key is never sent "
            "to a custom --llm_api_base)")
  elif kind == "auth":
    text = (f"{model} at {where} rejected the API key ({detail}): set "
            f"{key_variable(model, api_key_env)} to a valid key")
  elif kind == "not_found":
    text = (f"{model} is not found at {where} ({detail}): check the model name "
            f"({_flag_of(role)}) and --llm_api_base")
  elif kind == "credits":
    text = (f"{model} at {where}: the account has no credits or quota left ({detail}): add "
            "credits, or use another model or key")
  elif kind == "max_tokens":
    fix = f"at most {limit}" if limit else "what the model can return"
    text = (f"{model} at {where} cannot return {max_tokens or 'that many'} tokens ({detail}): "
            f"set --llm_max_tokens to {fix} (0 = the model's own limit from LiteLLM's table "
            "or --llm_prices)")
  elif kind == "refusal":
    text = (f"{model} refused or blocked {attempts} requests in a row ({detail}): its safety "
            "filter blocks these prompts; use another model")
  elif kind == "connection":
    text = (f"cannot connect to {where} for {model} ({detail}): check --llm_api_base and that "
            "the server is running")
  elif kind == "rate_limit":
    text = (f"{model} is still rate-limited after {attempts} attempt(s) ({detail}): wait, "
            "raise --llm_retries, or lower --llm_rpm / --llm_tpm / --parallel_evaluations")
  elif kind == "timeout":
    text = (f"{model} at {where} did not answer within --llm_timeout {attempts} time(s) "
            f"({detail}): raise --llm_timeout or check the server")
  else:
    text = (f"{model} at {where} failed with a server error {attempts} time(s) ({detail}): the "
            "provider is down or overloaded; try again later")
  return one_line(text + waited, 600)


__all__ = ["KEY_VARIABLES", "PERMANENT", "PROVIDER_FAILURES", "ProviderError", "TRANSIENT",
           "classify", "failure_message", "key_variable", "max_tokens_limit", "one_line_error",
           "status_of"]
