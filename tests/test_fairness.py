"""Fair comparisons (issue 12): one entanglement rule, no wasted evaluations, budgets, noise.

Controller loops run with a fake trainer (no JAX) on a real run directory and SQLite
archive; the proposers are scripted or the offline provider.
"""

import json
import os
import pathlib
import types

import numpy as np
from absl.testing import absltest, parameterized
from llm_server import Reply, ScriptedServer

import processors
from spark_clrs import config
from spark_clrs.llm import offline
from spark_clrs.programs import dedup, entanglement, regions
from spark_clrs.proposers import Proposal
from spark_clrs.search import archive_db, proposal, rundir
from spark_clrs.search import summary as summary_lib
from spark_clrs.search.controller import Controller

SEED = (processors.SEEDS_DIR / "triplet_gmpnn.py").read_text()
FACTORS = ("OPERATOR", "ACTION")


def edit(text: str, factor: str, line: str) -> str:
  return regions.replace_region(text, factor, regions.get_region(text, factor) + line)


CHILD_ACTION = edit(SEED, "ACTION", "    nxt_hidden = 0.5 * (nxt_hidden + hidden)\n")
CHILD_BOTH = edit(CHILD_ACTION, "OPERATOR", "    activation = jax.nn.gelu\n")
# The same program as CHILD_ACTION, reformatted and re-commented.
CHILD_ACTION_REFORMATTED = edit(SEED, "ACTION",
                                "    # residual mix\n    nxt_hidden = 0.5*(nxt_hidden+hidden)\n")
SEED_RECOMMENTED = edit(SEED, "ACTION", "    # nothing changes here\n")


class ScriptedProposer:
  """Returns the scripted children in order, scoped to ACTION by a 'router'."""

  def __init__(self, children, scope_source="llm", scope=("ACTION",)):
    self.children = list(children)
    self.scope_source = scope_source
    self.scope = scope

  def propose(self, parent, history, rng):
    del parent, history, rng
    return Proposal(child_text=self.children.pop(0), scope=self.scope, directive="d",
                    decision={"scope_source": self.scope_source})


class CountingEvaluate:
  """Deterministic metrics from the program's AST; records every training."""

  def __init__(self, ci=0.0, spread=0.01, best_seed=False):
    self.best_seed = best_seed
    self.calls = []
    self.ci = ci
    self.spread = spread

  def __call__(self, program_path, profile, seeds, *, workdir, limits):
    del profile, workdir, limits
    text = pathlib.Path(program_path).read_text()
    self.calls.append((pathlib.Path(program_path).stem, tuple(seeds)))
    score = 0.3 + (int(dedup.fingerprint(text)[:6], 16) % 1000) / 5000
    if self.best_seed and dedup.same_program(text, SEED):
      score = 0.9  # The seed stays the elite, so every elite-selected parent is the seed.
    per_seed = [score + self.spread * (i - (len(seeds) - 1) / 2) for i in range(len(seeds))]
    metrics = {"ood_val_acc": float(np.mean(per_seed)), "ood_acc": 0.3, "val_acc": 0.9,
               "param_count": 2000 + len(text), "processor_param_count": 1000 + len(text),
               "macs": 5000 + len(text), "train_seconds": 0.1,
               "ood_val_acc_per_seed": per_seed, "ood_val_acc_ci": self.ci}
    if len(seeds) > 1:
      metrics["ood_val_acc_std"] = float(np.std(per_seed))
    return types.SimpleNamespace(status="ok", reason="", metrics=metrics)


class _Case(parameterized.TestCase):

  def run_search(self, evaluate, proposer=None, **overrides):
    out = pathlib.Path(self.create_tempdir().full_path) / "run"
    settings = dict(output=str(out), profile="quick", feasibility_check=False,
                    progress="none", num_islands=1, iterations=3)
    settings.update(overrides)
    cfg = config.SearchConfig(**settings)
    Controller(rundir.open_run(cfg), proposer=proposer, evaluate=evaluate).run()
    db = archive_db.ArchiveDB(out / "archive.sqlite")
    try:
      candidates = {c.id: c for c in db.candidates()}
    finally:
      db.close()
    summary = json.loads((out / "results" / "summary.json").read_text())
    log = (out / "logs" / "search.log").read_text()
    return candidates, summary, log


