"""Each baseline mechanism as its source does it (issue 18), one test per mechanism.

Engine mechanisms run on a real SQLite archive; proposer mechanisms against a scripted
OpenAI-compatible server on 127.0.0.1 (tests/llm_server.py). No JAX, no training.
"""

import collections
import pathlib
import tempfile

import numpy as np
from absl.testing import absltest
from llm_server import Reply, ScriptedServer

import processors
from spark_clrs import llm
from spark_clrs.llm import offline
from spark_clrs.programs import code_features, dedup, diffs, entanglement, regions
from spark_clrs.proposers import (
  ParentInfo,
  ProposalHistory,
  ProposerConfig,
  compare_note,
  make_proposer,
  strategies,
)
from spark_clrs.proposers import options as engine_options
from spark_clrs.proposers.eoh import EoHProposer
from spark_clrs.proposers.evoprompting import EvoPromptingProposer, size_aware_fitness
from spark_clrs.proposers.funsearch import FunSearchProposer
from spark_clrs.proposers.openevolve import OpenEvolveProposer
from spark_clrs.search import archive as archive_lib

FACTORS = ("OPERATOR", "ACTION")
SEED = (processors.SEEDS_DIR / "triplet_gmpnn.py").read_text()


def edit(text: str, factor: str, line: str) -> str:
  return regions.replace_region(text, factor, regions.get_region(text, factor) + line)


CHILD_ACTION = edit(SEED, "ACTION", "    nxt_hidden = 0.5 * (nxt_hidden + hidden)\n")
CHILD_BOTH = edit(CHILD_ACTION, "OPERATOR", "    activation = jax.nn.gelu\n")
FEATURES = {"macs": 1000.0, "param_count": 100.0}


class _Archive(absltest.TestCase):
  """A fresh archive per test, and a helper that proposes + evaluates a candidate."""

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = pathlib.Path(tmp.name)

  def archive(self, options=None, **settings) -> archive_lib.Archive:
    a = archive_lib.Archive(self.tmp / "archive.sqlite", archive_lib.ArchiveSettings(**settings))
    self.addCleanup(a.close)
    a.configure(options)
    return a

  @staticmethod
  def add(a, cid, fitness, *, parent=0, island=0, code=None, metrics=None):
    a.record_proposal(cid, parent_id=None if cid == 0 else parent,
                      island=None if cid == 0 else island, strategy="x", scope=None,
                      directive=None, decision={}, code=code or f"x = {cid}\n")
    return a.record_result(cid, {"ood_val_acc": fitness, **(metrics or {})}, fitness,
                           dict(FEATURES))


class OpenEvolveEngineTest(_Archive):

  def test_parent_draws_follow_the_source_shares(self):
    a = self.archive(OpenEvolveProposer.engine_options, num_islands=2, archive_size=2)
    self.add(a, 0, 0.1)
    for cid, (fitness, island) in enumerate([(0.9, 1), (0.2, 0), (0.6, 0)], start=1):
      self.add(a, cid, fitness, island=island)
    rng = np.random.default_rng(0)
    methods, parents = collections.Counter(), collections.defaultdict(collections.Counter)
    for _ in range(4000):
      s = a.sample_parent(0, rng)
      methods[s.method] += 1
      parents[s.method][s.parent.id] += 1
    # 0.2 uniform island member, 0.7 an elite on the island, 0.1 fitness-weighted member.
    for method, share in (("exploration", 0.2), ("exploitation", 0.7), ("weighted", 0.1)):
      self.assertAlmostEqual(methods[method] / 4000, share, delta=0.03)
    self.assertEqual(set(parents["exploration"]), {0, 2, 3})
    self.assertEqual(set(parents["exploitation"]), {3})  # Elites 1 and 3; 3 lives here.
    weighted = parents["weighted"]
    self.assertGreater(weighted[3], weighted[0])  # 0.6 against 0.1.

  def test_migrants_do_not_migrate_again(self):
    for remigrate, expected in ((True, {2, 3}), (False, {2})):
      a = self.archive(engine_options.EngineOptions(sampler="island", migration="both",
                                                    remigrate=remigrate), num_islands=4)
      self.add(a, 0, 0.1)
      self.add(a, 1, 0.9, island=1)
      self.assertEqual({t for _, t, c in a.migrate(10) if c == 1}, {0, 2})
      moves = a.migrate(20)  # Island 2's best is now the migrant 1.
      reached = {t for _, t, c in moves if c == 1} | {0, 2}
      self.assertEqual(reached - {0}, expected, remigrate)
      self.tmp = self.tmp / "next"
      self.tmp.mkdir()

  def test_map_elites_over_code_length_and_diversity(self):
    a = self.archive(OpenEvolveProposer.engine_options, num_islands=1, feature_bins=10)
    self.assertEqual(a.feature_dims, ("complexity", "diversity"))
    for cid, lines in enumerate([1, 2, 40, 80]):
      self.add(a, cid, 0.1 + 0.1 * cid, code="y = 1\n" * lines)
    c = a.get(3)
    self.assertEqual(c.features["complexity"], len("y = 1\n" * 80))
    references = ["y = 1\n" * n for n in (1, 2, 40)]
    self.assertAlmostEqual(c.features["diversity"],
                           code_features.diversity(c.code, references))
    # Min-max bins over what was seen: the shortest program in bin 0, the longest in 9.
    self.assertEqual(a.cell(a.get(0).features)[0], 0)
    self.assertEqual(a.cell(c.features)[0], 9)
    self.assertGreater(len(a.grid(0)), 1)

  def test_a_reply_applies_the_blocks_that_match_and_skips_the_others(self):
    good = diffs.render(SEED, CHILD_ACTION)
    bad = "<<<<<<< SEARCH\nnot in the program\n=======\nx = 1\n>>>>>>> REPLACE"
    proposal, _ = propose("openevolve", [f"Two changes.\n\n{good}\n\n{bad}\n"])
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.child_text, CHILD_ACTION)
    self.assertEqual((proposal.decision["diff_blocks"], proposal.decision["diff_applied"]),
                     (2, 1))
    self.assertEqual(proposal.decision["diff_skipped"], ["not in the program"])
    proposal, _ = propose("openevolve", [f"Nothing matches.\n\n{bad}\n"])
    self.assertIn("none of the 1 SEARCH block(s) matches", proposal.error)


