"""The LiteLLM client against a scripted OpenAI-compatible server on 127.0.0.1 (no key)."""

import email.utils
import itertools
import json
import os
import time
from unittest import mock

from absl.testing import absltest
from llm_server import Delay, Raw, Reply, ScriptedServer, Status

from spark_clrs import llm
from spark_clrs.llm import endpoint

MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Say ok."}]


class LLMClientTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.sleeps: list[float] = []
    self.tmp = self.create_tempdir()

  def client(self, server: ScriptedServer, cache: llm.ReplyCache | None = None,
             **overrides) -> llm.LLMClient:
    config = llm.LLMConfig(api_base=server.api_base,
                           **{"model": "openai/scripted", "timeout": 10.0, "retries": 2,
                              "backoff_s": 1.0, **overrides})
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

  def test_retry_after_header_is_honoured_in_every_form(self):
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    forms = (("Retry-After", "7"), ("retry-after-ms", "7500"), ("Retry-After", date))
    with ScriptedServer([a for form in forms for a in (Status(429, headers=(form,)),
                                                       Reply("ok"))]) as server:
      client = self.client(server, backoff_max_s=1.0)  # Longer than the backoff cap.
      for i in range(len(forms)):
        self.assertTrue(client.complete("router", [{"role": "user", "content": str(i)}]).ok)
    self.assertLen(self.sleeps, 3)
    self.assertBetween(self.sleeps[0], 7.0, 7.1)
    self.assertBetween(self.sleeps[1], 7.5, 7.6)
    self.assertBetween(self.sleeps[2], 17.0, 20.5)

  def test_retry_after_beyond_a_quarter_hour_stops_and_the_pause_honours_it(self):
    with ScriptedServer([Status(429, headers=(("Retry-After", "3600"),))]) as server:
      with self.assertRaises(llm.ProviderError) as caught:
        self.client(server).complete("router", MESSAGES)
      self.assertEqual(server.hits, 1)
    self.assertTrue(caught.exception.final)
    self.assertIn("asks to wait 3600 s", str(caught.exception))
    with ScriptedServer([Status(429, headers=(("Retry-After", "30"),))]) as server:
      client = self.client(server, retries=0)
      with self.assertRaises(llm.ProviderError) as caught:
        client.complete("router", MESSAGES)
      self.assertFalse(caught.exception.final)
      client.wait_before_retry()  # The controller's pause before asking again.
    self.assertBetween(self.sleeps[-1], 29.0, 30.0)

  def test_server_errors_exhaust_retries_with_exponential_backoff(self):
    client = None
    with ScriptedServer([Status(503)] * 3) as server:
      client = self.client(server)
      with self.assertRaises(llm.ProviderError) as caught:
        client.complete("refiner", MESSAGES)
      self.assertEqual(server.hits, 3)
    error = caught.exception
    self.assertEqual((error.kind, error.final, error.consecutive), ("server", False, 1))
    self.assertIsNone(error.record.reply)
    self.assertEqual(error.record.attempts, 3)
    self.assertIn("server error 3 time(s)", str(error))
    self.assertIn("down or overloaded", str(error))
    self.assertNotIn("\n", str(error))
    self.assertLen(self.sleeps, 2)
    self.assertBetween(self.sleeps[1] / self.sleeps[0], 1.8, 2.2)
    # The failed call is in the journal, so the controller can store it.
    self.assertEqual([r.error_kind for r in client.take_calls()], ["server"])

  def test_timeout_then_success(self):
    with ScriptedServer([Delay(5.0, Reply("late")), Reply("ok")]) as server:
      record = self.client(server, timeout=1.5).complete("rewriter", MESSAGES)
      self.assertEqual(server.hits, 2)
    self.assertEqual((record.reply, record.attempts), ("ok", 2))

  def test_timeout_every_time_is_a_provider_failure(self):
    with ScriptedServer([Delay(5.0)] * 2) as server:
      with self.assertRaises(llm.ProviderError) as caught:
        self.client(server, timeout=0.3, retries=1).complete("rewriter", MESSAGES)
    self.assertEqual(caught.exception.kind, "timeout")
    self.assertIn("--llm_timeout", str(caught.exception))

  def test_malformed_body_is_retried(self):
    with ScriptedServer([Raw("this is not json"), Raw('{"choices": []}'), Reply("ok")]) as server:
      record = self.client(server).complete("router", MESSAGES)
      self.assertEqual(server.hits, 3)
    self.assertEqual((record.reply, record.attempts), ("ok", 3))

  def test_bad_key_is_final_at_once_and_names_the_variable(self):
    with mock.patch.dict(os.environ, {"MY_SERVER_KEY": "server-key-0123456789"}):
      with ScriptedServer([Status(401, "bad key")]) as server:
        with self.assertRaises(llm.ProviderError) as caught:
          self.client(server, api_key_env="MY_SERVER_KEY").complete("router", MESSAGES)
        self.assertEqual(server.hits, 1)
        self.assertEqual(server.headers[0]["authorization"], "Bearer server-key-0123456789")
    error = caught.exception
    self.assertEqual((error.kind, error.final, error.record.attempts), ("auth", True, 1))
    self.assertIn("set MY_SERVER_KEY to a valid key", str(error))
    self.assertEqual(self.sleeps, [])

  def test_custom_api_base_never_gets_the_provider_key(self):
    with mock.patch.dict(os.environ, {"OPENAI_API_KEY": "sk-provider-0123456789abcdef"}):
      with ScriptedServer([Reply("ok"), Status(401, "this server wants a key")]) as server:
        client = self.client(server)
        self.assertTrue(client.complete("router", MESSAGES).ok)
        with self.assertRaises(llm.ProviderError) as caught:
          client.complete("refiner", MESSAGES)
        sent = [h["authorization"] for h in server.headers]
    self.assertEqual(sent, ["Bearer no-key-required"] * 2)
    self.assertIn("name the environment variable that holds its key with --llm_api_key_env",
                  str(caught.exception))

  def test_missing_key_variable_named_by_the_flag_sends_nothing(self):
    with ScriptedServer([Reply("ok")]) as server:
      with self.assertRaises(llm.ProviderError) as caught:
        self.client(server, api_key_env="SPARK_UNSET_KEY_VARIABLE").complete("router", MESSAGES)
      self.assertEqual(server.hits, 0)
    self.assertTrue(caught.exception.final)
    self.assertIn("SPARK_UNSET_KEY_VARIABLE (--llm_api_key_env) is not set", str(caught.exception))

  def test_unknown_model_names_the_model_flag(self):
    with ScriptedServer([Status(404, "The model `nope` does not exist")]) as server:
      with self.assertRaises(llm.ProviderError) as caught:
        self.client(server).complete("refiner", MESSAGES)
    self.assertEqual((caught.exception.kind, caught.exception.final), ("not_found", True))
    self.assertIn("--refiner_model / --llm_model", str(caught.exception))

  def test_connection_refused_names_the_api_base(self):
    client = llm.LLMClient(llm.LLMConfig(model="openai/x", api_base="http://127.0.0.1:9/v1",
                                         retries=1, backoff_s=0.01, timeout=5.0),
                           sleep=self.sleeps.append)
    with self.assertRaises(llm.ProviderError) as caught:
      client.complete("router", MESSAGES)
    self.assertEqual(caught.exception.kind, "connection")
    self.assertIn("cannot connect to http://127.0.0.1:9/v1", str(caught.exception))
    self.assertIn("--llm_api_base", str(caught.exception))
    self.assertEqual(caught.exception.record.attempts, 2)

  def test_consecutive_failures_become_final_and_a_success_resets_them(self):
    with ScriptedServer([Status(503), Reply("ok"), Status(503), Status(503)]) as server:
      client = self.client(server, retries=0, max_consecutive_failures=2)
      with self.assertRaises(llm.ProviderError) as first:
        client.complete("router", MESSAGES)
      self.assertTrue(client.complete("router", MESSAGES).ok)
      with self.assertRaises(llm.ProviderError) as second:
        client.complete("router", MESSAGES)
      with self.assertRaises(llm.ProviderError) as third:
        client.complete("router", MESSAGES)
    self.assertEqual([e.exception.final for e in (first, second, third)], [False, False, True])
    self.assertEqual(third.exception.consecutive, 2)

  def test_context_length_error_is_a_failed_record_not_a_provider_failure(self):
    with ScriptedServer([Status(400, "This model's maximum context length is 8192 tokens. "
                                     "However, your messages resulted in 9000 tokens.")]) as server:
      record = self.client(server).complete("router", MESSAGES)
      self.assertEqual(server.hits, 1)
    self.assertFalse(record.ok)
    self.assertEqual(record.error_kind, "context_window")

  def test_missing_key_sends_nothing(self):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with mock.patch.dict(os.environ, env, clear=True):
      with self.assertRaises(llm.ProviderError) as caught:
        llm.LLMClient(llm.LLMConfig(model="openai/gpt-4o-mini")).complete("router", MESSAGES)
    self.assertEqual((caught.exception.kind, caught.exception.final), ("auth", True))
    self.assertEqual(caught.exception.record.attempts, 0)
    self.assertIn("OPENAI_API_KEY is not set", str(caught.exception))

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

  # ---- whole replies ------------------------------------------------------------------------

  def test_reasoning_is_removed_in_every_form(self):
    replies = [Reply("<think>draft {\"scope\": \"OPERATOR\"}</think>\nfinal"),
               Reply("<thinking>a</thinking> final"),
               Reply("the template opened the tag\n{\"scope\": \"OPERATOR\"}\n</think>\n\nfinal"),
               Reply("final", reasoning_content="thought in a field"),
               Reply("final <think>cut off while thinking")]
    with ScriptedServer(replies) as server:
      client = self.client(server)
      records = [client.complete("router", [*MESSAGES, {"role": "user", "content": str(i)}])
                 for i in range(len(replies))]
    self.assertEqual([r.reply for r in records], ["final"] * len(replies))
    for r in records:
      self.assertTrue(r.reasoning)
      self.assertNotIn("final", r.reasoning)

  def test_reply_cut_by_the_length_limit_is_continued(self):
    head, tail = "Here.\n```python\nx = 1\n", "```python\ny = 2\n```\n"
    with ScriptedServer([Reply(head, finish_reason="length", completion_tokens=5),
                         Reply(tail, completion_tokens=4)]) as server:
      record = self.client(server, max_tokens=64).complete("rewriter", MESSAGES)
      second = server.requests[1]
    self.assertTrue(record.ok)
    self.assertEqual(record.reply, "Here.\n```python\nx = 1\ny = 2\n```")  # Fence not reopened.
    self.assertEqual((record.continuations, record.attempts, record.finish_reason),
                     (1, 2, "stop"))
    self.assertEqual(record.completion_tokens, 9)
    self.assertEqual(second["messages"][-2], {"role": "assistant", "content": head})
    self.assertIn("cut off by the length limit", second["messages"][-1]["content"])
    self.assertEqual(second["max_tokens"], 64)

  def test_reply_still_cut_after_the_continuations_keeps_finish_reason_length(self):
    with ScriptedServer([Reply("a", finish_reason="length")] * 3) as server:
      record = self.client(server, max_continuations=2).complete("rewriter", MESSAGES)
      self.assertEqual(server.hits, 3)
    self.assertEqual((record.reply, record.finish_reason, record.continuations),
                     ("aaa", "length", 2))

  def test_empty_replies_are_rejected_by_finish_reason_and_never_cached(self):
    cache = self.cache()
    cases = ((Reply(""), "empty", "the reply is empty (finish reason stop)"),
             (Reply(None, finish_reason="length"), "truncated", "raise --llm_max_tokens"),
             (Reply(None, finish_reason="content_filter"), "content_filter", "refused or blocked"),
             (Reply("<think>only thinking</think>"), "empty", ""))
    with ScriptedServer([case[0] for case in cases]) as server:
      client = self.client(server, cache)
      records = [client.complete("rewriter", [{"role": "user", "content": str(i)}])
                 for i in range(len(cases))]
      self.assertEqual(server.hits, len(cases))  # None of them was retried.
    for record, (_, kind, text) in zip(records, cases, strict=True):
      self.assertFalse(record.ok)
      self.assertEqual(record.error_kind, kind)
      self.assertIn(text, record.error)
    self.assertIn("only thinking", records[3].reasoning)
    self.assertLen(cache, 0)
    with self.assertRaisesRegex(ValueError, "never cached"):
      cache.put("k", "m", MESSAGES, " \n", {})

  def test_reply_cap_spent_on_reasoning_is_raised_to_the_known_limit(self):
    table = self.prices_file({"openai/scripted": {"max_output_tokens": 2048}})
    with ScriptedServer([Reply(None, finish_reason="length", reasoning_content="hmm"),
                         Reply("ok")]) as server:
      record = self.client(server, prices_file=table, max_tokens=512).complete("rewriter",
                                                                                MESSAGES)
      caps = [r["max_tokens"] for r in server.requests]
    self.assertEqual(caps, [512, 1024])
    self.assertEqual((record.reply, record.attempts, record.reasoning), ("ok", 2, "hmm"))

  def test_provider_error_inside_the_reply_is_retried(self):
    failed = Reply("", finish_reason="error",
                   choice=(("error", {"code": 502, "message": "upstream died"}),
                           ("native_finish_reason", "error")))
    with ScriptedServer([failed, Reply("ok")]) as server:
      client = llm.LLMClient(llm.LLMConfig(model="openrouter/acme/model",
                                           api_base=server.api_base, backoff_s=1.0),
                             sleep=self.sleeps.append)
      record = client.complete("router", MESSAGES)
      self.assertEqual(server.hits, 2)
    self.assertEqual((record.reply, record.attempts), ("ok", 2))
    self.assertLen(self.sleeps, 1)

  def test_refusals_in_a_row_are_final(self):
    with ScriptedServer([Reply(None, finish_reason="content_filter")] * 3) as server:
      client = self.client(server, max_consecutive_failures=3)
      first = client.complete("router", [{"role": "user", "content": "1"}])
      second = client.complete("router", [{"role": "user", "content": "2"}])
      with self.assertRaises(llm.ProviderError) as caught:
        client.complete("router", [{"role": "user", "content": "3"}])
    self.assertEqual((first.error_kind, second.error_kind), ("content_filter",) * 2)
    self.assertEqual((caught.exception.kind, caught.exception.final), ("refusal", True))
    self.assertIn("refused or blocked 3 requests in a row", str(caught.exception))

  def test_default_reply_cap_is_the_models_own_at_most_8192(self):
    client = llm.LLMClient(llm.LLMConfig(model="openai/gpt-4"))
    self.assertEqual(client.max_tokens_for("openai/gpt-4"), 4096)
    self.assertEqual(client.max_tokens_for("deepseek/deepseek-chat"), 8192)
    self.assertEqual(client.max_tokens_for("openai/gpt-4o-mini"), 8192)  # 16384, capped.
    self.assertEqual(client.max_tokens_for("openai/unknown-model"), 8192)
    self.assertEqual(llm.LLMClient(llm.LLMConfig(max_tokens=100)).max_tokens_for("x/y"), 100)

  def test_prompt_budget_leaves_room_for_the_reply(self):
    def budget(window: int, max_tokens: int | None = None) -> int | None:
      config = llm.LLMConfig(model="openai/local", max_input_tokens=window, max_tokens=max_tokens)
      return llm.LLMClient(config).prompt_budget("rewriter")

    self.assertEqual(budget(100_000), int((100_000 - 8192) * 0.9))
    self.assertEqual(budget(10_000), int(5_000 * 0.9))  # At most half the window for the reply.
    self.assertEqual(budget(10_000, max_tokens=1000), int(9_000 * 0.9))
    self.assertIsNone(llm.LLMClient(llm.LLMConfig(model="openai/local")).prompt_budget("router"))
    with ScriptedServer([Reply("ok")]) as server:  # The request's cap fits what is left.
      self.client(server, max_input_tokens=3000).complete("router", MESSAGES)
      sent = server.requests[0]["max_tokens"]
    self.assertBetween(sent, 2900, 2999)

  def test_extra_body_reaches_the_provider_and_the_request_key(self):
    body = '{"options": {"num_ctx": 32768}, "top_k": 5}'
    with ScriptedServer([Reply("ok")]) as server:
      self.client(server, extra_body=body).complete("router", MESSAGES)
      request = server.requests[0]
    self.assertEqual((request["options"], request["top_k"]), ({"num_ctx": 32768}, 5))
    base = dict(model="openai/a", api_base=None, messages=MESSAGES, temperature=0.7,
                max_tokens=None, sample=0)
    self.assertNotEqual(llm.request_key(**base), llm.request_key(**base, extra_body=body))
    ollama = endpoint.provider_options("ollama_chat/qwen", json.loads(body))
    self.assertEqual(ollama, {"num_ctx": 32768, "top_k": 5})  # Merged into LiteLLM's options.

  def prices_file(self, table: dict) -> str:
    path = os.path.join(self.tmp.full_path, "prices.json")
    with open(path, "w") as f:
      json.dump(table, f)
    return path

  def test_temperature_refused_once_is_never_sent_again(self):
    def responder(request):
      if "temperature" in request:
        return Status(400, "Unsupported value: 'temperature' does not support 0.7 with this "
                           "model. Only the default (1) value is supported.")
      return Reply("ok")

    with ScriptedServer(responder=responder) as server:
      client = self.client(server)
      with self.assertLogs("spark_clrs.llm", level="WARNING") as logs:
        first = client.complete("router", MESSAGES)
        second = client.complete("refiner", MESSAGES)
      self.assertEqual(server.hits, 3)
      self.assertNotIn("temperature", server.requests[2])
    self.assertEqual((first.reply, second.reply), ("ok", "ok"))
    self.assertEqual((first.attempts, first.temperature_sent, second.temperature_sent),
                     (2, False, False))
    self.assertLen([line for line in logs.output if "refuses the temperature" in line], 1)

  def test_mixture_draws_are_seeded_recorded_and_replayed(self):
    def run(seed):
      with ScriptedServer(responder=lambda request: Reply(request["model"])) as server:
        client = self.client(server, model=None, seed=seed,
                             models="openai/alpha:0.7,openai/beta:0.3",
                             role_models=(("router", "openai/gamma"),))
        records = [client.complete("rewriter", [{"role": "user", "content": f"q{i}"}])
                   for i in range(30)]
        router = client.complete("router", MESSAGES)
      self.assertEqual(router.model, "openai/gamma")
      for r in records:  # The recorded model is the one that answered.
        self.assertEqual(r.model, "openai/" + r.reply)
      return [r.model for r in records]

    first = run(0)
    self.assertEqual(set(first), {"openai/alpha", "openai/beta"})
    self.assertGreater(first.count("openai/alpha"), first.count("openai/beta"))
    self.assertEqual(run(0), first)
    self.assertNotEqual(run(1), first)

  def test_price_per_mtok_prices_unpriced_models(self):
    with ScriptedServer([Reply("ok", prompt_tokens=1000, completion_tokens=500)]) as server:
      record = self.client(server, price_per_mtok=(2.0, 10.0)).complete("router", MESSAGES)
    self.assertAlmostEqual(record.cost, (1000 * 2.0 + 500 * 10.0) / 1e6)

  def test_offline_counts_are_estimates(self):
    client = llm.LLMClient(llm.LLMConfig(model=""))
    self.assertEqual(client.input_window("router"), None)
    self.assertTrue(llm.LLMRecord("router", llm.OFFLINE_MODEL, [], "x").answered_by == "offline")

  def test_no_model_means_offline_and_the_log_says_so(self):
    with self.assertLogs("spark_clrs.llm", level="WARNING") as logs:
      client = llm.LLMClient(llm.LLMConfig(model=""))
    self.assertEqual(client.model, llm.OFFLINE_MODEL)
    self.assertIn("offline proposer spark/offline", logs.output[0])
    self.assertIn("not an LLM", logs.output[0])


if __name__ == "__main__":
  absltest.main()
