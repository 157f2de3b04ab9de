"""Every strategy in real runs: archive context, the controller loop, quick searches.

The population context must come out of a real archive, and every strategy must
complete a controller run (fake trainer, LLM via a scripted local server, fast) and a
real quick-profile search (marked slow).
"""

import json
import os
import pathlib
import tempfile
from unittest import mock

import helpers
import pytest
from absl.testing import absltest, parameterized
from llm_server import Reply, ScriptedServer

from spark_clrs import config
from spark_clrs.llm import offline
from spark_clrs.proposers import ContextRequest, IslandReset, ParentInfo, population
from spark_clrs.search import archive, rundir
from spark_clrs.search.controller import Controller

FACTORS = ("OPERATOR", "ACTION")


class PopulationTest(absltest.TestCase):
  """Inspirations from a real archive: top, diverse (other cells) and island members."""

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.archive = archive.Archive(pathlib.Path(tmp.name) / "archive.sqlite",
                                   archive.ArchiveSettings(num_islands=2))
    self.addCleanup(self.archive.close)
    base = {"macs": 1000.0, "param_count": 100.0}
    rows = [  # id, parent, island, fitness, feature scale
        (0, None, None, 0.5, 1), (1, 0, 0, 0.55, 1), (2, 0, 0, 0.9, 1), (3, 0, 0, 0.7, 8),
        (4, 0, 0, 0.2, 2), (5, 0, 1, 0.6, 1)]
    for cid, parent, island, fitness, scale in rows:
      self.archive.record_proposal(cid, parent_id=parent, island=island, strategy="x",
                                   scope=None, directive=None, decision={"thought": f"t{cid}"},
                                   code=f"# program {cid}\n")
      features = {k: v * scale for k, v in base.items()}
      self.archive.record_result(cid, {"ood_val_acc": fitness, **features}, fitness, features)
    self.archive.record_proposal(6, parent_id=0, island=0, strategy="x", scope=None,
                                 directive=None, decision={}, code="# rejected\n",
                                 status="rejected", stage="shape", reason="shape")

  def test_top_diverse_and_island(self):
    parent = self.archive.get(1)
    got = population.inspirations(self.archive, parent, 0,
                                  ContextRequest(top=2, diverse=2, island=5))
    self.assertEqual([(p.program_id, p.source) for p in got],
                     [("2", "top"), ("3", "top"), ("4", "diverse"), ("0", "island")])
    diverse = got[2]
    self.assertEqual(diverse.cell, self.archive.cell(self.archive.get(4).features))
    self.assertNotEqual(diverse.cell, self.archive.cell(parent.features))
    self.assertEqual(got[0].text, "# program 2\n")
    self.assertEqual(got[0].decision, {"thought": "t2"})
    self.assertEqual(got[0].fitness, 0.9)

  def test_empty_request_and_small_populations(self):
    parent = self.archive.get(1)
    self.assertEqual(population.inspirations(self.archive, parent, 0, ContextRequest()), ())
    got = population.inspirations(self.archive, parent, 1, ContextRequest(island=10))
    self.assertEqual([p.program_id for p in got], ["5", "0"])  # Rejected 6 never appears.

  def test_request_validation(self):
    with self.assertRaisesRegex(ValueError, "ContextRequest.top must be >= 0"):
      ContextRequest(top=-1)
    with self.assertRaisesRegex(ValueError, "IslandReset needs"):
      IslandReset(interval=0)
    with self.assertRaisesRegex(ValueError, "ParentInfo.source='elite'"):
      ParentInfo("1", "x", source="elite")


