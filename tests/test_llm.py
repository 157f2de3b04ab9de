"""The LiteLLM client against a scripted OpenAI-compatible server on 127.0.0.1 (no key)."""

import itertools
import os
from unittest import mock

from absl.testing import absltest
from llm_server import Delay, Raw, Reply, ScriptedServer, Status

from spark_clrs import llm

MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Say ok."}]


class LLMClientTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.sleeps: list[float] = []
    self.tmp = self.create_tempdir()

  def client(self, server: ScriptedServer, cache: llm.ReplyCache | None = None,
             **overrides) -> llm.LLMClient:
    config = llm.LLMConfig(model="openai/scripted", api_base=server.api_base,
                           **{"timeout": 10.0, "retries": 2, "backoff_s": 1.0, **overrides})
    return llm.LLMClient(config, cache, sleep=self.sleeps.append)

  def cache(self) -> llm.ReplyCache:
    cache = llm.ReplyCache(os.path.join(self.tmp.full_path, "llm_cache.sqlite"))
    self.addCleanup(cache.close)
    return cache

  def test_good_reply_is_recorded(self):
    with ScriptedServer([Reply("ok", prompt_tokens=12, completion_tokens=3)]) as server:
      record = self.client(server).complete("router", MESSAGES)
      self.assertEqual(server.requests[0]["messages"], MESSAGES)
      self.assertEqual(server.requests[0]["model"], "scripted")
    self.assertTrue(record.ok, record.error)
    self.assertEqual((record.role, record.model, record.reply), ("router", "openai/scripted", "ok"))
    self.assertEqual((record.prompt_tokens, record.completion_tokens), (12, 3))
    self.assertEqual((record.attempts, record.finish_reason, record.cached), (1, "stop", False))
    self.assertIsNone(record.cost)  # A local model has no price.
    self.assertGreater(record.latency_s, 0.0)
    self.assertEqual(record.messages, MESSAGES)
    self.assertEqual(self.sleeps, [])

  def test_rate_limit_backs_off_then_succeeds(self):
    with ScriptedServer([Status(429, "slow down"), Reply("ok")]) as server:
      record = self.client(server).complete("router", MESSAGES)
      self.assertEqual(server.hits, 2)
    self.assertEqual((record.reply, record.attempts, record.error), ("ok", 2, None))
    self.assertLen(self.sleeps, 1)
    self.assertBetween(self.sleeps[0], 1.0, 1.1)

  def test_retry_after_header_is_honoured(self):
    with ScriptedServer([Status(429, headers=(("Retry-After", "7"),)), Reply("ok")]) as server:
      record = self.client(server).complete("router", MESSAGES)
    self.assertTrue(record.ok)
    self.assertGreaterEqual(self.sleeps[0], 7.0)

  def test_server_errors_exhaust_retries_with_exponential_backoff(self):
    with ScriptedServer([Status(503)] * 3) as server:
      record = self.client(server).complete("refiner", MESSAGES)
      self.assertEqual(server.hits, 3)
    self.assertFalse(record.ok)
    self.assertIsNone(record.reply)
    self.assertEqual(record.attempts, 3)
    self.assertRegex(record.error, r"^(ServiceUnavailable|InternalServer)Error: ")
    self.assertLen(self.sleeps, 2)
    self.assertBetween(self.sleeps[1] / self.sleeps[0], 1.8, 2.2)

  def test_timeout_then_success(self):
    with ScriptedServer([Delay(5.0, Reply("late")), Reply("ok")]) as server:
      record = self.client(server, timeout=0.5).complete("rewriter", MESSAGES)
      self.assertEqual(server.hits, 2)
    self.assertEqual((record.reply, record.attempts), ("ok", 2))

  def test_timeout_every_time_gives_an_error_record(self):
    with ScriptedServer([Delay(5.0)] * 2) as server:
      record = self.client(server, timeout=0.3, retries=1).complete("rewriter", MESSAGES)
    self.assertFalse(record.ok)
    self.assertIn("Timeout", record.error)
    self.assertIn("--llm_timeout", record.error)

  def test_malformed_body_is_retried(self):
    with ScriptedServer([Raw("this is not json"), Raw('{"choices": []}'), Reply("ok")]) as server:
      record = self.client(server).complete("router", MESSAGES)
      self.assertEqual(server.hits, 3)
    self.assertEqual((record.reply, record.attempts), ("ok", 3))

  def test_non_retryable_error_fails_at_once(self):
    with ScriptedServer([Status(401, "bad key")]) as server:
      record = self.client(server).complete("router", MESSAGES)
      self.assertEqual(server.hits, 1)
    self.assertEqual(record.attempts, 1)
    self.assertIn("AuthenticationError", record.error)
    self.assertIn("API key", record.error)
    self.assertEqual(self.sleeps, [])

  def test_missing_key_sends_nothing(self):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with mock.patch.dict(os.environ, env, clear=True):
      record = llm.LLMClient(llm.LLMConfig(model="openai/gpt-4o-mini")).complete("router", MESSAGES)
    self.assertEqual(record.attempts, 0)
    self.assertIn("OPENAI_API_KEY is not set", record.error)

  def test_api_key_is_neither_recorded_nor_cached(self):
    secret = "sk-test-do-not-store-31337"
    cache = self.cache()
    with mock.patch.dict(os.environ, {"OPENAI_API_KEY": secret}):
      with ScriptedServer([Reply("ok")]) as server:
        record = self.client(server, cache).complete("router", MESSAGES)
    self.assertTrue(record.ok)
    self.assertNotIn(secret, repr(record.to_dict()))
    cache.close()
    for name in os.listdir(self.tmp.full_path):
      with open(os.path.join(self.tmp.full_path, name), "rb") as f:
        self.assertNotIn(secret.encode(), f.read(), name)

  def test_second_identical_run_sends_zero_requests(self):
    counter = itertools.count()
    responder = lambda request: Reply(f"reply {next(counter)}")  # noqa: E731
    other = [{"role": "user", "content": "Something else."}]

    def run(server: ScriptedServer) -> list[llm.LLMRecord]:
      client = self.client(server, self.cache())
      return [client.complete("router", MESSAGES), client.complete("router", MESSAGES),
              client.complete("refiner", other)]

    with ScriptedServer(responder=responder) as server:
      first = run(server)
      self.assertEqual(server.hits, 3)
      second = run(server)
      self.assertEqual(server.hits, 3)  # Nothing new was sent.
    self.assertEqual([r.reply for r in first], ["reply 0", "reply 1", "reply 2"])
    self.assertEqual([r.reply for r in second], [r.reply for r in first])
    self.assertEqual([r.sample for r in second], [0, 1, 0])
    self.assertTrue(all(r.cached and r.attempts == 0 for r in second))
    self.assertFalse(any(r.cached for r in first))
    self.assertEqual([(r.prompt_tokens, r.completion_tokens, r.latency_s) for r in second],
                     [(r.prompt_tokens, r.completion_tokens, r.latency_s) for r in first])

  def test_failed_calls_are_not_cached(self):
    with ScriptedServer([Status(400, "bad request"), Reply("ok")]) as server:
      first = self.client(server, self.cache()).complete("router", MESSAGES)
      second = self.client(server, self.cache()).complete("router", MESSAGES)
      self.assertEqual(server.hits, 2)
    self.assertFalse(first.ok)
    self.assertEqual((second.reply, second.cached), ("ok", False))

  def test_request_key_covers_the_whole_request(self):
    base = dict(model="openai/a", api_base=None, messages=MESSAGES, temperature=0.7,
                max_tokens=None, sample=0)
    key = llm.request_key(**base)
    self.assertEqual(key, llm.request_key(**base))
    for field, value in (("model", "openai/b"), ("api_base", "http://x"), ("temperature", 0.2),
                         ("max_tokens", 100), ("sample", 1), ("seed", 0),
                         ("messages", MESSAGES + [{"role": "user", "content": "more"}])):
      self.assertNotEqual(key, llm.request_key(**{**base, field: value}), field)

  def test_no_model_means_offline_and_the_log_says_so(self):
    with self.assertLogs("spark_clrs.llm", level="WARNING") as logs:
      client = llm.LLMClient(llm.LLMConfig(model=""))
    self.assertEqual(client.model, llm.OFFLINE_MODEL)
    self.assertIn("offline proposer spark/offline", logs.output[0])
    self.assertIn("not an LLM", logs.output[0])


if __name__ == "__main__":
  absltest.main()