class FunSearchEngineTest(_Archive):

  def test_island_drawn_uniformly_per_prompt(self):
    a = self.archive(FunSearchProposer.engine_options, num_islands=4)
    self.add(a, 0, 0.1)
    rng = np.random.default_rng(0)
    islands = collections.Counter(a.sample_parent(0, rng).island for _ in range(2000))
    self.assertEqual(set(islands), {0, 1, 2, 3})  # Always asked for island 0.
    for count in islands.values():
      self.assertAlmostEqual(count / 2000, 0.25, delta=0.04)

  def test_versions_drawn_with_replacement(self):
    a = self.archive(FunSearchProposer.engine_options, num_islands=1)
    self.add(a, 0, 0.1)
    self.add(a, 1, 0.9)  # softmax(score / 0.1): the 0.9 cluster is drawn 99.97% of the time.
    drawn = [a.sample_parent(0, np.random.default_rng(i)) for i in range(50)]
    self.assertTrue(all(len(s.companions) == 1 for s in drawn))
    self.assertGreater(sum(s.companions[0].id == s.parent.id == 1 for s in drawn), 40)

  def test_equal_scores_share_a_cluster_so_shorter_programs_win(self):
    a = self.archive(FunSearchProposer.engine_options, num_islands=1)
    self.add(a, 0, 0.5012, code="z = 0\n" * 60)
    self.add(a, 1, 0.4987, code="z = 1\n")  # Within 0.01 of the seed: the same cluster.
    clusters = {archive_lib.score_signature(c, 0.01) for c in a.parents()}
    self.assertLen(clusters, 1)
    counts = collections.Counter(
        a.sample_parent(0, np.random.default_rng(i)).parent.id for i in range(400))
    self.assertGreater(counts[1], 0.6 * 400)  # Short program favoured, as in FunSearch.
    self.assertGreater(counts[0], 0)

  def test_resets_after_every_island_has_had_its_share(self):
    reset = FunSearchProposer.island_reset
    self.assertEqual([i for i in range(1, 101) if reset.due(i, islands=4)], [40, 80])
    self.assertEqual(reset.period(10), 100)