class ControllerRunTest(parameterized.TestCase):
  """Every strategy in the real controller loop (fake trainer), LLM via the local server."""

  @parameterized.parameters(*sorted(config.STRATEGIES))
  def test_strategy_completes_a_run(self, strategy):
    tmp = self.create_tempdir().full_path
    responder = lambda request: Reply(offline.answer(request["messages"], seed=0))  # noqa: E731
    with ScriptedServer(responder=responder) as server:
      cfg = config.SearchConfig(
          output=os.path.join(tmp, "run"), strategy=strategy, profile="quick", iterations=4,
          feasibility_check=False, progress="none", num_islands=2, migration_interval=2,
          llm_model="openai/scripted", llm_api_base=server.api_base)
      Controller(rundir.open_run(cfg), evaluate=helpers.FakeTrainer()).run()
      hits = server.hits
    db = archive.ArchiveDB(os.path.join(tmp, "run", "archive.sqlite"))
    try:
      candidates = db.candidates()
      calls = db.llm_calls()
    finally:
      db.close()
    proposals = [c for c in candidates if c.is_proposal]
    self.assertLen(proposals, 4)
    summary = json.loads(pathlib.Path(tmp, "run", "results", "summary.json").read_text())
    self.assertEqual(summary["proposals"], 4)
    for c in proposals:
      self.assertEqual(c.strategy, strategy)
      self.assertEqual(c.decision["strategy"], strategy)
      self.assertIn("prompt", c.decision)
      self.assertIsNotNone(c.entangled, c.reason)
    if strategy == "mutation":
      self.assertEqual((hits, calls), (0, []))
    else:
      self.assertEqual(len(calls), hits)
      self.assertTrue(all(call["model"] == "openai/scripted" for call in calls))
    free = strategy in ("openevolve", "evoprompting", "funsearch", "eoh")
    self.assertEqual({c.scope is None for c in proposals}, {free})
    if strategy == "rc_sar":
      self.assertEqual({c.scope for c in proposals}, {FACTORS})
    if free:  # Unscoped children touching two factors count as entangled.
      self.assertEqual([c.entangled for c in proposals],
                       [len(c.changed_factors) > 1 for c in proposals])
    if strategy in ("openevolve", "funsearch"):  # The controller's context.
      self.assertGreater(max(c.decision["prompt"]["inspirations"] for c in proposals), 0)
    if strategy in ("eoh", "evoprompting"):  # One population, whatever --num_islands says.
      self.assertEqual({c.island for c in proposals}, {0})
      self.assertEqual({c.decision["parent_selection"] for c in proposals},
                       {"eoh": {"rank"}, "evoprompting": {"uniform"}}[strategy])


JAX_CACHE = pathlib.Path(tempfile.gettempdir()) / "spark_clrs_test_jax_cache"
QUICK = dict(profile="quick", profile_overrides=("train_steps=2", "hidden=16"), iterations=2,
             num_islands=2, progress="log", seed=0)


@pytest.mark.slow
class QuickSearchTest(parameterized.TestCase):
  """Real quick-profile searches (sandboxed checks + CLRS training), offline provider.

  One run takes minutes on the 2-core CI box (about 4.5 min for openevolve under shared
  load), so all are slow; ControllerRunTest runs every strategy through the same loop
  with a fake trainer by default.
  """

  def setUp(self):
    super().setUp()
    patcher = mock.patch.dict(os.environ, {"JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE),
                                           "MPLBACKEND": "Agg"})
    patcher.start()
    self.addCleanup(patcher.stop)

  @parameterized.parameters(*sorted(config.STRATEGIES))
  def test_quick_search(self, strategy):
    import spark_clrs

    out = pathlib.Path(self.create_tempdir().full_path) / "run"
    result = spark_clrs.search(output=str(out), strategy=strategy, **QUICK)
    self.assertEqual(result.summary["proposals"], 2)
    self.assertEqual([c.id for c in result.candidates], [0, 1, 2])
    for c in result.candidates[1:]:
      self.assertEqual(c.strategy, strategy)
      self.assertEqual(c.decision["strategy"], strategy)
      self.assertNotIn(c.status, ("proposed", "evaluating"))
    self.assertIsNotNone(result.best)
    self.assertIsNotNone(result.summary["entanglement_rate"])


if __name__ == "__main__":
  absltest.main()
