"""Archive tests: sampling ratios, infeasible never sampled, MAP-Elites, migration, reopening.

EngineOptionsTest checks each strategy's engine (FunSearch's clusters, EoH's rank and
population, OpenEvolve's island-local elites and two-way migration) on a real SQLite
archive.
"""

import collections
import pathlib
import sqlite3
import tempfile

import numpy as np
from absl.testing import absltest

from spark_clrs.proposers import options as engine_options
from spark_clrs.search import archive as archive_lib

SEED_FEATURES = {"macs": 1000.0, "param_count": 100.0}


def _archive(tmp, **settings) -> archive_lib.Archive:
  return archive_lib.Archive(tmp / "archive.sqlite", archive_lib.ArchiveSettings(**settings))


def _add(archive, cid, parent, fitness, features=None, island=0, status="ok", code=None,
         per_seed=None):
  archive.record_proposal(cid, parent_id=parent, island=island, strategy="spark",
                          scope=("ACTION",), directive="d", decision={},
                          code=code or f"# {cid}\n")
  features = features or SEED_FEATURES
  if status == "ok":
    metrics = {"ood_val_acc": fitness}
    if per_seed is not None:
      metrics["ood_val_acc_per_seed"] = per_seed
    return archive.record_result(cid, metrics, fitness, features)
  if status == "rejected":
    archive.record_rejection(cid, "shape", "nxt_hidden is [2,3], expected [2,3,4]")
  else:
    archive.record_failure(cid, "evaluate", "timeout")
  return archive.get(cid)


class ArchiveTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = pathlib.Path(tmp.name)

  def test_seed_on_every_island_and_best(self):
    a = _archive(self.tmp, num_islands=3)
    _add(a, 0, None, 0.5, island=None)
    for i in range(3):
      self.assertEqual([c.id for c in a.island_members(i)], [0])
    _add(a, 1, 0, 0.7, island=1)
    _add(a, 2, 0, 0.7, island=2)  # Tie: best stays the earlier one.
    self.assertEqual(a.best().id, 1)
    self.assertEqual([c.id for c in a.island_members(1)], [0, 1])

  def test_infeasible_and_failed_never_sampled(self):
    a = _archive(self.tmp, num_islands=1, exploration_ratio=0.4, exploitation_ratio=0.4,
                 elite_selection_ratio=0.2)
    _add(a, 0, None, 0.1, island=None)
    for cid in range(1, 6):
      _add(a, cid, 0, 0.0, status="rejected")
    _add(a, 6, 0, 0.0, status="failed")
    rng = np.random.default_rng(0)
    drawn = {a.sample_parent(0, rng).parent.id for _ in range(200)}
    self.assertEqual(drawn, {0})
    self.assertEqual([c.id for c in a.parents()], [0])

  def test_sampling_ratios(self):
    a = _archive(self.tmp, num_islands=1, archive_size=2, exploration_ratio=0.2,
                 exploitation_ratio=0.5, elite_selection_ratio=0.3, feature_bins=20)
    _add(a, 0, None, 0.1, island=None)
    for cid, (fit, macs) in enumerate([(0.2, 200.0), (0.9, 3000.0), (0.4, 6000.0)], start=1):
      _add(a, cid, 0, fit, features={"macs": macs, "param_count": 100.0})
    rng = np.random.default_rng(1)
    n = 4000
    methods = collections.Counter()
    parents = collections.Counter()
    for _ in range(n):
      sel = a.sample_parent(0, rng)
      methods[sel.method] += 1
      parents[(sel.method, sel.parent.id)] += 1
    self.assertAlmostEqual(methods["elite"] / n, 0.3, delta=0.03)
    self.assertAlmostEqual(methods["exploitation"] / n, 0.5, delta=0.03)
    self.assertAlmostEqual(methods["exploration"] / n, 0.2, delta=0.03)
    # Elite = the best; exploitation = the top archive_size=2; exploration = all four cells.
    self.assertEqual({p for m, p in parents if m == "elite"}, {2})
    self.assertEqual({p for m, p in parents if m == "exploitation"}, {2, 3})
    self.assertEqual({p for m, p in parents if m == "exploration"}, {0, 1, 2, 3})

  def test_map_elites_replacement(self):
    a = _archive(self.tmp, num_islands=1)
    _add(a, 0, None, 0.5, island=None)
    cell = a.cell(SEED_FEATURES)
    self.assertEqual(a.grid(0), {cell: 0})
    _add(a, 1, 0, 0.4)  # Same cell, worse: the seed keeps the cell.
    self.assertEqual(a.grid(0)[cell], 0)
    _add(a, 2, 0, 0.6)  # Same cell, strictly better: replaces.
    self.assertEqual(a.grid(0)[cell], 2)
    _add(a, 3, 0, 0.6)  # Equal fitness does not replace.
    self.assertEqual(a.grid(0)[cell], 2)
    big = {"macs": 8000.0, "param_count": 100.0}  # 8x the seed's MACs: a new cell.
    _add(a, 4, 0, 0.1, features=big)
    self.assertNotEqual(a.cell(big), cell)
    self.assertEqual(a.grid(0)[a.cell(big)], 4)

  def test_island_capacity_keeps_best_and_cell_holders(self):
    a = _archive(self.tmp, num_islands=1, population_size=3)
    _add(a, 0, None, 0.5, island=None)
    for cid, fit in enumerate([0.1, 0.2, 0.3, 0.9], start=1):
      _add(a, cid, 0, fit)
    ids = {c.id for c in a.island_members(0)}
    self.assertLen(ids, 3)
    self.assertIn(4, ids)  # The best and the cell holder.
    self.assertNotIn(1, ids)
    self.assertEqual(set(a.grid(0).values()), {4})

  def test_ring_migration(self):
    a = _archive(self.tmp, num_islands=3, migration_rate=0.5)
    _add(a, 0, None, 0.1, island=None)
    _add(a, 1, 0, 0.8, island=0)
    _add(a, 2, 0, 0.6, island=1)
    moves = a.migrate(iteration=10)
    self.assertIn((0, 1, 1), moves)
    self.assertIn((1, 2, 2), moves)
    self.assertIn(1, {c.id for c in a.island_members(1)})
    self.assertIn(2, {c.id for c in a.island_members(2)})
    self.assertNotIn(1, {c.id for c in a.island_members(2)})  # Migrants do not cascade.
    self.assertEqual(a.migrate(iteration=10), [])  # Once per iteration, even after a restart.

  def test_island_reset_restarts_the_weaker_half(self):
    a = _archive(self.tmp, num_islands=4)
    _add(a, 0, None, 0.1, island=None)
    for cid, (island, fit) in enumerate([(0, 0.9), (1, 0.2), (2, 0.8), (3, 0.3)], start=1):
      _add(a, cid, 0, fit, island=island)
    resets = a.reset_islands(iteration=20, fraction=0.5, rng=np.random.default_rng(0))
    self.assertEqual(sorted(r[0] for r in resets), [1, 3])
    for island, source, founder in resets:
      self.assertIn(source, (0, 2))
      self.assertEqual(founder, {0: 1, 2: 3}[source])
      self.assertEqual([c.id for c in a.island_members(island)], [founder])
      self.assertEqual(set(a.grid(island).values()), {founder})
    self.assertEqual({c.id for c in a.island_members(0)}, {0, 1})  # Survivors untouched.
    self.assertEqual(a.reset_islands(20, 0.5, np.random.default_rng(0)), [])
    self.assertEqual(a.get(2).status, "evaluated")  # Candidates themselves are kept.

  def test_reopen_keeps_everything(self):
    a = _archive(self.tmp, num_islands=2)
    _add(a, 0, None, 0.3, island=None)
    a.record_proposal(1, parent_id=0, island=1, strategy="spark", scope=("OPERATOR",),
                      directive="widen", decision={"scope_source": "llm"}, code="x = 1\n",
                      llm_calls=[{"role": "router", "model": "m", "messages": [],
                                  "reply": "{}", "prompt_tokens": 3, "completion_tokens": 4}])
    a.mark_evaluating(1)
    a.migrate(iteration=5)
    a.close()
    b = _archive(self.tmp, num_islands=2)
    self.assertEqual([c.id for c in b.pending()], [1])
    self.assertEqual(b.get(1).scope, ("OPERATOR",))
    self.assertEqual(b.get(1).decision, {"scope_source": "llm"})
    self.assertEqual(b.db.llm_calls(1)[0]["completion_tokens"], 4)
    self.assertEqual([c.id for c in b.island_members(1)], [0])
    self.assertEqual(b.db.get_meta("last_migration"), 5)
    b.record_result(1, {"ood_val_acc": 0.4}, 0.4, SEED_FEATURES)
    self.assertEqual(b.best().id, 1)
    self.assertEqual(b.pending(), [])
    with sqlite3.connect(self.tmp / "archive.sqlite") as conn:
      mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    self.assertEqual(mode, "wal")
    with self.assertRaises(sqlite3.IntegrityError):  # Ids are never reused.
      b.record_proposal(1, parent_id=0, island=0, strategy="spark", scope=None,
                        directive=None, decision={}, code=None)

  def test_lineage_rows(self):
    a = _archive(self.tmp, num_islands=1)
    _add(a, 0, None, 0.5, island=None)
    _add(a, 1, 0, 0.6)
    _add(a, 2, 0, 0.0, status="rejected")
    _add(a, 3, 1, 0.7)
    _add(a, 4, 2, 0.9)  # A child of a rejected candidate is not in 3's lineage.
    rows = a.lineage(3)
    self.assertEqual([r.id for r in rows], [1, 2, 3])
    self.assertEqual(rows[1].stage, "shape")
    self.assertEqual([r.id for r in a.lineage(3, limit=2)], [2, 3])



