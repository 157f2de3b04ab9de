"""Whole searches against misbehaving providers on 127.0.0.1 (issues 11 and 19).

Each test runs the real controller loop (LiteLLM -> proposer -> archive), or the CLI's
main() in-process, with a fake trainer, against tests/llm_server.py scripted to fail the
way real providers do, in their own wording and header locations (OpenAI, OpenRouter,
DeepSeek, Anthropic, Gemini), and asserts what the *run* did: whether it stopped (exit
status and its one line), how many requests that took and how long it waited, which rows
the archive holds, the valid rate, what the resumed run did, and that no key reached any
file of the run directory. The model's answers come from the offline provider's answer
function, so the children are real programs.
"""

import contextlib
import email.utils
import io
import json
import os
import pathlib
import re
import sqlite3
import threading
import time
from unittest import mock

import helpers
from absl.testing import absltest, parameterized
from llm_server import Reply, ScriptedServer, Status, Trickle

from spark_clrs import config
from spark_clrs.llm import offline
from spark_clrs.search import api, archive_db, rundir
from spark_clrs.search.controller import Controller, SearchError

ITERATIONS = 3
CONTEXT_ERROR = ("This model's maximum context length is 8192 tokens. However, your messages "
                 "resulted in 9120 tokens. Please reduce the length of the messages.")
TEMPERATURE_ERROR = ("Unsupported value: 'temperature' does not support 0.7 with this model. "
                     "Only the default (1) value is supported.")
CONTINUE_MARK = "cut off by the length limit"
SECRET = "sk-spark-echo-0123456789abcdef"  # The key a server echoes back in its error.
PROVIDER_KEY = "sk-openai-never-sent-9876543210fedcba"  # Must never reach a custom api_base.


def role_of(request: dict) -> str:
  for message in request["messages"]:
    match = re.search(r'<request role="(\w+)"', str(message.get("content")))
    if match:
      return match.group(1)
  raise AssertionError("request without a <request role=...> tag")


def answer(request: dict) -> str:
  """What a good model answers: the offline provider's reply to the same prompt."""
  return offline.answer(request["messages"], seed=0)


class Switch:
  """A provider that fails (``failure``) while ``down`` and answers well otherwise."""

  def __init__(self, failure, *, after: int = 0):
    self.failure = failure
    self.after = after  # Requests answered well before the outage starts.
    self.down = True
    self.seen = 0
    self._lock = threading.Lock()

  def __call__(self, request: dict):
    with self._lock:
      self.seen += 1
      failing = self.down and self.seen > self.after
    return self.failure if failing else Reply(answer(request))


def base_url(server: ScriptedServer, model: str) -> str:
  """The api_base a user would write for the provider (Anthropic's ending in /v1, too)."""
  return server.url + "/v1beta" if model.startswith("gemini/") else server.api_base


def open_db(run: pathlib.Path) -> tuple[list[archive_db.Candidate], list[dict]]:
  db = archive_db.ArchiveDB(run / "archive.sqlite")
  try:
    return db.candidates(), db.llm_calls()
  finally:
    db.close()


class ProviderRunTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.run_dir = pathlib.Path(self.create_tempdir().full_path) / "run"

  def make_config(self, server: ScriptedServer | None, **overrides) -> config.SearchConfig:
    model = overrides.get("llm_model", "openai/scripted")
    llm = {} if server is None else {"llm_model": model,
                                     "llm_api_base": base_url(server, model)}
    return config.SearchConfig(**{
        "output": str(self.run_dir), "profile": "quick", "iterations": ITERATIONS,
        "feasibility_check": False, "progress": "none", "num_islands": 2,
        "llm_backoff_s": 0.001, "llm_retries": 1, **llm, **overrides})

  def search(self, server: ScriptedServer | None, **overrides) -> dict:
    """Runs (or resumes) the search in ``self.run_dir``; returns its summary.json."""
    Controller(rundir.open_run(self.make_config(server, **overrides)),
               evaluate=helpers.FakeTrainer()).run()
    return self.summary()

  def cli(self, cfg: config.SearchConfig, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The CLI's main() on ``cfg`` (flags parsed in-process, fake trainer): status, stderr."""
    environ = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    stderr = io.StringIO()
    with mock.patch.object(config, "from_flags", return_value=cfg), \
        mock.patch.dict(os.environ, {**environ, **(env or {})}, clear=True), \
        contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
      status = api.main(["spark_clrs.search"], evaluate=helpers.FakeTrainer())
    return status, stderr.getvalue()

  def assert_one_error_line(self, stderr: str, *expected: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    self.assertLen(errors, 1, stderr[-3000:])
    self.assertNotIn("Traceback", stderr)
    for text in expected:
      self.assertIn(text, errors[0])
    return errors[0]

  def summary(self) -> dict:
    return json.loads((self.run_dir / "results" / "summary.json").read_text())

  def log_text(self) -> str:
    return (self.run_dir / "logs" / "search.log").read_text()

  def assert_complete(self, summary: dict) -> list[archive_db.Candidate]:
    candidates, _ = open_db(self.run_dir)
    self.assertEqual([c.id for c in candidates], list(range(ITERATIONS + 1)))
    self.assertTrue(summary["complete"])
    self.assertEqual(summary["proposals"], ITERATIONS)
    self.assertEqual(summary["valid_rate"], 1.0, [c.reason for c in candidates])
    return candidates

  # ---- provider failures --------------------------------------------------------------------

  def test_outage_stops_within_bounded_requests_and_resume_completes(self):
    # The router's request gets through, then every request fails with 503.
    switch = Switch(Status(503, "upstream unavailable"), after=1)
    with ScriptedServer(responder=switch) as server:
      with self.assertRaises(SearchError) as caught:
        self.search(server, llm_max_consecutive_failures=2)
      # Router (1) + refiner (1 + 1 retry), twice: the proposal is asked again once.
      self.assertEqual(server.hits, 5)
      message = str(caught.exception)
      self.assertNotIn("\n", message)
      self.assertIn("LLM provider failure at proposal 1", message)
      self.assertIn("server error", message)
      self.assertIn("re-run the same command", message)
      candidates, calls = open_db(self.run_dir)
      self.assertEqual([c.id for c in candidates], [0])  # No proposal was recorded.
      self.assertEqual([(c["candidate_id"], c["iteration"], c["role"], c["error_kind"], c["cached"])
                        for c in calls],
                       [(None, 1, "router", None, False), (None, 1, "refiner", "server", False),
                        (None, 1, "router", None, True), (None, 1, "refiner", "server", False)])
      self.assertEqual(calls[1]["attempts"], 2)
      hits = server.hits
      switch.down = False  # The provider is back: the same command resumes.
      summary = self.search(server, llm_max_consecutive_failures=2)
      self.assertEqual(server.hits - hits, 3 * ITERATIONS - 1)  # Router 1 came from the cache.
    candidates = self.assert_complete(summary)
    _, calls = open_db(self.run_dir)
    first = [c for c in calls if c["candidate_id"] == 1]
    self.assertEqual([(c["role"], c["cached"]) for c in first],
                     [("router", True), ("refiner", False), ("rewriter", False)])
    self.assertEqual(summary["llm"]["failed_attempt_calls"], 4)
    self.assertTrue(all(c.status == "evaluated" for c in candidates))

  def test_rate_limit_then_success_is_not_a_failure(self):
    script = iter([Status(429, "rate limited"), Status(429, "rate limited")])

    def responder(request):
      return next(script, None) or Reply(answer(request))

    with ScriptedServer(responder=responder) as server:
      summary = self.search(server)
      hits = server.hits
    self.assert_complete(summary)
    _, calls = open_db(self.run_dir)
    self.assertEqual(hits, 3 * ITERATIONS + 2)
    # Retried inside the first call (1 retry), then the proposal was asked again once.
    self.assertEqual(sum(c["candidate_id"] is None for c in calls), 1)
    self.assertEqual(calls[0]["error_kind"], "rate_limit")
    self.assertEqual(calls[1]["attempts"], 1)
    self.assertIn("LLM provider failure (rate_limit, 1 in a row", self.log_text())

  def test_bad_key_stops_the_cli_at_once_and_the_same_command_resumes(self):
    switch = Switch(Status(401, "Incorrect API key provided"))
    with ScriptedServer(responder=switch) as server:
      cfg = self.make_config(server, progress="log")
      status, stderr = self.cli(cfg, {"OPENAI_API_KEY": PROVIDER_KEY})
      self.assertEqual(status, 1, stderr[-2000:])
      self.assertEqual(server.hits, 1, stderr[-3000:])  # A bad key is not worth asking again.
      # A custom api_base never gets the provider's key; the line says how to give one.
      self.assertEqual(server.headers[0]["authorization"], "Bearer no-key-required")
      self.assert_one_error_line(stderr, "refused openai/scripted without an API key",
                                 "--llm_api_key_env")
      candidates, calls = open_db(self.run_dir)
      self.assertEqual([c.id for c in candidates], [0])
      self.assertEqual([(c["candidate_id"], c["error_kind"]) for c in calls], [(None, "auth")])
      switch.down = False
      status, stderr = self.cli(cfg, {"OPENAI_API_KEY": PROVIDER_KEY})
      self.assertEqual(status, 0, stderr[-2000:])
      self.assertFalse(any(PROVIDER_KEY in str(h) for h in server.headers))
    self.assert_complete(self.summary())

  def test_echoed_key_is_stored_nowhere_in_the_run_directory(self):
    def responder(request):
      if role_of(request) == "router":
        return Reply(answer(request))
      # The server quotes the Authorization header it got, as some proxies do.
      return Status(401, f"Incorrect API key provided: {server.headers[-1]['authorization']}")

    with ScriptedServer(responder=responder) as server:
      cfg = self.make_config(server, progress="log", llm_api_key_env="SPARK_TEST_LLM_KEY")
      status, stderr = self.cli(cfg, {"SPARK_TEST_LLM_KEY": SECRET,
                                      "OPENAI_API_KEY": PROVIDER_KEY})
      self.assertEqual(status, 1, stderr[-2000:])
      self.assertEqual(server.headers[1]["authorization"], f"Bearer {SECRET}")  # It was sent.
      self.assertFalse(any(PROVIDER_KEY in str(h) for h in server.headers))
    self.assert_one_error_line(stderr, "set SPARK_TEST_LLM_KEY to a valid key", "[redacted]")
    self.assertNotIn(SECRET, stderr)
    files = [p for p in self.run_dir.rglob("*") if p.is_file()]
    self.assertGreater(len(files), 5)
    for path in files:
      data = path.read_bytes()
      for secret in (SECRET, PROVIDER_KEY):
        self.assertNotIn(secret.encode(), data, path)
        self.assertNotIn(secret[3:].encode(), data, path)  # No partial copy either.

  @parameterized.named_parameters(
      ("openrouter_unknown_model", "openrouter/acme/nope", 400,
       "acme/nope is not a valid model ID", "is not found at"),
      ("deepseek_unknown_model", "deepseek/deepseek-nope", 400, "Model Not Exist",
       "is not found at"),
      ("anthropic_unknown_model", "anthropic/claude-nope", 404, "model: claude-nope",
       "is not found at"),
      ("gemini_unknown_model", "gemini/gemini-nope", 404,
       "models/gemini-nope is not found for API version v1beta", "is not found at"),
      ("openrouter_credits", "openrouter/acme/model", 402,
       "Insufficient credits. Add more using https://openrouter.ai/credits", "no credits"),
      ("openai_max_tokens", "openai/scripted", 400,
       "max_tokens is too large: 8192. This model supports at most 4096 completion tokens, "
       "whereas you provided 8192.", "set --llm_max_tokens to at most 4096"),
  )
  def test_permanent_failure_stops_the_cli_at_once(self, model, code, wording, fix):
    with ScriptedServer(responder=lambda request: Status(code, wording)) as server:
      status, stderr = self.cli(self.make_config(server, llm_model=model, progress="log"))
      self.assertEqual(status, 1, stderr[-2000:])
      self.assertEqual(server.hits, 1, stderr[-3000:])  # Asked once, never again.
    line = self.assert_one_error_line(stderr, "LLM provider failure at proposal 1", fix)
    self.assertIn(model, line)
    candidates, _ = open_db(self.run_dir)
    self.assertEqual([c.id for c in candidates], [0])

  def test_refusals_that_repeat_stop_the_run_and_one_rejects_one_proposal(self):
    seen = {"rewriter": 0}

    def responder(request):
      role = role_of(request)
      if role == "rewriter":
        seen["rewriter"] += 1
        if seen["rewriter"] == 1:  # One content filter hit: that proposal only.
          return Reply(None, finish_reason="content_filter")
      return Reply(answer(request))

    with ScriptedServer(responder=responder) as server:
      summary = self.search(server)
      self.assertEqual(server.hits, 3 * ITERATIONS)  # Not retried.
    candidates, _ = open_db(self.run_dir)
    self.assertEqual(summary["proposals"], ITERATIONS)
    self.assertEqual([c.status for c in candidates[1:]].count("rejected"), 1)
    self.assertIn("refused or blocked the reply", candidates[1].reason)

    self.run_dir = self.run_dir.parent / "always"
    with ScriptedServer(responder=lambda request: Reply("", finish_reason="refusal")) as server:
      with self.assertRaises(SearchError) as caught:
        self.search(server, llm_max_consecutive_failures=2)
      self.assertEqual(server.hits, 2)
    self.assertIn("refused or blocked 2 requests in a row", str(caught.exception))
    self.assertIn("use another model", str(caught.exception))

  def test_retry_after_is_waited_in_seconds_http_date_and_milliseconds(self):
    count = iter(range(1000))
    waits = {0: (("Retry-After", "1"),), 3: None, 6: (("retry-after-ms", "1500"),)}

    def responder(request):
      n = next(count)
      if n in waits:
        headers = waits[n] or (("Retry-After", email.utils.formatdate(time.time() + 2,
                                                                       usegmt=True)),)
        return Status(429, "Rate limit reached for requests", headers=headers)
      return Reply(answer(request))

    with ScriptedServer(responder=responder) as server:
      summary = self.search(server)
      gaps = [server.times[n + 1] - server.times[n] for n in sorted(waits)]
    self.assert_complete(summary)
    self.assertGreaterEqual(gaps[0], 1.0)
    self.assertBetween(gaps[1], 1.0, 3.5)  # An HTTP date has whole seconds.
    self.assertGreaterEqual(gaps[2], 1.5)
    self.assertLess(max(gaps), 5.0)

  def test_trickling_server_is_stopped_at_the_deadline(self):
    with ScriptedServer(responder=lambda request: Trickle(0.1)) as server:
      start = time.monotonic()
      with self.assertRaises(SearchError) as caught:
        self.search(server, llm_timeout=1.0, llm_retries=1, llm_max_consecutive_failures=1)
      took = time.monotonic() - start
      self.assertIn(server.hits, (1, 2))  # A request LiteLLM is slow to send may never arrive.
    self.assertLess(took, 12.0)
    message = str(caught.exception)
    self.assertIn("did not answer within --llm_timeout 2 time(s)", message)
    self.assertRegex(message, r"waited [2-5] s on the provider")
    _, calls = open_db(self.run_dir)
    self.assertEqual(calls[0]["error_kind"], "timeout")
    self.assertGreater(calls[0]["prompt_tokens"], 0)  # Sent, so counted by its prompt.

  # ---- whole replies ------------------------------------------------------------------------

  def test_lone_closing_think_tag(self):
    # The chat template opened <think>; the reasoning drafts another scope and a code block.
    draft = ('Let me think. {"scope": "OPERATOR", "rationale": "draft"} or maybe\n'
             "```python\nbroken = (\n```\nChange: a drafted directive\n</think>\n\n")

    def responder(request):
      if role_of(request) == "router":
        return Reply(draft + '{"scope": "ACTION", "rationale": "the real answer"}')
      return Reply(draft + answer(request))

    with ScriptedServer(responder=responder) as server:
      summary = self.search(server)
    candidates = self.assert_complete(summary)
    for c in candidates[1:]:
      self.assertEqual(c.scope, ("ACTION",))
      self.assertEqual(c.decision["rationale"], "the real answer")
      self.assertNotIn("drafted", c.directive)
      self.assertNotIn("broken", c.code)

  def test_replies_cut_by_the_length_limit_are_continued(self):
    def responder(request):
      last = request["messages"][-1]["content"]
      if CONTINUE_MARK in last:  # Continue the partial reply sent back as the assistant turn.
        partial = request["messages"][-2]["content"]
        return Reply(answer({"messages": request["messages"][:-2]})[len(partial):])
      text = answer(request)
      if role_of(request) == "rewriter":
        return Reply(text[:len(text) // 2], finish_reason="length")
      return Reply(text)

    with ScriptedServer(responder=responder) as server:
      summary = self.search(server, llm_max_tokens=1024)
      self.assertTrue(all(r["max_tokens"] == 1024 for r in server.requests))
    self.assert_complete(summary)
    _, calls = open_db(self.run_dir)
    rewrites = [c for c in calls if c["role"] == "rewriter"]
    self.assertLen(rewrites, ITERATIONS)
    self.assertTrue(all((c["continuations"], c["attempts"], c["finish_reason"]) == (1, 2, "stop")
                        for c in rewrites))

  def test_context_length_error_shrinks_the_prompt_and_retries_once(self):
    def responder(request):
      user = request["messages"][-1]["content"]
      if role_of(request) == "router" and "<lineage>\n(none)\n</lineage>" not in user:
        return Status(400, CONTEXT_ERROR)
      return Reply(answer(request))

    with ScriptedServer(responder=responder) as server:
      summary = self.search(server)
    candidates = self.assert_complete(summary)
    _, calls = open_db(self.run_dir)
    refused = [c for c in calls if c["error_kind"] == "context_window"]
    self.assertNotEmpty(refused)
    self.assertTrue(all(c["candidate_id"] is not None for c in refused))  # Not a failure.
    shrunk = [c for c in candidates[1:] if "context" in c.decision]
    self.assertLen(shrunk, len(refused))
    for c in shrunk:
      note = c.decision["context"]["router"]
      self.assertTrue(note["retried"])
      self.assertGreater(note["dropped"]["lineage"], 0)
      self.assertIn("ContextWindowExceededError", note["context_error"])

  def test_model_that_refuses_the_temperature(self):
    def responder(request):
      if "temperature" in request:
        return Status(400, TEMPERATURE_ERROR)
      return Reply(answer(request))

    with ScriptedServer(responder=responder) as server:
      summary = self.search(server)
      with_temperature = sum("temperature" in r for r in server.requests)
    self.assert_complete(summary)
    self.assertEqual(with_temperature, 1)  # Refused once, never sent again.
    self.assertEqual(self.log_text().count("refuses the temperature parameter"), 1)
    _, calls = open_db(self.run_dir)
    self.assertEqual(calls[0]["attempts"], 2)
    self.assertFalse(any(c["error"] for c in calls))

  # ---- models, spend, labels ----------------------------------------------------------------

  def test_mixture_of_two_models_is_seeded_and_recorded(self):
    models = []
    for name in ("a", "b"):
      self.run_dir = self.run_dir.parent / name
      with ScriptedServer(responder=lambda request: Reply(answer(request))) as server:
        summary = self.search(server, llm_model="", router_model="openai/router-model",
                              llm_models="openai/alpha:0.5,openai/beta:0.5", iterations=6)
        sent = [r["model"] for r in server.requests]
      _, calls = open_db(self.run_dir)
      self.assertEqual([c["model"] for c in calls], ["openai/" + m for m in sent])
      self.assertEqual({c["model"] for c in calls if c["role"] == "router"},
                       {"openai/router-model"})
      self.assertEqual({c["model"] for c in calls if c["role"] != "router"},
                       {"openai/alpha", "openai/beta"})
      self.assertEqual(set(summary["llm"]["by_model"]),
                       {"openai/router-model", "openai/alpha", "openai/beta"})
      self.assertEqual(summary["valid_rate"], 1.0)
      models.append([c["model"] for c in calls])
    self.assertEqual(models[0], models[1])  # The same seed draws the same models.

  def test_cost_cap_refuses_to_start_for_an_unpriced_model(self):
    with ScriptedServer(responder=lambda request: Reply(answer(request))) as server:
      for i, caps in enumerate(({"max_cost_usd": 1.0}, {"budget": "cost", "budget_amount": 1.0})):
        self.run_dir = self.run_dir.parent / f"refused{i}"
        with self.assertRaises(config.ConfigError) as caught:
          self.search(server, **caps)
        self.assertIn("needs a price for openai/scripted", str(caught.exception))
        self.assertIn("--llm_price_per_mtok", str(caught.exception))
      self.assertEqual(server.hits, 0)
      self.run_dir = self.run_dir.parent / "free"
      summary = self.search(server, max_cost_usd=1.0, llm_price_per_mtok=(0.0, 0.0))  # Free.
    self.assert_complete(summary)

  def test_empty_replies_reject_their_proposal_and_are_never_cached(self):
    empties = iter([Reply(""), Reply(None, finish_reason="length")])

    def responder(request):
      if role_of(request) == "rewriter":
        return next(empties, None) or Reply(answer(request))
      return Reply(answer(request))

    with ScriptedServer(responder=responder) as server:
      summary = self.search(server)
      self.assertEqual(server.hits, 3 * ITERATIONS)  # Neither was retried.
    candidates, _ = open_db(self.run_dir)
    self.assertEqual(summary["proposals"], ITERATIONS)
    self.assertIn("the reply is empty", candidates[1].reason)
    self.assertIn("without an answer", candidates[2].reason)
    self.assertIn("--llm_max_tokens", candidates[2].reason)
    conn = sqlite3.connect(self.run_dir / "llm_cache.sqlite")
    replies = [r[0] for r in conn.execute("SELECT reply FROM replies")]
    conn.close()
    self.assertLen(replies, 3 * ITERATIONS - 2)
    self.assertTrue(all(r.strip() for r in replies))

  def test_spend_guard_stops_before_the_request_that_would_overshoot(self):
    limit = 9000
    with ScriptedServer(responder=lambda request: Reply(answer(request))) as server:
      summary = self.search(server, max_llm_tokens=limit, llm_max_tokens=1000,
                            llm_price_per_mtok=(1.0, 2.0))
      sent = server.hits
      self.assertFalse(summary["complete"])
      self.assertIn(f"--max_llm_tokens={limit} would be exceeded", summary["stop_reason"])
      self.assertIn("the request was not sent", summary["stop_reason"])
      self.assertLessEqual(summary["llm"]["total_tokens"], limit)  # Never overshot.
      self.assertLess(sent, 3 * ITERATIONS)
      _, calls = open_db(self.run_dir)
      self.assertLen(calls, sent)  # Every request sent is stored; the refused one was not sent.
      resumed = self.search(server, max_llm_tokens=0, llm_price_per_mtok=(1.0, 2.0))
    self.assert_complete(resumed)
    self.assertIsNone(resumed["stop_reason"])

  def test_offline_answers_are_labelled_offline(self):
    summary = self.search(None)
    candidates = self.assert_complete(summary)
    for c in candidates[1:]:
      self.assertEqual(c.decision["answered_by"], "offline")
      self.assertEqual(c.decision["scope_source"], "offline")
    self.assertRegex(self.log_text(), r"proposal 1: .*scope \w+ \[offline\]")
    self.assertEqual(summary["answered_by"], {"offline": ITERATIONS})
    self.assertEqual(summary["llm"]["total_tokens"], 0)  # Estimates are not spend ...
    self.assertGreater(summary["llm"]["estimated_tokens"], 0)  # ... they are kept apart.
    _, calls = open_db(self.run_dir)
    self.assertTrue(all(c["estimated"] for c in calls))


class ArchiveMigrationTest(absltest.TestCase):

  def test_an_archive_of_schema_1_stays_readable_and_takes_failed_attempts(self):
    path = pathlib.Path(self.create_tempdir().full_path) / "archive.sqlite"
    old = archive_db._SCHEMA.replace(
        archive_db._SCHEMA[archive_db._SCHEMA.index("CREATE TABLE IF NOT EXISTS llm_calls"):
                           archive_db._SCHEMA.index("CREATE TABLE IF NOT EXISTS events")],
        OLD_LLM_CALLS)
    conn = sqlite3.connect(path)
    conn.executescript(old)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO candidates (id, strategy, decision, status, created_at) "
                 "VALUES (0, 'seed', '{}', 'evaluated', 0)")
    conn.execute("INSERT INTO llm_calls (candidate_id, role, model, messages, reply, "
                 "prompt_tokens, completion_tokens, latency_s, cached) "
                 "VALUES (0, 'router', 'openai/x', '[]', 'ok', 5, 6, 0.1, 0)")
    conn.commit()
    conn.close()
    db = archive_db.ArchiveDB(path)
    try:
      db.insert_llm_call(None, {"role": "refiner", "model": "openai/x", "error": "down",
                                "error_kind": "server", "attempts": 4}, iteration=1)
      calls = db.llm_calls()
    finally:
      db.close()
    self.assertEqual([(c["candidate_id"], c["iteration"], c["reply"], c["error_kind"])
                      for c in calls], [(0, 0, "ok", None), (None, 1, None, "server")])
    self.assertEqual(calls[1]["attempts"], 4)


# The llm_calls table as schema 1 created it.
OLD_LLM_CALLS = """CREATE TABLE IF NOT EXISTS llm_calls (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  candidate_id INTEGER NOT NULL REFERENCES candidates(id),
  role TEXT NOT NULL, model TEXT, messages TEXT NOT NULL, reply TEXT,
  prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost REAL,
  latency_s REAL NOT NULL, error TEXT, cached INTEGER NOT NULL, request_key TEXT
);
"""


if __name__ == "__main__":
  absltest.main()