class GenerationalPopulationTest(_Archive):

  def test_eoh_one_population_generational_distinct_objectives(self):
    options = engine_options.EngineOptions(sampler="rank", companions=1, islands=1,
                                           population=3, generation=3, distinct_scores=True)
    a = self.archive(options, num_islands=4)
    self.assertEqual(a.num_islands, 1)
    self.add(a, 0, 0.1)
    self.assertEqual([c.id for c in a.island_members(0)], [0])
    self.assertEqual(a.island_members(1), [])  # No other island.
    self.add(a, 1, 0.6)
    # Still generation 0: candidate 1 waits; the population is the seed alone.
    self.assertEqual({a.sample_parent(2, np.random.default_rng(i)).parent.id
                      for i in range(20)}, {0})
    self.add(a, 2, 0.7)
    self.add(a, 3, 0.6)  # Equal objective to candidate 1: dropped at the close.
    self.add(a, 4, 0.65, parent=2)  # Generation 1 (already evaluated here): waits.
    a.sample_parent(0, np.random.default_rng(0))  # Proposal 5: generation 1 began at 4.
    self.assertEqual(sorted(c.id for c in a.island_members(0)), [0, 1, 2])
    self.add(a, 5, 0.8, parent=2)
    self.add(a, 6, 0.1, parent=2)
    a.sample_parent(0, np.random.default_rng(0))  # Proposal 7 closes generation 1.
    self.assertEqual(sorted(c.id for c in a.island_members(0)), [2, 4, 5])

  def test_eoh_rank_draws_with_replacement(self):
    a = self.archive(EoHProposer.engine_options)
    self.add(a, 0, 0.1)
    drawn = [a.sample_parent(0, np.random.default_rng(i)) for i in range(20)]
    self.assertTrue(all(s.companions == (s.parent,) for s in drawn))  # One program: twice.

  def test_evoprompting_survivors_by_error_times_size(self):
    options = engine_options.EngineOptions(sampler="uniform", companions=1, islands=1,
                                           population=2, generation=2,
                                           score=size_aware_fitness)
    a = self.archive(options)
    self.add(a, 0, 0.5, metrics={"processor_param_count": 1000})    # score -500
    self.add(a, 1, 0.6, metrics={"processor_param_count": 2000})    # -800: most accurate
    self.add(a, 2, 0.45, metrics={"processor_param_count": 400})    # -220: smallest
    a.sample_parent(0, np.random.default_rng(0))
    self.assertEqual(sorted(c.id for c in a.island_members(0)), [0, 2])
    self.assertEqual(a.best().id, 1)  # The reported best is still the most accurate.
    s = a.sample_parent(0, np.random.default_rng(1))
    self.assertEqual((s.method, s.parent.id, [c.id for c in s.companions]), ("uniform", 2, [0]))
    self.assertAlmostEqual(size_aware_fitness({"ood_val_acc": 0.6, "param_count": 10}), -4.0)
    self.assertIsNone(size_aware_fitness({"ood_val_acc": 0.6}))


def propose(strategy, replies, parent=None, **cfg):
  """One proposal against a server answering ``replies`` in order; (proposal, requests)."""
  with ScriptedServer(script=[Reply(r) for r in replies]) as server:
    client = llm.LLMClient(llm.LLMConfig(model="openai/scripted", api_base=server.api_base,
                                         timeout=10.0, retries=0))
    proposer = make_proposer(strategy, ProposerConfig(**cfg), client, FACTORS)
    proposal = proposer.propose(parent or ParentInfo("3", SEED, {"ood_val_acc": 0.5}),
                                ProposalHistory(), np.random.default_rng(0))
    journal = client.take_calls()
    assert server.hits == len(journal) == len(proposal.calls), (server.hits, len(journal))
    return proposal, list(server.requests)


def thought(text: str) -> str:
  return "{A residual mix keeps the state stable.}\n\n```python\n" + text + "```\n"


class EoHProposerTest(absltest.TestCase):

  def test_a_duplicate_child_is_asked_for_again_twice(self):
    member = ParentInfo("9", CHILD_BOTH, {"ood_val_acc": 0.4}, source="population")
    parent = ParentInfo("3", SEED, {"ood_val_acc": 0.5}, inspirations=(member,))
    reformatted = SEED.replace("\n\n", "\n\n\n", 1)  # The parent, reformatted.
    proposal, requests = propose("eoh", [thought(reformatted), thought(CHILD_BOTH),
                                         thought(CHILD_ACTION)], parent)
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual(proposal.child_text, CHILD_ACTION)
    self.assertEqual(proposal.decision["duplicate_retries"], ["3", "9"])
    self.assertLen(requests, 3)
    self.assertEqual(requests[0]["messages"], requests[2]["messages"])  # Asked again.
    # After two retries the third duplicate is kept (the controller then rejects it).
    proposal, _ = propose("eoh", [thought(CHILD_BOTH)] * 4, parent)
    self.assertEqual((proposal.child_text, len(proposal.calls)), (CHILD_BOTH, 3))

  def test_a_reply_without_code_is_asked_for_again(self):
    proposal, requests = propose("eoh", ["{an idea} but no code"] * 3 + [thought(CHILD_ACTION)])
    self.assertTrue(proposal.ok, proposal.error)
    self.assertLen(requests, 4)
    proposal, requests = propose("eoh", ["no code"] * 5)
    self.assertLen(requests, 4)
    self.assertIn("no fenced code block", proposal.error)

  def test_other_strategies_ask_once(self):
    proposal, requests = propose("funsearch", [thought(SEED), thought(CHILD_ACTION)])
    self.assertLen(requests, 1)
    self.assertIn("unchanged", proposal.error)


