"""Archive tests: sampling ratios, infeasible never sampled, MAP-Elites, migration, reopening."""

import collections
import pathlib
import sqlite3
import tempfile

import numpy as np
from absl.testing import absltest

from spark_clrs import archive as archive_lib

SEED_FEATURES = {"macs": 1000.0, "param_count": 100.0}


def _archive(tmp, **settings) -> archive_lib.Archive:
  return archive_lib.Archive(tmp / "archive.sqlite", archive_lib.ArchiveSettings(**settings))


def _add(archive, cid, parent, fitness, features=None, island=0, status="ok"):
  archive.record_proposal(cid, parent_id=parent, island=island, strategy="spark",
                          scope=("ACTION",), directive="d", decision={}, code=f"# {cid}\n")
  features = features or SEED_FEATURES
  if status == "ok":
    return archive.record_result(cid, {"ood_val_acc": fitness}, fitness, features)
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


if __name__ == "__main__":
  absltest.main()
