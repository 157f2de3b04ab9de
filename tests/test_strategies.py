"""The baseline and ablation strategies (SPEC §6) over the real LiteLLM path.

Each strategy proposes through ``openai/<name>`` against a scripted OpenAI-compatible
server on 127.0.0.1 (tests/llm_server.py), and its records must show its own prompt
structure and scope behaviour; the offline provider must answer every strategy.
Archive context and whole runs are in test_strategy_runs.py, each baseline's engine
mechanisms in test_baselines.py.
"""

import math
import re

import numpy as np
from absl.testing import absltest, parameterized
from llm_server import Reply, ScriptedServer

import processors
from spark_clrs import config, llm
from spark_clrs.llm import offline, offline_moves, prompts
from spark_clrs.programs import diffs, entanglement, regions
from spark_clrs.proposers import (
  IslandReset,
  Outcome,
  ParentInfo,
  ProposalHistory,
  ProposerConfig,
  make_proposer,
  parsing,
  strategies,
)
from spark_clrs.proposers import options as engine_options

FACTORS = ("OPERATOR", "ACTION")
SEED = (processors.SEEDS_DIR / "triplet_gmpnn.py").read_text()
ACTION_LINE = "    nxt_hidden = 0.5 * (nxt_hidden + hidden)\n"
OPERATOR_LINE = "    activation = jax.nn.gelu\n"
CHILD_ACTION = regions.replace_region(SEED, "ACTION",
                                      regions.get_region(SEED, "ACTION") + ACTION_LINE)
CHILD_BOTH = regions.replace_region(CHILD_ACTION, "OPERATOR",
                                    regions.get_region(SEED, "OPERATOR") + OPERATOR_LINE)
METRICS = {"ood_val_acc": 0.5, "ood_acc": 0.8765, "processor_param_count": 10_000,
           "macs": 50_000}
DIRECTIVE = "Change: mix the state residually\nWhy: drift\nExpected effect: stabler"
THOUGHT = "Gate every message by the edge term before the max."


def program_reply(text: str, thought: str | None = None) -> str:
  head = "{" + thought + "}" if thought else "Here is the new program."
  return f"{head}\n\n```python\n{text}```\n"


def judge(parent: str, child: str, scope, decision=None):
  """(changed factors, entangled?, changes outside the editable scope), as the controller
  judges a child (a given scope counts as router-selected without ``decision``)."""
  selected = entanglement.scope_selected(scope, decision or {"scope_source": "llm"})
  judged = entanglement.judge(parent, child, scope, selected)
  return judged.changed, judged.entangled, list(judged.outside_editable)


def request_role(request: dict) -> str:
  for message in request["messages"]:
    match = re.search(r'<request role="(\w+)"', message["content"])
    if match:
      return match.group(1)
  raise AssertionError("request without a <request role=...> tag")


def user_text(request: dict) -> str:
  return request["messages"][-1]["content"]


class Roles:
  """Answers by the prompt's role tag; per-role replies override the defaults."""

  def __init__(self, **replies: str):
    self.replies = {
        "router": '```json\n{"scope": "ACTION", "rationale": "state drifts"}\n```',
        "refiner": DIRECTIVE,
        "rewriter": program_reply(CHILD_ACTION),
        "program": program_reply(CHILD_BOTH, THOUGHT),
        **replies,
    }

  def __call__(self, request: dict) -> Reply:
    return Reply(self.replies[request_role(request)])


def info(pid: str, fitness: float, source: str, *, params: int = 10_000, text: str = SEED,
         **kwargs) -> ParentInfo:
  return ParentInfo(pid, text, {"ood_val_acc": fitness, "ood_acc": 0.99,
                                "processor_param_count": params}, source=source, **kwargs)


def parent_with(*inspirations: ParentInfo, lineage=()) -> ParentInfo:
  return ParentInfo("3", SEED, METRICS, lineage, inspirations=tuple(inspirations))


