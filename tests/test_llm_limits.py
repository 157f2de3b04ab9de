"""What bounds a client: spend caps and prices, rate limits, the request deadline, no network.

Against the scripted server on 127.0.0.1 (tests/llm_server.py); waits go to a recorder
and a fake clock, except for the deadline, which is real time by nature.
"""

import dataclasses
import json
import os
import socket
import threading
import time
from unittest import mock

from absl.testing import absltest
from llm_server import Reply, ScriptedServer, Trickle

from spark_clrs import config, llm
from spark_clrs.llm import deadline, models, ratelimit, tokens

MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Say ok."}]


class FakeClock:
  """A monotonic clock that only moves when the client sleeps."""

  def __init__(self):
    self.now = 1000.0
    self.sleeps: list[float] = []

  def __call__(self) -> float:
    return self.now

  def sleep(self, seconds: float) -> None:
    self.sleeps.append(seconds)
    self.now += seconds


def limit(**flags) -> llm.SpendLimit:
  return llm.SpendLimit.of(config.SearchConfig(**flags))


class SpendGuardTest(absltest.TestCase):

  def client(self, server, spend_limit, **overrides) -> llm.LLMClient:
    cfg = llm.LLMConfig(**{"model": "openai/scripted", "api_base": server.api_base,
                           "max_tokens": 64, "retries": 0, **overrides})
    return llm.LLMClient(cfg, spend_limit=spend_limit, sleep=lambda s: None)

  def test_token_cap_refuses_the_request_that_could_overshoot(self):
    guard = limit(max_llm_tokens=100)
    with ScriptedServer([Reply("ok", prompt_tokens=30, completion_tokens=20)] * 2) as server:
      client = self.client(server, guard)
      self.assertTrue(client.complete("router", MESSAGES).ok)  # ~20 + 64 <= 100.
      self.assertEqual(guard.spent, (50, 0.0))
      client.take_calls()
      with self.assertRaises(llm.SpendExhausted) as caught:
        client.complete("refiner", MESSAGES)  # 50 + ~20 + 64 > 100.
      self.assertEqual(server.hits, 1)  # Not sent.
    error = caught.exception
    self.assertEqual(error.cap, "max_llm_tokens")
    self.assertIsNone(error.record)
    self.assertEqual(client.take_calls(), [])  # A call that sent nothing is no call.
    self.assertIn("--max_llm_tokens=100 would be exceeded: 50 tokens used", str(error))
    self.assertIn("64 reply cap", str(error))
    self.assertNotIn("\n", str(error))

  def test_a_continuation_is_checked_too(self):
    guard = limit(max_llm_tokens=150)
    with ScriptedServer([Reply("part", finish_reason="length", prompt_tokens=40,
                               completion_tokens=64)]) as server:
      client = self.client(server, guard)
      with self.assertRaises(llm.SpendExhausted) as caught:
        client.complete("rewriter", MESSAGES)
      self.assertEqual(server.hits, 1)
    record = caught.exception.record
    self.assertEqual((record.attempts, record.completion_tokens), (1, 64))  # Paid, so kept.
    self.assertEqual(client.take_calls(), [record])
    self.assertEqual(record.error_kind, "spend_limit")

  def test_cost_cap_needs_a_price_and_prices_the_worst_case(self):
    with ScriptedServer([Reply("ok", prompt_tokens=1000, completion_tokens=1000)] * 2) as server:
      with self.assertRaisesRegex(config.ConfigError, "needs a price for openai/scripted"):
        self.client(server, limit(max_cost_usd=0.01))
      guard = limit(max_cost_usd=0.01)
      client = self.client(server, guard, price_per_mtok=(2.0, 4.0))
      self.assertTrue(client.complete("router", MESSAGES).ok)
      self.assertAlmostEqual(guard.spent[1], 0.006)
      client.complete("router", MESSAGES)  # 0.006 + worst case (~20 * 2 + 64 * 4) / 1e6 fits.
      with self.assertRaises(llm.SpendExhausted) as caught:
        client.complete("router", MESSAGES)
      self.assertEqual(server.hits, 2)
    self.assertIn("--max_cost_usd=0.01 would be exceeded: $0.0120 spent", str(caught.exception))

  def test_budget_counts_offline_estimates_and_limits_do_not(self):
    budget = limit(budget="tokens", budget_amount=50)
    cap = limit(max_llm_tokens=50)
    budget.charge(40, None, estimated=True)
    cap.charge(40, None, estimated=True)
    self.assertEqual((budget.used, cap.spent), ((40, 0.0), (0, 0.0)))
    with self.assertRaises(llm.SpendExhausted) as caught:
      budget.check(model=llm.OFFLINE_MODEL, role="router", prompt_tokens=5, max_tokens=10,
                   price=None, estimated=True)
    self.assertEqual(caught.exception.cap, "budget")
    cap.check(model=llm.OFFLINE_MODEL, role="router", prompt_tokens=5, max_tokens=100,
              price=None, estimated=True)  # The limits count billed tokens only.

  def test_a_request_that_timed_out_after_it_was_sent_is_counted_by_its_prompt(self):
    guard = limit(max_llm_tokens=10_000)
    with ScriptedServer([Trickle(0.1)]) as server:
      client = self.client(server, guard, timeout=0.5, price_per_mtok=(1.0, 1.0))
      with self.assertRaises(llm.ProviderError) as caught:
        client.complete("router", MESSAGES)
    record = caught.exception.record
    self.assertEqual(caught.exception.kind, "timeout")
    self.assertGreater(record.prompt_tokens, 5)
    self.assertAlmostEqual(record.cost, record.prompt_tokens / 1e6)
    self.assertEqual(guard.spent[0], record.prompt_tokens)