class NoWastedEvaluationsTest(_Case):

  def test_unchanged_and_duplicate_children_cost_no_training(self):
    evaluate = CountingEvaluate(best_seed=True)
    proposer = ScriptedProposer([CHILD_ACTION, SEED_RECOMMENTED, CHILD_ACTION_REFORMATTED,
                                 edit(SEED, "ACTION", "    nxt_hidden = jnp.tanh(nxt_hidden)\n")])
    cands, summary, log = self.run_search(evaluate, proposer, iterations=4,
                                          exploration_ratio=0.0, exploitation_ratio=0.0,
                                          elite_selection_ratio=1.0, final_top_k=0)
    trained = [name for name, _ in evaluate.calls]
    # Seed, candidate 1 and candidate 4 trained; 2 was unchanged, 3 a duplicate of 1.
    self.assertEqual(trained, ["0000", "0001", "0004"])
    self.assertEqual((cands[2].status, cands[2].stage), ("rejected", "unchanged"))
    self.assertIn("same AST", cands[2].reason)
    self.assertEqual((cands[3].status, cands[3].stage), ("evaluated", "duplicate"))
    self.assertEqual(cands[3].fitness, cands[1].fitness)
    self.assertEqual(cands[3].metrics["duplicate_of"], 1)
    self.assertEqual((summary["evaluations"], summary["duplicates"], summary["unchanged"]),
                     (3, 1, 1))
    self.assertIn("proposal 3: ", log)
    self.assertIn("duplicate of candidate 1 (AST equal)", log)

  def test_a_duplicate_of_a_rejected_program_is_rejected_without_checks(self):
    evaluate = CountingEvaluate()
    cands, _, _ = self.run_search(evaluate, ScriptedProposer([CHILD_ACTION, CHILD_ACTION]),
                                  iterations=2, elite_selection_ratio=1.0,
                                  exploration_ratio=0.0, exploitation_ratio=0.0,
                                  final_top_k=0)
    # The same child again: a duplicate when the seed is the parent, else unchanged.
    self.assertIn(cands[2].stage, ("unchanged", "duplicate"))
    self.assertLen(evaluate.calls, 2)
    with self.subTest("rejection reused"):
      db_path = pathlib.Path(self.create_tempdir().full_path) / "archive.sqlite"
      from spark_clrs.search import archive as archive_lib

      a = archive_lib.Archive(db_path)
      a.record_proposal(0, parent_id=None, island=None, strategy="seed", scope=None,
                        directive=None, decision={}, code=SEED)
      a.record_result(0, {"ood_val_acc": 0.2}, 0.2, {"macs": 1.0, "param_count": 1.0})
      a.record_proposal(1, parent_id=0, island=0, strategy="spark", scope=("ACTION",),
                        directive="d", decision={}, code=CHILD_ACTION)
      a.record_rejection(1, "shape", "shape: nxt_hidden is [2, 3]")
      twin = proposal.archived_twin(dedup.fingerprint(CHILD_ACTION_REFORMATTED),
                                    a.candidates(), lambda c: dedup.fingerprint(c.code))
      self.assertEqual((twin.id, twin.stage), (1, "shape"))
      a.close()


class DeferredEvaluate(CountingEvaluate):
  """Trains without OOD-test when asked; scores it later from the same workdir."""

  def __init__(self):
    super().__init__()
    self.tests = []

  def __call__(self, program_path, profile, seeds, *, workdir, limits, score_test=True):
    result = super().__call__(program_path, profile, seeds, workdir=workdir, limits=limits)
    if not score_test:
      result.metrics.update(ood_acc=None, test_scored=False)
      (pathlib.Path(workdir) / "params.npz").write_text("saved")
    return result

  def evaluate_test(self, program_path, profile, seeds, *, workdir, limits):
    del profile, seeds, limits
    assert (pathlib.Path(workdir) / "params.npz").is_file()  # The evaluation's workdir.
    self.tests.append(pathlib.Path(program_path).stem)
    return types.SimpleNamespace(status="ok", reason="", metrics={
        "ood_acc": 0.25, "ood_acc_ci": 0.01, "test_scored": True})


