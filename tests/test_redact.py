"""Secrets never reach a stored or printed line: messages.redact and one_line."""

import logging
import os
from unittest import mock

from absl.testing import absltest

from spark_clrs import llm, messages
from spark_clrs.llm import backend


class RedactTest(absltest.TestCase):

  def test_keys_of_the_environment_are_removed_wherever_they_appear(self):
    env = {"OPENAI_API_KEY": "plainvalue-without-shape", "MY_TOKEN": "tok.en/valu+e==",
           "KEYBOARD": "us"}
    with mock.patch.dict(os.environ, env):
      text = messages.redact("a plainvalue-without-shape b tok.en/valu+e== c us")
    self.assertEqual(text, "a [redacted] b [redacted] c us")  # Short values are no secrets.

  def test_key_shaped_text_is_removed_whatever_its_origin(self):
    cases = {
        "Incorrect API key provided: Bearer abcdefgh12345678": "Bearer [redacted]",
        "x-api-key: sk-ant-api03-abcdefghijkl1234": "x-api-key: [redacted]",
        "GET /v1beta/models/m:generateContent?key=AIzaSyA1234567890abcdefghijklmnop": "key=",
        '{"api_key": "abc123def456ghi789jkl"}': '"api_key": "[redacted]"',
        "sk-or-v1-0123456789abcdef0123456789abcdef": "[redacted]",
    }
    for text, kept in cases.items():
      with self.subTest(text):
        out = messages.redact(text)
        self.assertIn("[redacted]", out)
        self.assertIn(kept, out)

  def test_code_and_ordinary_prose_stay(self):
    for text in ("key = hk.next_rng_key()", "hf_dataset_loader(secret_sauce)",
                 "the key insight: use max aggregation", "token budget of 8192 tokens",
                 "jax.random.PRNGKey(0)"):
      self.assertEqual(messages.redact(text), text)

  def test_registered_values_and_one_line(self):
    messages.register_secret("custom-credential-value")
    line = messages.one_line("failed:\n custom-credential-value\n")
    self.assertEqual(line, "failed: [redacted]")

  def test_records_store_redacted_text_and_litellm_logs_are_redacted(self):
    with mock.patch.dict(os.environ, {"DEEPSEEK_API_KEY": "ds-secret-0123456789"}):
      record = llm.LLMRecord("router", "deepseek/x", [{"role": "user", "content": "hi"}],
                             reply=None, error="401: key ds-secret-0123456789 rejected")
      self.assertEqual(record.to_dict()["error"], "401: key [redacted] rejected")
      with self.assertLogs("LiteLLM", level="WARNING") as logs:
        logging.getLogger("LiteLLM").warning("echo %s", "ds-secret-0123456789")
    self.assertEqual(logs.records[0].getMessage(), "echo [redacted]")
    self.assertIn("LiteLLM", backend.LITELLM_LOGGERS)


if __name__ == "__main__":
  absltest.main()