class PriceTest(absltest.TestCase):

  def test_prices_file_replaces_the_table_and_sets_limits(self):
    path = os.path.join(self.create_tempdir().full_path, "prices.json")
    with open(path, "w") as f:
      json.dump({"sample_spec": {}, "scripted-new": {
          "input_cost_per_token": 1e-6, "output_cost_per_token": 3e-6,
          "max_input_tokens": 64000, "max_output_tokens": 2000}}, f)
    with ScriptedServer([Reply("ok", prompt_tokens=100, completion_tokens=10)]) as server:
      client = llm.LLMClient(llm.LLMConfig(model="openai/scripted-new", api_base=server.api_base,
                                           prices_file=path))
      record = client.complete("router", MESSAGES)
      self.assertEqual(server.requests[0]["max_tokens"], 2000)
    self.assertAlmostEqual(record.cost, 100e-6 + 30e-6)
    self.assertEqual(client.input_window("router"), 64000)

  def test_unreadable_prices_file_refuses_to_start(self):
    with self.assertRaisesRegex(config.ConfigError, "--llm_prices=/nonexistent.json"):
      llm.LLMClient(llm.LLMConfig(model="openai/x", prices_file="/nonexistent.json"))

  def test_zero_price_is_unknown_unless_local_or_given(self):
    zero = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "max_tokens": 8192}
    with mock.patch.object(models.litellm, "get_model_info", return_value=zero):
      table = models.ModelTable()
      self.assertIsNone(table.price("openai/gpt-9-preview"))  # LiteLLM's 0.0 for a new name.
      self.assertEqual(table.price("ollama/llama3").source, "local")
      flagged = models.ModelTable(price_per_mtok=(0.0, 0.0)).price("openai/gpt-9-preview")
      self.assertEqual((flagged.prompt, flagged.source), (0.0, "flag"))
    self.assertEqual(models.ModelTable().price("openai/gpt-4o-mini").source, "litellm")

  def test_unpriced_model_is_named_once_at_start(self):
    with self.assertLogs("spark_clrs.llm", level="WARNING") as logs:
      llm.LLMClient(llm.LLMConfig(models="openai/new-a:0.5,openai/new-b:0.5"))
    named = [line for line in logs.output if "No known price" in line]
    self.assertLen(named, 1)
    self.assertIn("openai/new-a, openai/new-b", named[0])