class DeferredTestTest(_Case):

  def test_ood_test_only_for_new_bests_and_the_final_top_k(self):
    evaluate = DeferredEvaluate()
    cands, summary, _ = self.run_search(evaluate, None, strategy="mutation", iterations=8,
                                        test_top_k=2, final_top_k=0)
    fitness = {c.id: c.fitness for c in cands.values()
               if c.can_be_parent and c.stage != "duplicate"}
    # OOD-test is scored for each candidate announced NEW BEST (the paired decision).
    new_bests = [f"{cid:04d}" for cid in sorted(fitness) if cands[cid].comparison.get("new_best")]
    top2 = [f"{cid:04d}" for cid in sorted(fitness, key=lambda i: (-fitness[i], i))[:2]]
    self.assertEqual(evaluate.tests[:len(new_bests)], new_bests)
    self.assertEqual(set(evaluate.tests), set(new_bests) | set(top2))
    self.assertLen(evaluate.tests, len(set(evaluate.tests)))  # Never scored twice.
    for c in cands.values():
      if c.can_be_parent and c.stage != "duplicate":
        scored = f"{c.id:04d}" in evaluate.tests
        self.assertEqual(c.metrics["test_scored"], scored)
        self.assertEqual(c.metrics["ood_acc"], 0.25 if scored else None)
    self.assertEqual(summary["best_ood_acc"], 0.25)

  def test_score_test_all_scores_every_candidate_in_the_evaluation(self):
    evaluate = DeferredEvaluate()
    cands, _, _ = self.run_search(evaluate, None, strategy="mutation", iterations=3,
                                  score_test="all", final_top_k=0)
    self.assertEqual(evaluate.tests, [])
    self.assertTrue(all(c.metrics["ood_acc"] == 0.3 for c in cands.values()
                        if c.can_be_parent))


class EntanglementRuleTest(_Case):

  def test_judge(self):
    selected = entanglement.judge(SEED, CHILD_BOTH, ("ACTION",), selected=True)
    self.assertEqual((selected.entangled, selected.rule), (True, "selected scope"))
    self.assertEqual(selected.outside_editable, ("region OPERATOR",))
    unselected = entanglement.judge(SEED, CHILD_BOTH, FACTORS, selected=False)
    self.assertEqual((unselected.entangled, unselected.outside_editable), (True, ()))
    one = entanglement.judge(SEED, CHILD_ACTION, FACTORS, selected=False)
    self.assertFalse(one.entangled)
    self.assertFalse(entanglement.judge(SEED, CHILD_ACTION, None, selected=False).entangled)
    self.assertTrue(entanglement.scope_selected(("ACTION",), {"scope_source": "fallback"}))
    self.assertFalse(entanglement.scope_selected(FACTORS, {"scope_source": "all_factors"}))
    self.assertFalse(entanglement.scope_selected(None, {"scope_source": "llm"}))

  def test_rc_sar_two_factor_edits_count_as_entangled_in_a_run(self):
    # rc_sar (every factor editable, no router) over the real LLM path: a two-factor
    # child is entangled but not rejected (it stays inside the editable regions).
    def respond(request):
      content = request["messages"][-1]["content"]
      if 'role="refiner"' in content:
        return Reply("Change: gate and mix\nWhy: drift\nExpected effect: stabler")
      return Reply(f"Both factors.\n\n```python\n{CHILD_BOTH}```\n")

    with ScriptedServer(responder=respond) as server:
      cands, summary, _ = self.run_search(
          CountingEvaluate(), None, strategy="rc_sar", iterations=1,
          llm_model="openai/scripted", llm_api_base=server.api_base)
    self.assertEqual(cands[1].status, "evaluated")
    self.assertEqual(cands[1].changed_factors, FACTORS)
    self.assertTrue(cands[1].entangled)
    self.assertEqual(summary["entanglement_rate"], 1.0)

  def test_selected_scope_violation_is_rejected_under_the_freeze(self):
    cands, summary, _ = self.run_search(CountingEvaluate(), ScriptedProposer([CHILD_BOTH]),
                                        iterations=1)
    self.assertEqual((cands[1].status, cands[1].stage), ("rejected", "entangled"))
    self.assertEqual(summary["entanglement_rate"], 1.0)


class DriftAndDocstringRunTest(_Case):
  """Formatting drift is reported apart from entanglement; docstring edits are unchanged."""

  # A real ACTION edit, a comment in OPERATOR and a blank line in the read-only text.
  DRIFTED = edit(CHILD_ACTION, "OPERATOR", "    # widths as in the paper\n").replace(
      "\nclass ", "\n\nclass ", 1)

  def test_whole_program_drift_is_not_entanglement(self):
    proposer = ScriptedProposer([self.DRIFTED], scope_source="unscoped", scope=None)
    cands, summary, _ = self.run_search(CountingEvaluate(), proposer, iterations=1)
    child = cands[1]
    self.assertEqual((child.status, child.entangled, child.changed_factors),
                     ("evaluated", False, ("ACTION",)))
    self.assertEqual(child.decision["formatting_drift"],
                     ["OPERATOR", entanglement.READ_ONLY])
    self.assertEqual((summary["entanglement_rate"], summary["drift_rate"]), (0.0, 1.0))

  def test_spark_freeze_stays_text_exact(self):
    cands, summary, _ = self.run_search(CountingEvaluate(), ScriptedProposer([self.DRIFTED]),
                                        iterations=1)
    self.assertEqual((cands[1].status, cands[1].stage), ("rejected", "entangled"))
    self.assertTrue(cands[1].entangled)
    self.assertEqual(cands[1].decision["formatting_drift"], [])
    self.assertEqual((summary["entanglement_rate"], summary["drift_rate"]), (1.0, 0.0))

  def test_docstring_only_edit_is_unchanged_and_not_trained(self):
    evaluate = CountingEvaluate()
    reworded = SEED.replace('"""', '"""Reworded. ', 1)
    proposer = ScriptedProposer([reworded], scope_source="unscoped", scope=None)
    cands, _, _ = self.run_search(evaluate, proposer, iterations=1)
    self.assertEqual((cands[1].status, cands[1].stage), ("rejected", "unchanged"))
    self.assertNotIn("0001", [name for name, _ in evaluate.calls])