class EngineOptionsTest(absltest.TestCase):
  """What a strategy's EngineOptions change, on a real archive."""

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = pathlib.Path(tmp.name)

  def _two_islands(self, options, **settings):
    a = _archive(self.tmp, num_islands=2, **settings)
    a.configure(options)
    _add(a, 0, None, 0.1, island=None)
    for cid in range(1, 9):  # Island 0 holds the weak programs, island 1 the strong ones.
      _add(a, cid, 0, (0.2 if cid % 2 == 0 else 0.9) + 0.001 * cid, island=cid % 2)
    return a

  def test_default_engine_exploits_global_elites(self):
    a = self._two_islands(None)
    rng = np.random.default_rng(0)
    drawn = [a.sample_parent(0, rng).parent for _ in range(300)]
    foreign = sum(c.island == 1 for c in drawn)
    self.assertGreater(foreign, 50)  # The issue's leak: island 0 breeds island 1's programs.

  def test_island_sampler_stays_on_the_island(self):
    a = self._two_islands(engine_options.EngineOptions(sampler="island"))
    rng = np.random.default_rng(0)
    drawn = [a.sample_parent(0, rng) for _ in range(300)]
    self.assertTrue(all(s.parent.id in {0, 2, 4, 6, 8} for s in drawn))
    self.assertEqual({s.method for s in drawn}, {"weighted", "exploitation", "exploration"})

  def test_funsearch_clusters_island_local_by_score_short_programs_first(self):
    a = _archive(self.tmp, num_islands=2)
    a.configure(engine_options.EngineOptions(sampler="clusters", companions=1,
                                             migration="none"))
    _add(a, 0, None, 0.1, island=None, code="x = 0\n")
    # Island 0: one cluster of three programs with equal scores (lengths 10, 20 and 400
    # characters) and one weak program; island 1: a much better program.
    for cid, length in ((1, 10), (3, 20), (5, 400)):
      _add(a, cid, 0, 0.5, island=0, code="y" * (length - 1) + "\n", per_seed=[0.5])
    _add(a, 7, 0, 0.45, island=0)
    _add(a, 2, 0, 0.99, island=1)
    rng = np.random.default_rng(0)
    picks = collections.Counter()
    for _ in range(400):
      s = a.sample_parent(0, rng)
      shown = [s.parent, *s.companions]
      self.assertEqual(s.method, "cluster")
      self.assertLen(shown, 2)
      self.assertTrue(all(c.island in (None, 0) for c in shown))  # Never island 1's.
      self.assertEqual(s.parent.fitness, max(c.fitness for c in shown))  # Best = parent.
      # Clusters are drawn with replacement, as FunSearch does: one or two clusters.
      self.assertLessEqual(len({archive_lib.score_signature(c) for c in shown}), 2)
      picks.update(c.id for c in shown if c.fitness == 0.5)
    self.assertGreater(picks[1], picks[5])  # Shorter programs favoured in the cluster.
    self.assertGreater(picks[3], picks[5])
    self.assertEqual(a.migrate(10), [])  # FunSearch never migrates.
    self.assertNotIn(2, [c.id for c in a.island_members(0)])

  def test_cluster_temperature_schedule_prefers_high_scores(self):
    a = _archive(self.tmp, num_islands=1)
    a.configure(engine_options.EngineOptions(sampler="clusters"))
    _add(a, 0, None, 0.1, island=None)
    _add(a, 1, 0, 0.5, island=0)
    rng = np.random.default_rng(1)
    counts = collections.Counter(a.sample_parent(0, rng).parent.id for _ in range(400))
    # softmax((0.1, 0.5) / T) with T = 0.1 * (1 - 2/30000): p(0.5) = 1/(1 + e^-4) = 0.98.
    self.assertGreater(counts[1], 370)
    self.assertGreater(counts[0], 0)

  def test_eoh_rank_selection_and_fixed_population(self):
    a = _archive(self.tmp, num_islands=1, population_size=100)
    a.configure(engine_options.EngineOptions(sampler="rank", companions=1, population=4))
    _add(a, 0, None, 0.1, island=None, features={"macs": 1.0, "param_count": 1.0})
    for cid in range(1, 7):  # Distinct cells: without the rule all would be kept.
      _add(a, cid, 0, 0.1 * cid, island=0,
           features={"macs": 2.0 ** (3 * cid), "param_count": 1.0})
    members = sorted(c.id for c in a.island_members(0))
    self.assertEqual(members, [3, 4, 5, 6])  # The four fittest, cell holders or not.
    rng = np.random.default_rng(0)
    counts = collections.Counter()
    for _ in range(2000):
      s = a.sample_parent(0, rng)
      self.assertEqual(s.method, "rank")
      counts[s.parent.id] += 1
      self.assertLen(s.companions, 1)  # With replacement: it may be the parent again.
    # p(rank r) = (1/(r+5)) / sum: 0.298, 0.248, 0.213, 0.186 for ranks 0..3.
    for cid, p in ((6, 0.298), (5, 0.248), (4, 0.213), (3, 0.186)):
      self.assertAlmostEqual(counts[cid] / 2000, p, delta=0.035)

  def test_migration_to_both_neighbours(self):
    a = _archive(self.tmp, num_islands=3, migration_rate=0.01)
    a.configure(engine_options.EngineOptions(sampler="island", migration="both"))
    _add(a, 0, None, 0.1, island=None)
    _add(a, 1, 0, 0.9, island=1)
    moves = a.migrate(10)
    self.assertIn((1, 2, 1), moves)
    self.assertIn((1, 0, 1), moves)
    for island in range(3):
      self.assertIn(1, [c.id for c in a.island_members(island)])

  def test_duplicates_reuse_metrics_and_are_never_parents(self):
    a = _archive(self.tmp, num_islands=1)
    _add(a, 0, None, 0.1, island=None)
    original = _add(a, 1, 0, 0.6, island=0)
    a.record_proposal(2, parent_id=0, island=0, strategy="spark", scope=("ACTION",),
                      directive="d", decision={}, code="# 1\n")
    a.record_duplicate(2, original)
    twin = a.get(2)
    self.assertEqual((twin.status, twin.stage, twin.fitness), ("evaluated", "duplicate", 0.6))
    self.assertEqual(twin.metrics["duplicate_of"], 1)
    self.assertEqual(twin.metrics["train_seconds"], 0.0)
    self.assertNotIn(2, [c.id for c in a.parents()])
    self.assertNotIn(2, [c.id for c in a.island_members(0)])
    self.assertEqual(a.best().id, 1)



