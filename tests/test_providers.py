"""Whole searches against a misbehaving OpenAI-compatible provider on 127.0.0.1 (issue 11).

Each test runs the real controller loop (LiteLLM -> proposer -> archive) with a fake
trainer, against tests/llm_server.py scripted to fail the way real providers do, and
asserts what the *run* did: whether it stopped (and with which one line), how many
requests that took, which rows the archive holds, the valid rate, and what the resumed
run did. The model's answers come from the offline provider's answer function, so the
children are real programs.
"""

import contextlib
import importlib
import io
import json
import os
import pathlib
import re
import sqlite3
import threading
import types
from unittest import mock

from absl.testing import absltest
from llm_server import Reply, ScriptedServer, Status

from spark_clrs import config
from spark_clrs.llm import offline
from spark_clrs.search import archive_db, rundir
from spark_clrs.search.controller import Controller, SearchError

ITERATIONS = 3
CONTEXT_ERROR = ("This model's maximum context length is 8192 tokens. However, your messages "
                 "resulted in 9120 tokens. Please reduce the length of the messages.")
TEMPERATURE_ERROR = ("Unsupported value: 'temperature' does not support 0.7 with this model. "
                     "Only the default (1) value is supported.")
CONTINUE_MARK = "cut off by the length limit"


class FakeEvaluate:
  """Deterministic metrics from the program text (no JAX): every program trains."""

  def __call__(self, program_path, profile, seeds, *, workdir, limits):
    del profile, seeds, workdir, limits
    text = pathlib.Path(program_path).read_text()
    score = (sum(text.encode()) % 997) / 997
    return types.SimpleNamespace(status="ok", reason="", metrics={
        "ood_val_acc": 0.3 + 0.5 * score, "ood_acc": 0.3, "val_acc": 0.9,
        "param_count": 2000 + len(text), "processor_param_count": 1000 + len(text),
        "macs": 5000 + 10 * len(text), "train_seconds": 0.1})


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


def open_db(run: pathlib.Path) -> tuple[list[archive_db.Candidate], list[dict]]:
  db = archive_db.ArchiveDB(run / "archive.sqlite")
  try:
    return db.candidates(), db.llm_calls()
  finally:
    db.close()


class ProviderRunTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.run_dir = pathlib.Path(self.create_tempdir().full_path) / "run"

  def search(self, server: ScriptedServer | None, **overrides) -> dict:
    """Runs (or resumes) the search in ``self.run_dir``; returns its summary.json."""
    llm = {} if server is None else {"llm_model": "openai/scripted",
                                     "llm_api_base": server.api_base}
    cfg = config.SearchConfig(**{
        "output": str(self.run_dir), "profile": "quick", "iterations": ITERATIONS,
        "feasibility_check": False, "progress": "none", "num_islands": 2,
        "llm_backoff_s": 0.001, "llm_retries": 1, **llm, **overrides})
    Controller(rundir.open_run(cfg), evaluate=FakeEvaluate()).run()
    return self.summary()

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
    """The CLI's main() (flags parsed in-process, fake trainer): exit 1, one line, resume."""
    from fake_trainer_cli import FakeExecutor

    search_cli = importlib.import_module("spark_clrs.search")
    switch = Switch(Status(401, "Incorrect API key provided"))
    with ScriptedServer(responder=switch) as server:
      cfg = config.SearchConfig(
          output=str(self.run_dir), profile="quick", iterations=ITERATIONS, num_islands=2,
          progress="log", feasibility_check=False, llm_backoff_s=0.001,
          llm_model="openai/scripted", llm_api_base=server.api_base)

      without_key = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}

      def cli() -> tuple[int, str]:
        stderr = io.StringIO()
        with mock.patch.object(config, "from_flags", return_value=cfg), \
            mock.patch.object(Controller, "_executor", lambda self: FakeExecutor()), \
            mock.patch.dict(os.environ, without_key, clear=True), \
            contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
          status = search_cli.main(["spark_clrs.search"])
        return status, stderr.getvalue()

      status, stderr = cli()
      self.assertEqual(status, 1, stderr[-2000:])
      self.assertEqual(server.hits, 1, stderr[-3000:])  # A bad key is not worth asking again.
      errors = [line for line in stderr.splitlines() if line.startswith("error:")]
      self.assertLen(errors, 1)
      self.assertIn("set OPENAI_API_KEY to a valid key", errors[0])
      candidates, calls = open_db(self.run_dir)
      self.assertEqual([c.id for c in candidates], [0])
      self.assertEqual([(c["candidate_id"], c["error_kind"]) for c in calls], [(None, "auth")])
      switch.down = False
      status, stderr = cli()
      self.assertEqual(status, 0, stderr[-2000:])
    self.assert_complete(self.summary())

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

  def test_token_limit_ends_the_run_cleanly_and_a_larger_limit_continues(self):
    with ScriptedServer(responder=lambda request: Reply(answer(request))) as server:
      summary = self.search(server, max_llm_tokens=1, llm_price_per_mtok=(1.0, 2.0))
      self.assertEqual(summary["proposals"], 1)  # The limit is checked before each proposal.
      self.assertFalse(summary["complete"])
      self.assertIn("--max_llm_tokens=1 reached", summary["stop_reason"])
      self.assertIn("search stopped early", self.log_text())
      self.assertGreater(summary["llm"]["cost_usd"], 0.0)
      self.assertGreater(summary["llm"]["by_role"]["rewriter"]["total_tokens"], 0)
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