class StrategyTestCase(parameterized.TestCase):
  """Runs one proposal of a strategy against a scripted server."""

  def propose(self, strategy, parent, *, roles=None, rng=0, history=(), factors=FACTORS,
              proposer_hook=None, **cfg):
    with ScriptedServer(responder=roles or Roles()) as server:
      client = llm.LLMClient(llm.LLMConfig(model="openai/scripted", api_base=server.api_base,
                                           timeout=10.0, retries=0))
      proposer = make_proposer(strategy, ProposerConfig(**cfg), client, factors)
      if proposer_hook is not None:
        proposer_hook(proposer)
      proposal = proposer.propose(parent, ProposalHistory.of(list(history)),
                                  np.random.default_rng(rng))
      self.requests = list(server.requests)
    for call in proposal.calls:
      self.assertTrue(call.ok, call.error)
      self.assertEqual(call.model, "openai/scripted")
    for request in self.requests:  # The reported test accuracy never reaches a prompt.
      self.assertNotIn("ood_acc:", user_text(request))
      self.assertNotIn("0.99", user_text(request))
    return proposal


class RegistryTest(absltest.TestCase):

  def test_every_configured_strategy_is_registered(self):
    self.assertEqual(sorted(config.STRATEGIES), strategies())

  def test_whole_program_prompts_carry_the_offline_contract(self):
    names = prompts.list_templates()
    for strategy in ("asr_only", "rc_sar", "openevolve", "evoprompting", "funsearch", "eoh"):
      own = {n: prompts.load(n) for n in names if n.startswith(f"{strategy}/")}
      self.assertNotEmpty(own, strategy)
      if strategy in ("asr_only", "rc_sar"):
        continue
      requests = [t for t in own.values() if '<request role="program"' in t]
      self.assertNotEmpty(requests, strategy)
      for text in requests:
        self.assertIn(f'strategy="{strategy}"', text)
        self.assertIn('base="{{parent_id}}" factors="{{factors}}"', text)
      self.assertIn('<program id="{{program_id}}"', "".join(own.values()))
      self.assertIn("{{contract}}", own[f"{strategy}/system"])