class BudgetTest(_Case):

  def test_token_budget_stops_the_offline_run(self):
    cands, summary, log = self.run_search(CountingEvaluate(), None, strategy="spark",
                                          iterations=50, budget="tokens",
                                          budget_amount=20_000)
    proposals = [c for c in cands.values() if c.is_proposal]
    self.assertLess(len(proposals), 50)
    self.assertGreater(len(proposals), 0)
    self.assertTrue(summary["budget"]["spent"])
    self.assertTrue(summary["complete"])
    self.assertEqual(summary["budget"]["kind"], "tokens")
    tokens = summary["llm"]["total_tokens"] + summary["llm"]["estimated_tokens"]
    self.assertLessEqual(tokens, 20_000)  # Checked before every call: never overshoots.
    self.assertIn("--budget=tokens --budget_amount=20000 would be exceeded", log)

  def test_evaluation_budget_replaces_iterations(self):
    cfg = config.SearchConfig(budget="evaluations", budget_amount=7, iterations=3)
    self.assertEqual(cfg.iterations, 7)
    with self.assertRaisesRegex(config.ConfigError, "--budget=cost needs --budget_amount"):
      config.SearchConfig(budget="cost")
    with self.assertRaisesRegex(config.ConfigError, "both set the training seeds"):
      config.SearchConfig(fitness_seeds=2, eval_seeds=(0, 1))


class NoiseTest(_Case):
  """The console and summary read every fitness with its interval (issue 18 wording)."""

  def test_console_and_summary_show_intervals_and_ties(self):
    evaluate = CountingEvaluate(ci=0.2, spread=0.02)
    _, summary, log = self.run_search(evaluate, None, strategy="mutation", iterations=6,
                                      fitness_seeds=3, final_top_k=0)
    self.assertTrue(all(seeds == (0, 1, 2) for _, seeds in evaluate.calls))
    self.assertEqual(summary["training_seeds"], [0, 1, 2])
    self.assertRegex(log, r"candidate \d+: ood_val_acc 0\.\d{3} ± 0\.\d{3} \(95% CI, 3 seeds")
    self.assertIn("tie within noise with the seed", log)  # A 0.2 CI swallows every gain.
    self.assertNotIn("NEW BEST", log)
    noisy = summary["best_ood_val_acc_noise"]
    self.assertEqual(noisy["seeds"], 3)
    self.assertIn("95% CI, 3 seeds", noisy["text"])
    self.assertEqual(summary["proposer_note"], offline_note())


def offline_note():
  return summary_lib.OFFLINE_NOTE


class OfflineHeaderTest(absltest.TestCase):

  def test_proposer_note(self):
    self.assertEqual(summary_lib.proposer_note(["spark/offline"], ["spark"]), summary_lib.OFFLINE_NOTE)
    self.assertEqual(summary_lib.proposer_note([""], ["openevolve"]), summary_lib.OFFLINE_NOTE)
    self.assertIsNone(summary_lib.proposer_note(["openai/gpt-4o-mini"], ["spark", "eoh"]))
    self.assertIn("rule-based", summary_lib.proposer_note(["openai/x"], ["spark", "mutation"]))
    self.assertIn("compare the search machinery, not the methods", summary_lib.OFFLINE_NOTE)

  def test_offline_answer_is_deterministic(self):
    prompt = ('<request role="program" strategy="x" base="1" factors="OPERATOR,ACTION" '
              f'edit="one" />\n<program id="1">\n{SEED}</program>\n')
    messages = [{"role": "user", "content": prompt}]
    self.assertEqual(offline.answer(messages, seed=3), offline.answer(messages, seed=3))


if __name__ == "__main__":
  os.environ.setdefault("MPLBACKEND", "Agg")
  absltest.main()