class RateLimitTest(absltest.TestCase):

  def test_requests_per_minute_are_spaced_across_roles(self):
    clock = FakeClock()
    with ScriptedServer(responder=lambda request: Reply("ok")) as server:
      client = llm.LLMClient(llm.LLMConfig(model="openai/scripted", api_base=server.api_base,
                                           rpm=2), sleep=clock.sleep, clock=clock)
      for i, role in enumerate(("router", "refiner", "rewriter", "router", "refiner")):
        client.complete(role, [{"role": "user", "content": str(i)}])
      self.assertEqual(server.hits, 5)
    self.assertEqual(clock.sleeps, [60.0, 60.0])  # Requests 3 and 5 waited a minute each.

  def test_tokens_per_minute(self):
    clock = FakeClock()
    limiter = ratelimit.MinuteLimiter(tpm=1000, clock=clock)
    self.assertEqual([limiter.reserve(400), limiter.reserve(400)], [0.0, 0.0])
    clock.now += 10
    self.assertEqual(limiter.reserve(400), 50.0)  # Waits until the first booking leaves.
    self.assertEqual(limiter.reserve(5000), 110.0)  # Alone too big: waits for an empty window.

  def test_retry_after_locations_and_forms(self):
    class Error(Exception):
      pass

    for where in ("litellm_response_headers", "headers"):
      error = Error("x")
      setattr(error, where, {"Retry-After": "4"})
      self.assertEqual(ratelimit.retry_after_s(error), 4.0, where)
    error = Error("x")
    error.response = mock.Mock(headers={"retry-after-ms": "250"})
    self.assertEqual(ratelimit.retry_after_s(error), 0.25)
    gemini = Error('{"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", '
                   '"retryDelay": "13s"}]}')
    self.assertEqual(ratelimit.retry_after_s(gemini), 13.0)
    self.assertIsNone(ratelimit.retry_after_s(Error("no hint")))
    self.assertEqual(ratelimit.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT",
                                                 now=1445412480.0), 10.0)


class DeadlineTest(absltest.TestCase):

  def test_trickling_server_times_out_at_the_deadline(self):
    with ScriptedServer([Reply("warm"), Trickle(0.05)]) as server:
      config = llm.LLMConfig(model="deepseek/deepseek-chat", api_base=server.api_base,
                             timeout=30.0, retries=0)
      llm.LLMClient(config).complete("router", [{"role": "user", "content": "a first call"}])
      client = llm.LLMClient(dataclasses.replace(config, timeout=1.0))  # LiteLLM is warm now.
      start = time.monotonic()
      with self.assertRaises(llm.ProviderError) as caught:
        client.complete("router", MESSAGES)
      took = time.monotonic() - start
    self.assertBetween(took, 0.9, 1.0 + deadline.GRACE_S + 1.0)
    self.assertEqual(caught.exception.kind, "timeout")
    self.assertIn("did not answer within --llm_timeout", str(caught.exception))
    time.sleep(0.3)  # The abandoned request ended too (no thread reads the trickle on).
    self.assertEqual([t for t in threading.enumerate() if t.name == "llm-request"], [])


class NoNetworkTest(absltest.TestCase):

  def test_token_counting_never_leaves_the_machine(self):
    reached: list[object] = []
    connect, resolve = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
      if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        reached.append(address)
        raise OSError("network blocked by the test")
      return connect(sock, address)

    def guarded_resolve(host, *args, **kwargs):
      if host not in ("127.0.0.1", "::1", "localhost"):
        reached.append(host)
        raise OSError("network blocked by the test")
      return resolve(host, *args, **kwargs)

    messages = [{"role": "user", "content": "def f(x):\n  return x + 1\n" * 50}]
    with mock.patch.object(socket.socket, "connect", guarded_connect), \
        mock.patch.object(socket, "getaddrinfo", guarded_resolve):
      start = time.monotonic()
      counts = {m: tokens.count(m, messages) for m in (
          "openrouter/meta-llama/llama-3-70b-instruct", "together_ai/meta-llama/Llama-2-70b",
          "cohere/command-r-plus", "ollama/llama3", "openai/gpt-4o",
          "anthropic/claude-3-5-sonnet-20241022", "deepseek/deepseek-chat")}
      client = llm.LLMClient(llm.LLMConfig(model="openrouter/meta-llama/llama-3-70b-instruct",
                                           api_base="http://127.0.0.1:9/v1"))
      counts["client"] = client.count_tokens("router", messages)
      took = time.monotonic() - start
    self.assertEqual(reached, [])
    self.assertLess(took, 10.0)
    for model, n in counts.items():
      self.assertBetween(n, 200, 2000, model)
    self.assertEqual(tokens.counted_as("ollama/llama3"), tokens.ESTIMATE_WITH)
    self.assertEqual(tokens.counted_as("openai/gpt-4o"), "openai/gpt-4o")


if __name__ == "__main__":
  absltest.main()