class AblationTest(StrategyTestCase):

  def test_asr_only_routes_and_rewrites_without_a_directive(self):
    proposal = self.propose("asr_only", parent_with())
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual([c.role for c in proposal.calls], ["router", "rewriter"])
    self.assertEqual([request_role(r) for r in self.requests], ["router", "rewriter"])
    self.assertEqual(proposal.scope, ("ACTION",))
    self.assertIsNone(proposal.directive)
    self.assertEqual(proposal.child_text, CHILD_ACTION)
    rewriter = user_text(self.requests[1])
    self.assertNotIn("<directive>", rewriter)
    self.assertIn('<editable_region name="ACTION">', rewriter)
    self.assertIn("ood_val_acc: 0.5000", rewriter)
    self.assertEqual(proposal.decision["scope_source"], "llm")
    self.assertEqual(proposal.decision["prompt"]["roles"], ["router", "rewriter"])
    self.assertIsNone(proposal.decision["prompt"]["directive"])

  def test_rc_sar_has_every_factor_in_scope(self):
    roles = Roles(rewriter=program_reply(CHILD_BOTH))
    history = [Outcome(1, FACTORS, "Change: earlier idea", False, "shape", "shape: bad")]
    proposal = self.propose("rc_sar", parent_with(), roles=roles, history=history)
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual([c.role for c in proposal.calls], ["refiner", "rewriter"])
    self.assertEqual(proposal.scope, FACTORS)
    self.assertEqual(proposal.directive, DIRECTIVE)
    self.assertEqual(proposal.decision["scope_source"], "all_factors")
    self.assertIsNone(proposal.decision["prompt"]["router"])
    refiner, rewriter = (user_text(r) for r in self.requests)
    for factor in FACTORS:
      self.assertIn(f'<editable_region name="{factor}">', refiner)
      self.assertIn(f'<editable_region name="{factor}">', rewriter)
    self.assertIn("Change: earlier idea -> rejected (shape)", refiner)
    self.assertIn(DIRECTIVE, rewriter)
    # Both factors are editable, but no router selected them: the one rule of SPEC §5
    # counts a two-factor edit as entangled, exactly as for the free-form baselines.
    diff = regions.diff_factors(SEED, proposal.child_text)
    self.assertEqual(diff.changed, FACTORS)
    self.assertTrue(diff.touches_only(proposal.scope))
    changed, entangled, outside = judge(SEED, proposal.child_text, proposal.scope,
                                        proposal.decision)
    self.assertEqual((changed, entangled, outside), (FACTORS, True, []))
    # A one-factor rc_sar edit is not entangled.
    self.assertFalse(judge(SEED, CHILD_ACTION, proposal.scope, proposal.decision)[1])

  @parameterized.parameters("random", "bandit")
  def test_rc_sar_scope_routers_pick_one_factor_without_an_llm(self, router):
    history = [Outcome(i, ("ACTION",), "Change: x", True, "ok", None, 0.6, 0.5)
               for i in range(3)]
    scopes = set()
    for rng in range(8):
      proposal = self.propose("rc_sar", parent_with(), rng=rng, history=history,
                              scope_router=router)
      self.assertTrue(proposal.ok, proposal.error)
      self.assertEqual([c.role for c in proposal.calls], ["refiner", "rewriter"])
      self.assertLen(proposal.scope, 1)
      self.assertEqual(proposal.decision["scope_source"], router)
      refiner = user_text(self.requests[0])
      (factor,) = proposal.scope
      self.assertIn(f'<editable_region name="{factor}">', refiner)
      other = ({"OPERATOR", "ACTION"} - {factor}).pop()
      self.assertNotIn(f'<editable_region name="{other}">', refiner)
      scopes.add(factor)
      # A selected scope: a child editing the other factor is entangled.
      self.assertTrue(judge(SEED, CHILD_BOTH, proposal.scope, proposal.decision)[1])
    if router == "random":
      self.assertEqual(scopes, set(FACTORS))
    else:  # UCB: OPERATOR was never pulled, so it is pulled first, every time.
      self.assertEqual(scopes, {"OPERATOR"})

  def test_unknown_scope_router_is_refused(self):
    with self.assertRaisesRegex(ValueError, "scope_router='llm'"):
      make_proposer("rc_sar", ProposerConfig(scope_router="llm"), llm.LLMClient(llm.LLMConfig()),
                    FACTORS)

  def test_rc_sar_region_output_splices_the_returned_regions(self):
    body = "\n".join([
        regions.begin_marker("OPERATOR"), regions.get_region(CHILD_BOTH, "OPERATOR").rstrip(),
        regions.end_marker("OPERATOR"), regions.begin_marker("ACTION"),
        regions.get_region(CHILD_BOTH, "ACTION").rstrip(), regions.end_marker("ACTION")])
    roles = Roles(rewriter=f"Both regions:\n```python\n{body}\n```\n")
    proposal = self.propose("rc_sar", parent_with(), roles=roles, sar_output="region")
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.child_text, CHILD_BOTH)
    self.assertIn('output="region"', user_text(self.requests[1]))

  def test_rc_sar_region_output_refuses_foreign_regions(self):
    reply = f"```python\n{regions.begin_marker('OTHER')}\nx = 1\n{regions.end_marker('OTHER')}\n```"
    proposal = self.propose("rc_sar", parent_with(), roles=Roles(rewriter=reply),
                            sar_output="region")
    self.assertIn("rewriter: the reply returns region(s) OTHER outside", proposal.error)