class StorageTest(absltest.TestCase):
  """archive_db: the recording order, the stored decisions, the final re-evaluations."""

  def test_recording_order_survives_metrics_added_later(self):
    import time

    a = _archive(pathlib.Path(self.create_tempdir().full_path))
    _add(a, 0, None, 0.5, island=None)
    _add(a, 1, 0, 0.6)
    first = a.get(0).finished_at
    time.sleep(0.01)
    a.update_metrics(0, {"ood_acc": 0.4})  # A deferred OOD-test scored after candidate 1.
    self.assertEqual(a.get(0).finished_at, first)
    self.assertLess(a.get(0).finished_at, a.get(1).finished_at)
    a.mark_evaluating(1)  # Re-run after a crash: unfinished again.
    self.assertIsNone(a.get(1).finished_at)
    a.db.set_comparison(0, {"new_best": True})
    self.assertEqual(a.get(0).comparison, {"new_best": True})
    self.assertEqual(a.get(1).comparison, {})

  def test_final_evaluation_rows(self):
    a = _archive(pathlib.Path(self.create_tempdir().full_path))
    _add(a, 0, None, 0.5, island=None)
    a.db.start_final_evaluation(0, [3, 4])
    self.assertEqual([(r["candidate_id"], r["seeds"], r["status"])
                      for r in a.db.final_evaluations()], [(0, [3, 4], "evaluating")])
    a.db.finish_final_evaluation(0, [3, 4], "evaluated", "", {"ood_val_acc": 0.5})
    row = a.db.final_evaluations()[0]
    self.assertEqual((row["status"], row["metrics"]), ("evaluated", {"ood_val_acc": 0.5}))
    a.db.start_final_evaluation(0, [3, 4])  # A resume re-running it starts it afresh.
    self.assertEqual(a.db.final_evaluations()[0]["status"], "evaluating")


if __name__ == "__main__":
  absltest.main()
