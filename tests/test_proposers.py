"""SPARK's proposer (router -> refiner -> rewriter) over the real LiteLLM path.

The LLM is a scripted OpenAI-compatible server on 127.0.0.1 reached as ``openai/<name>``
with ``api_base``; the offline proposer is exercised through ``spark/offline``.
"""

import json
import os
import re

import numpy as np
from absl.testing import absltest, parameterized
from llm_server import Reply, ScriptedServer, Status

import processors
from spark_clrs import llm
from spark_clrs.programs import regions
from spark_clrs.proposers import (
  Outcome,
  ParentInfo,
  ProposalHistory,
  ProposerConfig,
  context,
  make_proposer,
  register,
  strategies,
)

FACTORS = ("OPERATOR", "ACTION")
SEED = (processors.SEEDS_DIR / "triplet_gmpnn.py").read_text()
METRICS = {"ood_val_acc": 0.4321, "ood_acc": 0.8765, "macs": 123456, "param_count": 999}
DIRECTIVE = ("Change: average the new state with the previous one\nWhy: long rollouts drift\n"
             "Expected effect: steadier state, no extra parameters")
NEW_LINE = "    nxt_hidden = 0.5 * (nxt_hidden + hidden)\n"
CHILD = regions.replace_region(SEED, "ACTION", regions.get_region(SEED, "ACTION") + NEW_LINE)
LINEAGE = [{"iteration": 3, "scope": "OPERATOR", "directive": "Change: wider messages",
            "feasible": False, "stage": "budget", "reason": "budget: MACs over the cap",
            "fitness": None, "parent_fitness": 0.40}]


def role_of(request: dict) -> str:
  for message in request["messages"]:
    match = re.search(r'<request role="(\w+)"', message["content"])
    if match:
      return match.group(1)
  raise AssertionError("request without a role tag")


def program_reply(text: str) -> str:
  return f"Here is the updated program.\n\n```python\n{text}```\n"


class Roles:
  """A responder answering by role, with optional per-role scripts."""

  def __init__(self, **scripts):
    self.scripts = {role: list(items) for role, items in scripts.items()}
    self.defaults = {
        "router": Reply('I would edit ACTION.\n```json\n{"scope": "ACTION", "rationale": '
                        '"state drifts"}\n```'),
        "refiner": Reply(DIRECTIVE),
        "rewriter": Reply(program_reply(CHILD)),
    }

  def __call__(self, request: dict):
    role = role_of(request)
    script = self.scripts.get(role)
    return script.pop(0) if script else self.defaults[role]


class SparkProposerTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.sleeps: list[float] = []
    self.tmp = self.create_tempdir()

  def propose(self, server, *, history=(), cache=None, **config):
    client = llm.LLMClient(
        llm.LLMConfig(model="openai/scripted", api_base=server.api_base, timeout=10.0,
                      retries=2, backoff_s=0.5), cache, sleep=self.sleeps.append)
    proposer = make_proposer("spark", ProposerConfig(**config), client, FACTORS)
    parent = ParentInfo("p1", SEED, METRICS, LINEAGE)
    return proposer.propose(parent, ProposalHistory.of(list(history)), np.random.default_rng(0))

  def test_one_proposal_edits_only_the_routed_region(self):
    with ScriptedServer(responder=Roles()) as server:
      proposal = self.propose(server)
      requests = server.requests
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.scope, ("ACTION",))
    self.assertEqual(proposal.child_text, CHILD)
    diff = regions.diff_factors(SEED, proposal.child_text)
    self.assertEqual(diff.changed, ("ACTION",))
    self.assertFalse(diff.outside_changed)
    self.assertEqual(proposal.directive, DIRECTIVE)
    self.assertEqual(proposal.decision["scope_source"], "llm")
    self.assertEqual(proposal.decision["rationale"], "state drifts")
    self.assertEqual([c.role for c in proposal.calls], ["router", "refiner", "rewriter"])
    for call in proposal.calls:
      self.assertTrue(call.ok, call.error)
      self.assertGreater(call.prompt_tokens, 0)
      self.assertGreater(call.completion_tokens, 0)
      self.assertGreater(call.latency_s, 0.0)
      self.assertEqual(call.model, "openai/scripted")
    router, refiner, rewriter = (r["messages"][-1]["content"] for r in requests)
    # The router sees the program, selection metrics, lineage, gains and plateau ...
    self.assertIn("class TripletGMPNN", router)
    self.assertIn("ood_val_acc: 0.4321", router)
    self.assertIn("iteration 3 | OPERATOR | rejected (budget) | n/a | budget: MACs", router)
    self.assertIn("proposals since the best fitness last improved", router)
    # ... but never the reported test accuracy.
    for text in (router, refiner, rewriter):
      self.assertNotIn("0.8765", text)
      self.assertNotIn("ood_acc:", text)
    # The refiner sees the region and the rest read-only, the rewriter the directive.
    self.assertIn('<editable_region name="ACTION">', refiner)
    self.assertIn("<ACTION body: editable>", refiner)
    self.assertIn(DIRECTIVE, rewriter)
    self.assertIn('output="program"', rewriter)

  def test_region_output_is_spliced_into_the_parent(self):
    body = regions.get_region(CHILD, "ACTION")
    roles = Roles(rewriter=[Reply(f"New body:\n```python\n{body}```")])
    with ScriptedServer(responder=roles) as server:
      proposal = self.propose(server, sar_output="region")
      self.assertIn('output="region"', server.requests[-1]["messages"][-1]["content"])
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.child_text, CHILD)

  def test_malformed_router_replies_fall_back_to_the_bandit(self):
    roles = Roles(router=[Reply("I think ACTION is best."), Reply('{"scope": "EVERYTHING"}'),
                          Reply('{"scope": "ACTION", ')])
    history = [Outcome(i, ("OPERATOR",), "Change: x", True, "ok", None, 0.5, 0.4) for i in range(3)]
    with ScriptedServer(responder=roles) as server:
      with self.assertLogs("spark_clrs.proposers.spark", level="WARNING") as logs:
        proposal = self.propose(server, history=history, router_retries=2)
      requests = server.requests
    decision = proposal.decision
    self.assertEqual(decision["scope_source"], "fallback")
    self.assertEqual(proposal.scope, ("ACTION",))  # The unexplored arm.
    self.assertEqual(decision["bandit_pulls"], {"OPERATOR": 3, "ACTION": 0})
    self.assertLen(decision["router_errors"], 3)
    self.assertIn("no JSON object", decision["router_errors"][0])
    self.assertIn("'EVERYTHING' is not one of the factors", decision["router_errors"][1])
    self.assertIn("fallback: UCB bandit chose ACTION", logs.output[0])
    # A retry shows the model its bad reply and what was wrong with it.
    retry = requests[1]["messages"]
    self.assertLen(retry, 4)
    self.assertEqual(retry[2], {"role": "assistant", "content": "I think ACTION is best."})
    self.assertIn("no JSON object", retry[3]["content"])
    self.assertEqual([c.role for c in proposal.calls], ["router"] * 3 + ["refiner", "rewriter"])
    self.assertTrue(proposal.ok, proposal.error)

  def test_router_retry_can_succeed(self):
    roles = Roles(router=[Reply("ACTION please")])
    with ScriptedServer(responder=roles) as server:
      proposal = self.propose(server)
    self.assertEqual(proposal.decision["scope_source"], "llm")
    self.assertEqual(proposal.decision["router_attempts"], 2)

  def test_rate_limited_router_backs_off_and_succeeds(self):
    roles = Roles(router=[Status(429, "rate limited")])
    with ScriptedServer(responder=roles) as server:
      proposal = self.propose(server)
      self.assertEqual(server.hits, 4)
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.calls[0].attempts, 2)
    self.assertEqual(proposal.decision["scope_source"], "llm")
    self.assertLen(self.sleeps, 1)

  @parameterized.named_parameters(
      ("truncated", Reply("```python\n" + SEED[:500]), "rewriter: the reply is truncated"),
      ("length", [Reply(program_reply(CHILD)[:400], finish_reason="length")] * 3,
       "finish_reason=length"),
      ("fenceless", Reply(CHILD), "no fenced code block"),
      ("unchanged", Reply(program_reply(SEED)), "returns the parent unchanged"),
  )
  def test_bad_rewriter_replies_become_errors(self, reply, message):
    replies = reply if isinstance(reply, list) else [reply]
    with ScriptedServer(responder=Roles(rewriter=replies)) as server:
      proposal = self.propose(server)
    self.assertIsNone(proposal.child_text)
    self.assertFalse(proposal.ok)
    self.assertIn(message, proposal.error)
    self.assertEqual(proposal.scope, ("ACTION",))
    self.assertEqual(proposal.directive, DIRECTIVE)
    self.assertLen(proposal.calls, 3)

  def test_refused_refiner_request_becomes_an_error(self):
    with ScriptedServer(responder=Roles(refiner=[Status(400, "bad request")])) as server:
      proposal = self.propose(server)
    self.assertIsNone(proposal.child_text)
    self.assertStartsWith(proposal.error, "refiner call failed: ")
    self.assertEqual([c.role for c in proposal.calls], ["router", "refiner"])

  def test_provider_failure_is_raised_not_proposed(self):
    with ScriptedServer(responder=Roles(refiner=[Status(500)] * 3)) as server:
      with self.assertRaises(llm.ProviderError) as caught:
        self.propose(server)
    self.assertEqual(caught.exception.kind, "server")

  def test_cut_rewriter_reply_is_continued_into_a_valid_child(self):
    whole = program_reply(CHILD)
    cut = whole.index("class ") + 40
    roles = Roles(rewriter=[Reply(whole[:cut], finish_reason="length"), Reply(whole[cut:])])
    with ScriptedServer(responder=roles) as server:
      proposal = self.propose(server)
      self.assertEqual(server.hits, 4)
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.child_text, CHILD)
    self.assertEqual(proposal.calls[-1].continuations, 1)

  def test_lone_closing_think_tag_hides_the_drafted_scope_and_directive(self):
    draft = 'Maybe {"scope": "OPERATOR"}?\nChange: something drafted\n</think>\n\n'
    roles = Roles(router=[Reply(draft + '{"scope": "ACTION", "rationale": "final"}')],
                  refiner=[Reply(draft + DIRECTIVE)])
    with ScriptedServer(responder=roles) as server:
      proposal = self.propose(server)
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.scope, ("ACTION",))
    self.assertEqual(proposal.directive, DIRECTIVE)
    self.assertIn("something drafted", proposal.calls[1].reasoning)

  def test_prompt_is_shrunk_to_the_window_oldest_lineage_first(self):
    lineage = [{"iteration": i, "scope": "OPERATOR", "directive": f"Change: idea {i}",
                "feasible": False, "stage": "shape", "reason": "r" * 400, "fitness": None,
                "parent_fitness": 0.4} for i in range(1, 9)]
    with ScriptedServer(responder=Roles()) as server:
      client = llm.LLMClient(llm.LLMConfig(model="openai/scripted", api_base=server.api_base))
      full = client.count_tokens("router", [{"role": "user", "content": SEED}])
      client = llm.LLMClient(llm.LLMConfig(model="openai/scripted", api_base=server.api_base,
                                           max_input_tokens=int(full * 1.9),
                                           max_tokens=full // 5))  # Room left for the reply.
      proposer = make_proposer("spark", ProposerConfig(), client, FACTORS)
      proposal = proposer.propose(ParentInfo("p1", SEED, METRICS, lineage), ProposalHistory(),
                                  np.random.default_rng(0))
      router = server.requests[0]["messages"][-1]["content"]
    self.assertTrue(proposal.ok, proposal.error)
    dropped = proposal.decision["context"]["router"]["dropped"]["lineage"]
    self.assertBetween(dropped, 1, 7)
    self.assertEqual(proposal.calls[0].context["dropped"], {"lineage": dropped})
    self.assertNotIn("iteration 1 |", router)  # The oldest rows went first ...
    self.assertIn("iteration 8 |", router)     # ... the newest stayed.

  def test_cached_rerun_sends_zero_requests(self):
    path = os.path.join(self.tmp.full_path, "cache.sqlite")
    with ScriptedServer(responder=Roles()) as server:
      first = self.propose(server, cache=llm.ReplyCache(path))
      self.assertEqual(server.hits, 3)
      second = self.propose(server, cache=llm.ReplyCache(path))
      self.assertEqual(server.hits, 3)
    self.assertEqual(second.child_text, first.child_text)
    self.assertTrue(all(c.cached for c in second.calls))

  def test_parent_without_the_factors(self):
    with ScriptedServer(responder=Roles()) as server:
      client = llm.LLMClient(llm.LLMConfig(model="openai/x", api_base=server.api_base))
      proposer = make_proposer("spark", ProposerConfig(), client, FACTORS)
      proposal = proposer.propose(ParentInfo("p", "x = 1\n"), ProposalHistory(),
                                  np.random.default_rng(0))
      self.assertEqual(server.hits, 0)
    self.assertIn("missing region(s) OPERATOR, ACTION", proposal.error)


class RegistryAndHistoryTest(absltest.TestCase):

  def test_registry(self):
    self.assertIn("spark", strategies())
    client = llm.LLMClient(llm.LLMConfig(model="openai/x", api_base="http://127.0.0.1:9"))
    with self.assertRaisesRegex(ValueError, r"unknown strategy 'nope'; use one of \[.*'spark'"):
      make_proposer("nope", ProposerConfig(), client, FACTORS)
    with self.assertRaisesRegex(ValueError, "registered twice"):
      register("spark")(lambda *a: None)
    with self.assertRaisesRegex(ValueError, "sar_output"):
      make_proposer("spark", ProposerConfig(sar_output="diff"), client, FACTORS)

  def test_history(self):
    rows = [
        {"iteration": 1, "scope": "ACTION", "feasible": True, "fitness": 0.5,
         "parent_fitness": 0.4, "extra": "ignored"},
        {"iteration": 2, "scope": ["OPERATOR"], "feasible": False, "stage": "shape",
         "parent_fitness": 0.5},
        {"iteration": 3, "scope": "ACTION", "feasible": True, "fitness": 0.45,
         "parent_fitness": 0.5},
    ]
    history = ProposalHistory.of(rows)
    self.assertEqual([o.label for o in history.outcomes],
                     ["improved", "rejected (shape)", "worse"])
    gains = history.scope_gains(FACTORS)
    self.assertEqual(gains["OPERATOR"], [0.0])
    self.assertEqual([round(g, 6) for g in gains["ACTION"]], [0.1, 0.0])
    plateau = history.plateau()
    self.assertEqual((plateau.evaluations, plateau.since_best, plateau.best_fitness), (3, 2, 0.5))

  def test_history_reads_ties_within_noise_as_ties(self):
    tie = {"verdict": "tie", "diff": 0.01}
    rows = [
        {"iteration": 1, "scope": "ACTION", "feasible": True, "fitness": 0.51,
         "parent_fitness": 0.5, "gain": tie, "new_best": False},
        {"iteration": 2, "scope": "ACTION", "feasible": True, "fitness": 0.6,
         "parent_fitness": 0.5, "gain": {"verdict": "better", "diff": 0.1}, "new_best": True},
        {"iteration": 3, "scope": "ACTION", "feasible": True, "fitness": 0.62,
         "parent_fitness": 0.6, "gain": tie},  # Higher, but a tie: no new best.
    ]
    history = ProposalHistory.of(rows)
    self.assertEqual([o.label for o in history.outcomes], ["tie", "improved", "tie"])
    self.assertEqual([round(g, 6) for g in history.scope_gains(FACTORS)["ACTION"]],
                     [0.0, 0.1, 0.0])
    plateau = history.plateau()
    self.assertEqual((plateau.since_best, plateau.best_fitness), (1, 0.6))
    self.assertIn("0 worse, 2 equal)", context.format_scope_stats(history, FACTORS))

  def test_prompt_metrics_ignore_timings_and_the_test_set(self):
    # Timings differ between runs (prompts must be reproducible for the reply cache) and
    # the reported test accuracy must never reach a proposer.
    base = {"ood_val_acc": 0.5, "macs": 1000, "param_count": 10}
    noisy = {**base, "train_seconds": 12.3, "compile_seconds": 4.5, "ood_acc": 0.9}
    self.assertEqual(context.format_metrics(noisy), context.format_metrics(base))
    self.assertEqual(context.metrics_line(noisy), context.metrics_line(base))
    self.assertIn("ood_val_acc", context.metrics_line(base))


class OfflineProposalTest(parameterized.TestCase):
  """The default proposer end to end: LiteLLM -> spark/offline -> parsing."""

  def run_offline(self, seed_name, mode, llm_seed=0):
    text = (processors.SEEDS_DIR / f"{seed_name}.py").read_text()
    client = llm.LLMClient(llm.LLMConfig(seed=llm_seed))
    proposer = make_proposer("spark", ProposerConfig(sar_output=mode), client, FACTORS)
    return text, proposer.propose(ParentInfo("seed", text, {"ood_val_acc": 0.5}),
                                  ProposalHistory(), np.random.default_rng(0))

  @parameterized.product(seed_name=["triplet_gmpnn", "mpnn", "pgn"], mode=["program", "region"])
  def test_offline_child_edits_only_its_scope(self, seed_name, mode):
    text, proposal = self.run_offline(seed_name, mode)
    self.assertTrue(proposal.ok, proposal.error)
    diff = regions.diff_factors(text, proposal.child_text)
    self.assertEqual(diff.changed, proposal.scope)
    self.assertFalse(diff.outside_changed)
    self.assertRegex(proposal.directive, r"\[move: \w+\]")
    self.assertEqual([c.model for c in proposal.calls], ["spark/offline"] * 3)
    json.loads(re.search(r"\{.*\}", proposal.calls[0].reply).group(0))
    self.assertTrue(all(c.prompt_tokens and c.completion_tokens for c in proposal.calls))

  def test_offline_is_deterministic_in_its_seed(self):
    children = [self.run_offline("triplet_gmpnn", "program", s)[1] for s in (0, 0, 1, 2, 3)]
    self.assertEqual(children[0].child_text, children[1].child_text)
    self.assertGreater(len({c.directive for c in children}), 1)


if __name__ == "__main__":
  absltest.main()