class OpenEvolveTest(StrategyTestCase):

  def test_prompt_shows_top_and_diverse_programs_and_the_child_is_entangled(self):
    parent = parent_with(info("7", 0.9, "island"), info("8", 0.7, "island"),
                         info("9", 0.2, "diverse", cell=(1, 2)),
                         info("10", 0.1, "top"),
                         lineage=[{"iteration": 2, "scope": None, "feasible": False,
                                   "stage": "shape", "reason": "shape: wrong width"}])
    roles = Roles(program="Gate and mix.\n\n" + diffs.render(SEED, CHILD_BOTH))
    proposal = self.propose("openevolve", parent, roles=roles)
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.child_text, CHILD_BOTH)  # The diff applied to the parent.
    self.assertEqual(proposal.decision["diff_blocks"], 2)
    self.assertIsNone(proposal.scope)  # Regions are not enforced.
    self.assertEqual([c.role for c in proposal.calls], ["rewriter"])
    prompt = user_text(self.requests[0])
    self.assertIn('<request role="program" strategy="openevolve" base="3"', prompt)
    self.assertIn('edit="diff"', prompt)
    self.assertIn("<<<<<<< SEARCH", prompt)
    for pid in ("7", "8", "9", "3"):
      self.assertIn(f'<program id="{pid}">', prompt)
    self.assertNotIn('<program id="10">', prompt)  # Global top programs are not shown.
    self.assertLess(prompt.index('<program id="7">'), prompt.index('<program id="9">'))
    self.assertIn("MAP-Elites cell (1, 2)", prompt)
    self.assertIn("ood_val_acc: 0.9000", prompt)
    self.assertIn("rejected (shape) | n/a | shape: wrong width", prompt)
    # The previous failure is spelled out.
    self.assertIn("The previous failed attempt (iteration 2) was rejected at `shape`: "
                  "shape: wrong width", prompt)
    self.assertEqual(proposal.decision["prompt"]["last_failure"], 2)
    structure = proposal.decision["prompt"]
    self.assertEqual([p["program_id"] for p in structure["top"]], ["7", "8"])
    self.assertEqual([p["program_id"] for p in structure["diverse"]], ["9"])
    self.assertEqual(structure["inspirations"], 3)
    self.assertEqual(proposal.decision["scope_source"], "unscoped")
    # A child editing two regions counts as entangled, the way the controller measures it.
    self.assertTrue(regions.diff_factors(SEED, proposal.child_text).is_entangled)
    changed, entangled, _ = judge(SEED, proposal.child_text, proposal.scope)
    self.assertEqual((changed, entangled), (FACTORS, True))

  def test_without_inspirations_the_parent_alone_is_shown(self):
    proposal = self.propose("openevolve", parent_with(), edit_format="rewrite")
    self.assertTrue(proposal.ok, proposal.error)
    prompt = user_text(self.requests[0])
    self.assertIn("(none yet", prompt)
    self.assertIn('edit="rewrite"', prompt)
    self.assertNotIn("<<<<<<< SEARCH", prompt)
    self.assertIn("None of the recent attempts failed.", prompt)
    self.assertEqual(proposal.decision["prompt"]["inspirations"], 0)
    self.assertEqual(proposal.decision["prompt"]["mode"], "full_rewrite")

  @parameterized.named_parameters(
      ("fenceless", "rewrite", CHILD_BOTH, "no fenced code block"),
      ("unchanged", "rewrite", program_reply(SEED), "returns the parent unchanged"),
      ("markers_dropped", "rewrite",
       program_reply(SEED.replace("# ===== BEGIN ACTION REGION =====\n", "")),
       "markers are broken"),
      ("no_blocks", "diff", program_reply(CHILD_BOTH), "no <<<<<<< SEARCH"),
      ("search_missing", "diff", "<<<<<<< SEARCH\nnot in it\n=======\nx\n>>>>>>> REPLACE",
       "none of the 1 SEARCH block(s) matches lines of the program (first lines: 'not in it')"),
      ("diff_drops_marker", "diff",
       "<<<<<<< SEARCH\n    # ===== BEGIN ACTION REGION =====\n=======\n\n>>>>>>> REPLACE",
       "region markers are broken"),
  )
  def test_bad_replies_become_errors(self, edit, reply, message):
    proposal = self.propose("openevolve", parent_with(), roles=Roles(program=reply),
                            edit_format=edit)
    self.assertIsNone(proposal.child_text)
    self.assertStartsWith(proposal.error, "rewriter: ")
    self.assertIn(message, proposal.error)