class DriftAndIdentityTest(absltest.TestCase):

  def test_docstring_only_edit_is_the_same_program(self):
    touched = SEED.replace('"""', '"""Reworded. ', 1)
    self.assertNotEqual(touched, SEED)
    self.assertTrue(dedup.same_program(touched, SEED))
    self.assertEqual(dedup.fingerprint(touched), dedup.fingerprint(SEED))
    self.assertFalse(dedup.same_program(CHILD_ACTION, SEED))
    self.assertFalse(dedup.same_program('x = "a"\n', 'x = "b"\n'))  # Other strings count.

  def test_formatting_drift_is_counted_apart_for_whole_program_strategies(self):
    # A real ACTION edit, a comment in OPERATOR and a blank line in the read-only text.
    child = edit(CHILD_ACTION, "OPERATOR", "    # widths as in the paper\n")
    child = child.replace("\nclass ", "\n\nclass ", 1)
    free = entanglement.judge(SEED, child, None, selected=False)
    self.assertEqual((free.entangled, free.changed), (False, ("ACTION",)))
    self.assertEqual(free.drift, ("OPERATOR", entanglement.READ_ONLY))
    both = entanglement.judge(SEED, edit(child, "OPERATOR", "    width = 2\n"), None,
                              selected=False)
    self.assertTrue(both.entangled)  # A code change in a second factor still counts.
    # SPARK's selected scope stays text-exact: the same child is entangled.
    spark = entanglement.judge(SEED, child, ("ACTION",), selected=True)
    self.assertTrue(spark.entangled)
    self.assertEqual(spark.drift, ())
    self.assertIn("region OPERATOR", spark.outside_editable)


class BudgetPathTest(absltest.TestCase):
  """Every request of every strategy goes through the client (and so its spend guard)."""

  def test_no_side_path_and_router_retries_are_counted(self):
    parent = ParentInfo("3", SEED, {"ood_val_acc": 0.5}, inspirations=(
        ParentInfo("8", CHILD_ACTION, {"ood_val_acc": 0.4}, source="island"),))
    for strategy in strategies():
      with ScriptedServer(responder=lambda r: Reply(offline.answer(r["messages"], seed=0))
                          ) as server:
        client = llm.LLMClient(llm.LLMConfig(model="openai/scripted", api_base=server.api_base,
                                             timeout=10.0, retries=0))
        proposer = make_proposer(strategy, ProposerConfig(), client, FACTORS)
        proposal = proposer.propose(parent, ProposalHistory(), np.random.default_rng(0))
        journal = client.take_calls()
        self.assertEqual(server.hits, len(journal), strategy)
        self.assertEqual([c.request_key for c in journal],
                         [c.request_key for c in proposal.calls], strategy)
        self.assertEqual(server.hits == 0, strategy == "mutation", strategy)
    router_bad = "I would rather not say."
    proposal, requests = propose("spark", [router_bad, router_bad,
                                           '{"scope": "ACTION", "rationale": "r"}',
                                           "Change: mix\nWhy: drift\nExpected effect: stable",
                                           f"```python\n{CHILD_ACTION}```\n"])
    self.assertTrue(proposal.ok, proposal.error)
    self.assertEqual([c.role for c in proposal.calls],
                     ["router", "router", "router", "refiner", "rewriter"])
    self.assertLen(requests, 5)


class ContractTest(absltest.TestCase):

  def test_parent_info_never_carries_test_metrics(self):
    metrics = {"ood_val_acc": 0.5, "ood_val_acc_per_seed": [0.5], "macs": 10,
               "ood_acc": 0.9, "ood_acc_per_graph": [[1.0]], "ood_acc_ci": 0.01,
               "test_scored": True, "train_seconds": 3.0, "eval_workdir": "work/1"}
    info = ParentInfo("1", "x = 1\n", metrics)
    self.assertEqual(set(info.metrics), {"ood_val_acc", "ood_val_acc_per_seed", "macs"})
    self.assertEqual(info.fitness, 0.5)

  def test_every_baseline_states_its_departures(self):
    for strategy in ("openevolve", "evoprompting", "funsearch", "eoh"):
      self.assertTrue(compare_note(strategy), strategy)
    self.assertIn("soft prompt", compare_note("evoprompting"))
    self.assertEqual(compare_note("spark"), "")
    self.assertLen(strategies(), 8)

  def test_evoprompting_keeps_one_population(self):
    options = EvoPromptingProposer.engine_options
    self.assertEqual((options.islands, options.sampler, options.score),
                     (1, "uniform", size_aware_fitness))


if __name__ == "__main__":
  absltest.main()
