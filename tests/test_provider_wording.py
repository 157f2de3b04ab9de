"""Each provider's own wire format, error wording and header locations, against one client.

The scripted server on 127.0.0.1 speaks OpenAI's format (``openai/``, ``hosted_vllm/``,
``openrouter/``, ``deepseek/``), Anthropic's (``anthropic/``, base URL written with
``/v1`` as for every other provider) and Gemini's (``gemini/``). Each test asks every
provider the same thing and checks the client reads the answer the same way: which
failures are permanent (the run would stop at once), how long a rate limit waits, which
empty replies reject only their proposal, and that a trickled reply ends at the deadline.
"""

import time

from absl.testing import absltest
from llm_server import Reply, ScriptedServer, Status, Trickle

from spark_clrs import llm

MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Say ok."}]
MODELS = {"openai": "openai/gpt-scripted", "hosted_vllm": "hosted_vllm/qwen-scripted",
          "openrouter": "openrouter/acme/scripted", "deepseek": "deepseek/deepseek-chat",
          "anthropic": "anthropic/claude-scripted", "gemini": "gemini/gemini-scripted"}
UNKNOWN_MODEL = {
    "openai": (404, "The model `gpt-scripted` does not exist or you do not have access to it."),
    "hosted_vllm": (404, "The model `qwen-scripted` does not exist."),
    "openrouter": (400, "acme/scripted is not a valid model ID"),
    "deepseek": (400, "Model Not Exist"),
    "anthropic": (404, "model: claude-scripted"),
    "gemini": (404, "models/gemini-scripted is not found for API version v1beta, or is not "
                    "supported for generateContent."),
}
NO_CREDITS = {
    "openai": (429, "You exceeded your current quota, please check your plan and billing "
                    "details."),
    "openrouter": (402, "Insufficient credits. Add more using https://openrouter.ai/credits"),
    "deepseek": (402, "Insufficient Balance"),
    "anthropic": (400, "Your credit balance is too low to access the Anthropic API. Please go "
                       "to Plans & Billing to upgrade or purchase credits."),
}
TOO_MANY_TOKENS = {
    "openai": ("max_tokens is too large: 8192. This model supports at most 4096 completion "
               "tokens, whereas you provided 8192.", 4096),
    "deepseek": ("Invalid max_tokens value, the valid range of max_tokens is [1, 8192]", 8192),
    "anthropic": ("max_tokens: 8192 > 4096, which is the maximum allowed number of output "
                  "tokens for claude-scripted", 4096),
    "gemini": ("Unable to submit request because it has a maxOutputTokens value of 8192 but the "
               "supported range is from 1 (inclusive) to 2049 (exclusive).", 2048),
}
REFUSED = {"openai": "content_filter", "openrouter": "content_filter",
           "anthropic": "refusal", "gemini": "SAFETY"}
CUT = {"openai": "length", "deepseek": "length", "anthropic": "max_tokens",
       "gemini": "MAX_TOKENS"}


def base_url(server: ScriptedServer, provider: str) -> str:
  return server.url + "/v1beta" if provider == "gemini" else server.api_base


class ProviderWordingTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.sleeps: list[float] = []

  def client(self, server: ScriptedServer, provider: str, **overrides) -> llm.LLMClient:
    config = llm.LLMConfig(**{"model": MODELS[provider], "api_base": base_url(server, provider),
                              "retries": 1, "backoff_s": 0.5, "timeout": 10.0, **overrides})
    return llm.LLMClient(config, sleep=self.sleeps.append)

  def ask(self, provider: str, *script, **overrides) -> tuple[llm.LLMRecord | Exception, int]:
    """The record (or the ProviderError) of one call, and the requests it took."""
    with ScriptedServer(script) as server:
      try:
        outcome = self.client(server, provider, **overrides).complete("router", MESSAGES)
      except llm.ProviderError as e:
        outcome = e
      return outcome, server.hits

  def test_every_format_answers_and_anthropic_takes_a_v1_base(self):
    for provider in MODELS:
      with self.subTest(provider):
        record, hits = self.ask(provider, Reply("ok", prompt_tokens=7, completion_tokens=2))
        self.assertTrue(record.ok, record.error)
        self.assertEqual((record.reply, record.prompt_tokens, hits), ("ok", 7, 1))

  def test_unknown_model_is_final_in_every_wording(self):
    for provider, (code, wording) in UNKNOWN_MODEL.items():
      with self.subTest(provider):
        error, hits = self.ask(provider, Status(code, wording))
        self.assertIsInstance(error, llm.ProviderError)
        self.assertEqual((error.kind, error.final, hits), ("not_found", True, 1))
        self.assertIn("check the model name", str(error))

  def test_no_credits_is_final(self):
    for provider, (code, wording) in NO_CREDITS.items():
      with self.subTest(provider):
        error, hits = self.ask(provider, Status(code, wording))
        self.assertIsInstance(error, llm.ProviderError)
        self.assertEqual((error.kind, error.final, hits), ("credits", True, 1))
        self.assertIn("no credits or quota left", str(error))

  def test_reply_cap_above_the_models_limit_is_final_and_names_the_limit(self):
    for provider, (wording, limit) in TOO_MANY_TOKENS.items():
      with self.subTest(provider):
        error, hits = self.ask(provider, Status(400, wording), max_tokens=8192)
        self.assertIsInstance(error, llm.ProviderError)
        self.assertEqual((error.kind, error.final, hits), ("max_tokens", True, 1))
        self.assertIn("cannot return 8192 tokens", str(error))
        self.assertIn(f"set --llm_max_tokens to at most {limit}", str(error))

  def test_retry_after_is_read_where_each_provider_puts_it(self):
    for provider in MODELS:
      with self.subTest(provider):
        self.sleeps.clear()
        record, hits = self.ask(provider, Status(429, "slow down", headers=(("Retry-After", "7"),)),
                                Reply("ok"))
        self.assertEqual((record.reply, hits), ("ok", 2))
        self.assertBetween(self.sleeps[0], 7.0, 7.1)
    self.sleeps.clear()
    body = ('{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED",'
            ' "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", '
            '"retryDelay": "9s"}]}}')
    record, _ = self.ask("gemini", Status(429, body=body), Reply("ok"))
    self.assertTrue(record.ok)
    self.assertBetween(self.sleeps[0], 9.0, 9.1)

  def test_refusal_rejects_the_proposal_without_a_retry(self):
    for provider, finish in REFUSED.items():
      with self.subTest(provider):
        record, hits = self.ask(provider, Reply(None, finish_reason=finish))
        self.assertIsInstance(record, llm.LLMRecord)
        self.assertEqual((record.error_kind, hits), ("content_filter", 1))
    policy = ("The response was filtered due to the prompt triggering Azure OpenAI's content "
              "management policy.")
    record, hits = self.ask("openai", Status(400, policy))
    self.assertEqual((record.error_kind, hits), ("content_filter", 1))

  def test_reply_cap_spent_without_text_is_truncated_not_retried(self):
    for provider, finish in CUT.items():
      with self.subTest(provider):
        record, hits = self.ask(provider, Reply(None, finish_reason=finish))
        self.assertEqual((record.error_kind, hits), ("truncated", 1))
        self.assertIn("raise --llm_max_tokens", record.error)

  def test_trickled_reply_ends_at_the_deadline(self):
    for provider in MODELS:
      with self.subTest(provider):
        with ScriptedServer([Reply("warm"), Trickle(0.05)]) as server:
          warm = self.client(server, provider, timeout=30.0)  # LiteLLM's first call is slow.
          warm.complete("router", [{"role": "user", "content": "a first call"}])
          client = self.client(server, provider, timeout=1.0, retries=0)
          start = time.monotonic()
          with self.assertRaises(llm.ProviderError) as caught:
            client.complete("router", MESSAGES)
          self.assertLess(time.monotonic() - start, 2.5)
        self.assertEqual(caught.exception.kind, "timeout")


if __name__ == "__main__":
  absltest.main()