class EvoPromptingTest(StrategyTestCase):

  def test_two_examples_drawn_by_the_sampler_with_targets(self):
    # The uniform sampler draws the second example (an ``island`` companion).
    for mate, params in ((info("7", 0.9, "island", params=8_000), 8_000),
                         (info("8", 0.2, "island", params=12_000), 10_000)):
      proposal = self.propose("evoprompting", parent_with(mate))
      self.assertTrue(proposal.ok, proposal.error)
      self.assertIsNone(proposal.scope)
      self.assertEqual([c.role for c in proposal.calls], ["crossover"])
      structure = proposal.decision["prompt"]
      parents = structure["parents"]
      self.assertEqual({p["program_id"] for p in parents}, {"3", mate.program_id})
      # Lowest ood_val_acc first, as the prompt says.
      self.assertEqual([p["fitness"] for p in parents], sorted(p["fitness"] for p in parents))
      self.assertEqual((structure["round"], structure["survivors"]), (10, 10))
      prompt = user_text(self.requests[0])
      self.assertLen(re.findall(r'<program id="\d+">', prompt), 2)
      acc = round(min(1.0, 1.02 * max(0.5, mate.fitness)), 4)
      self.assertEqual(structure["targets"], {"size_metric": "processor_param_count",
                                              "size_below": math.floor(0.9 * params),
                                              "ood_val_acc_above": acc})
      self.assertIn(f"ood_val_acc above {acc:.4f} and processor_param_count below "
                    f"{math.floor(0.9 * params):_}", prompt)
      # The size-aware fitness of each example is recorded: -(error x processor params).
      self.assertAlmostEqual(structure["size_aware_fitness"]["3"], -0.5 * 10_000)

  def test_only_the_parent_is_a_mutation(self):
    proposal = self.propose("evoprompting", parent_with())
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.decision["prompt"]["mode"], "mutation (only the parent)")
    self.assertLen(proposal.decision["prompt"]["parents"], 1)
    self.assertIn("ood_val_acc above 0.5100 and processor_param_count below 9_000",
                  user_text(self.requests[0]))


class FunSearchTest(StrategyTestCase):

  def test_versions_sorted_by_ascending_score_and_the_parent_is_the_last(self):
    # The cluster sampler draws the versions; the parent is the best drawn program.
    parent = ParentInfo("3", SEED, {**METRICS, "ood_val_acc": 0.95},
                        inspirations=(info("12", 0.3, "island"),))
    proposal = self.propose("funsearch", parent, rng=1)
    self.assertTrue(proposal.ok, proposal.error)
    self.assertIsNone(proposal.scope)
    self.assertEqual([c.role for c in proposal.calls], ["sampler"])
    structure = proposal.decision["prompt"]
    versions = structure["versions"]
    self.assertEqual([(v["version"], v["program_id"]) for v in versions],
                     [("v0", "12"), ("v1", "3")])
    self.assertEqual(structure["credited_to"], "3")  # The child's parent is v1.
    self.assertEqual(structure["next_version"], "v2")
    prompt = user_text(self.requests[0])
    shown = re.findall(r'<program id="(\d+)" version="(v\d)">', prompt)
    self.assertEqual(shown, [(v["program_id"], v["version"]) for v in versions])
    self.assertIn("Write `v2`, an improved version of `v1`", prompt)
    self.assertIn('base="3"', prompt)
    self.assertNotIn("0.9500", prompt)  # FunSearch shows the order, not the scores.

  def test_engine_options_island_reset_and_no_migration(self):
    with ScriptedServer(responder=Roles()) as server:
      client = llm.LLMClient(llm.LLMConfig(model="openai/x", api_base=server.api_base))
      proposer = make_proposer("funsearch", ProposerConfig(), client, FACTORS)
      others = {s: make_proposer(s, ProposerConfig(), client, FACTORS)
                for s in set(strategies()) - {"funsearch"}}
    reset = IslandReset(interval=10, fraction=0.5, per_island=True)
    self.assertEqual(proposer.island_reset, reset)
    # Every island gets 10 proposals on average between resets: every 40 with 4 islands.
    self.assertTrue(reset.due(40, islands=4))
    self.assertFalse(reset.due(20, islands=4))
    self.assertTrue(reset.due(20, islands=2))
    self.assertTrue(proposer.context_request.empty)  # The sampler draws the versions.
    self.assertEqual(engine_options.of(proposer), engine_options.EngineOptions(
        sampler="clusters", companions=1, migration="none", island_reset=reset,
        island_choice="uniform", cluster_step=0.01))
    for name, other in others.items():
      self.assertIsNone(engine_options.of(other).island_reset, name)
    self.assertEqual(engine_options.of(others["openevolve"]), engine_options.EngineOptions(
        sampler="island", migration="both", remigrate=False,
        feature_dims=("complexity", "diversity")))
    self.assertEqual(engine_options.of(others["eoh"]), engine_options.EngineOptions(
        sampler="rank", companions=1, islands=1, population=5, generation=5,
        distinct_scores=True))
    self.assertEqual(engine_options.of(others["spark"]), engine_options.DEFAULT)


class EoHTest(StrategyTestCase):

  def test_operators_are_drawn_per_proposal_and_recorded_with_the_thought(self):
    island = [info("8", 0.4, "island", decision={"thought": "Use a mean over neighbours."})]
    seen = {}
    for rng in range(16):
      proposal = self.propose("eoh", parent_with(*island), rng=rng)
      self.assertTrue(proposal.ok, proposal.error)
      self.assertIsNone(proposal.scope)
      op = proposal.decision["operator"]
      self.assertEqual(proposal.decision["prompt"]["operator"], op)
      self.assertEqual([c.role for c in proposal.calls], [op.lower()])
      self.assertEqual(proposal.decision["thought"], THOUGHT)
      prompt = user_text(self.requests[0])
      self.assertIn(f'strategy="eoh" operator="{op}"', prompt)
      self.assertIn(f"## Operator {op}", prompt)
      self.assertIn("in one sentence enclosed in curly braces", prompt)
      programs = re.findall(r'<program id="(\d+)">', prompt)
      self.assertEqual(sorted(programs), ["3", "8"] if op in ("E1", "E2") else ["3"])
      if op in ("E1", "E2"):
        self.assertIn("Idea: Use a mean over neighbours.", prompt)
      seen[op] = rng
    self.assertEqual(sorted(seen), ["E1", "E2", "M1", "M2"])

  def test_e2_without_a_second_program_falls_back_to_e1(self):
    def only_e2(proposer):
      proposer.operators = ("E2",)
    proposal = self.propose("eoh", parent_with(), proposer_hook=only_e2)
    self.assertEqual(proposal.decision["operator"], "E1")
    self.assertEqual(proposal.decision["prompt"]["requested_operator"], "E2")

  def test_missing_thought_is_recorded(self):
    proposal = self.propose("eoh", parent_with(), roles=Roles(program=program_reply(CHILD_BOTH)))
    self.assertTrue(proposal.ok, proposal.error)
    self.assertIsNone(proposal.decision["thought"])
    self.assertIn("no {...} description", proposal.decision["thought_error"])

  def test_split_thought(self):
    self.assertEqual(parsing.split_thought("{A {nested} idea}\n```python\nx = {1: 2}\n```"),
                     "A {nested} idea")
    self.assertIsNone(parsing.split_thought("```python\nx = {1: 2}\n```"))
    self.assertIsNone(parsing.split_thought("{unclosed\n```python\nx\n```"))


class MutationTest(StrategyTestCase):

  def test_no_llm_request_one_catalogue_move_in_one_factor(self):
    for rng in range(4):
      proposal = self.propose("mutation", parent_with(), rng=rng)
      self.assertEqual(self.requests, [])
      self.assertEqual(proposal.calls, [])
      self.assertTrue(proposal.ok, proposal.error)
      (factor,) = proposal.scope
      diff = regions.diff_factors(SEED, proposal.child_text)
      self.assertEqual(diff.changed, (factor,))
      self.assertFalse(diff.outside_changed)
      move = proposal.decision["move"]
      self.assertEqual(offline_moves.get_move(move).factor, factor)
      self.assertEqual(proposal.directive, offline_moves.get_move(move).directive())
      self.assertEqual(proposal.decision["prompt"]["llm_calls"], 0)

  def test_memoryless_unlike_spark_offline(self):
    # mutation ignores what was tried; spark/offline's refiner skips tried moves.
    moves = offline_moves.applicable("ACTION", regions.get_region(SEED, "ACTION"))
    lineage = [{"iteration": i, "scope": "ACTION", "directive": m.directive(), "feasible": True}
               for i, m in enumerate(moves[1:])]
    drawn = {self.propose("mutation", parent_with(lineage=lineage), rng=rng,
                          factors=("ACTION",)).decision["move"] for rng in range(12)}
    self.assertGreater(len(drawn - {moves[0].name}), 0)
    for rng in range(3):
      proposal = self.propose("spark", parent_with(lineage=lineage), rng=rng,
                              roles=OfflineRoles(), factors=("ACTION",), tried_window=100)
      self.assertIn(f"[move: {moves[0].name}]", proposal.directive)


class OfflineRoles:
  """Answers every request with the offline proposer (over the scripted server)."""

  def __call__(self, request: dict) -> Reply:
    return Reply(offline.answer(request["messages"], seed=0))


class OfflineStrategiesTest(parameterized.TestCase):
  """With no model configured, spark/offline answers every strategy's prompts."""

  @parameterized.product(strategy=sorted(config.STRATEGIES), mode=["program", "region"])
  def test_offline_answers_every_strategy(self, strategy, mode):
    client = llm.LLMClient(llm.LLMConfig(seed=0))
    proposer = make_proposer(strategy, ProposerConfig(sar_output=mode), client, FACTORS)
    parent = parent_with(info("7", 0.9, "top"), info("8", 0.3, "island"),
                         info("9", 0.2, "diverse", cell=(0, 0)))
    entangled = []
    for rng in range(6):
      proposal = proposer.propose(parent, ProposalHistory(), np.random.default_rng(rng))
      self.assertTrue(proposal.ok, proposal.error)
      self.assertTrue(all(c.model == "spark/offline" for c in proposal.calls))
      self.assertEqual(proposal.calls == [], strategy == "mutation")
      diff = regions.diff_factors(SEED, proposal.child_text)
      self.assertFalse(diff.outside_changed)
      if proposal.scope is not None:
        self.assertTrue(diff.touches_only(proposal.scope))
      entangled.append(diff.is_entangled)
      if strategy == "openevolve":  # The diff prompt gets a diff.
        self.assertIn("<<<<<<< SEARCH", proposal.calls[0].reply)
    # Every prompt here asks for one change (or a crossover of identical programs, which
    # falls back to one change): the offline proposer never edits two factors.
    self.assertNotIn(True, entangled)

  def test_offline_edit_kinds_follow_the_prompt(self):
    other = CHILD_BOTH
    base = ('<request role="program" strategy="x" base="1" factors="OPERATOR,ACTION" '
            'edit="EDIT" others="2" />\n'
            f'<program id="2">\n{other}</program>\n<program id="1">\n{SEED}</program>\n')

    def child(edit, seed=0):
      reply = offline.answer([{"role": "user", "content": base.replace("EDIT", edit)}], seed=seed)
      if edit == "diff":
        return diffs.apply_reply(SEED, reply)
      return parsing.extract_program(reply, SEED, FACTORS)

    for seed in range(4):
      crossed = child("crossover", seed)  # One region of program 2, the rest of program 1.
      (factor,) = regions.diff_factors(SEED, crossed).changed
      self.assertEqual(regions.get_region(crossed, factor), regions.get_region(other, factor))
      (moved,) = regions.diff_factors(SEED, child("one", seed)).changed
      self.assertIn(moved, FACTORS)
      self.assertNotEqual(child("explore", seed), other)
      self.assertLen(regions.diff_factors(SEED, child("diff", seed)).changed, 1)
      reply = offline.answer([{"role": "user", "content": base.replace("EDIT", "parameter")}],
                             seed=seed)
      (name,) = offline_moves.named_moves(parsing.split_thought(reply))
      self.assertRegex(name, "width|activation|init|bias|offset")
    with self.assertRaisesRegex(offline.OfflineRequestError, "unknown edit kind 'all'"):
      offline.answer([{"role": "user", "content": base.replace("EDIT", "all")}])

  def test_offline_program_answer_names_its_moves_in_braces(self):
    prompt = ('<request role="program" strategy="x" base="1" factors="OPERATOR,ACTION" />\n'
              f'<program id="2">\nx = 1\n</program>\n<program id="1">\n{SEED}</program>\n')
    reply = offline.answer([{"role": "user", "content": prompt}], seed=4)
    thought = parsing.split_thought(reply)
    self.assertRegex(thought, r"^in (OPERATOR|ACTION), .*\[move: \w+\]")
    child = parsing.extract_program(reply, SEED, FACTORS)
    self.assertEqual(set(regions.diff_factors(SEED, child).changed),
                     {offline_moves.get_move(m).factor
                      for m in offline_moves.named_moves(thought)})
    with self.assertRaisesRegex(offline.OfflineRequestError, 'no <program id="5">'):
      offline.answer([{"role": "user", "content": prompt.replace('base="1"', 'base="5"')}])


if __name__ == "__main__":
  absltest.main()
