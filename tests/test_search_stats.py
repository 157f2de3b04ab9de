"""The search's statistics in the loop (issue 18), with a fake trainer (no JAX, seconds).

* paired decisions: a child equal to its parent up to its random initialisation is never a
  NEW BEST, a clearly better one is, and the decision is stored with each candidate;
* the final re-evaluation: fresh seeds never used in the search, summary["final"], the
  console's last line, resume of a killed re-evaluation;
* an archive written before issue 18 loads, reports and resumes;
* the end of the spend budget in the middle of a proposal.
"""

import hashlib
import json
import pathlib
import sqlite3
import types

import helpers
import numpy as np
from absl.testing import absltest

from spark_clrs import config as config_lib
from spark_clrs.programs import regions
from spark_clrs.search import archive_db, rundir, standing
from spark_clrs.search.controller import Controller
from spark_clrs.search.results import SearchResult

G = 128
GRAPHS = np.random.default_rng(0).normal(0.0, 0.05, G)  # The OOD-val set's hard graphs.


class NoisyEvaluate:
  """Per-graph accuracies like the quick profile's: 0.4 + 0.1 per ``# GAIN`` line.

  The training noise (seed term 0.01, per-graph 0.03) is drawn from the program text and
  the seed, so a program that differs from its parent by a no-op statement is the same
  architecture with another random initialisation.
  """

  def __init__(self, interrupt_final_on=None):
    self.calls = []  # (program stem, seeds)
    self.interrupt_final_on = interrupt_final_on

  def __call__(self, program_path, profile, seeds, *, workdir, limits):
    del profile, limits
    name = pathlib.Path(program_path).stem
    self.calls.append((name, tuple(seeds)))
    if self.interrupt_final_on == name and pathlib.Path(workdir).name.startswith("final"):
      raise KeyboardInterrupt  # Killed during its final re-evaluation.
    text = pathlib.Path(program_path).read_text()
    mu = 0.4 + 0.1 * text.count("# GAIN")
    rows = {}
    for name_, offset in (("ood_val_acc", 0), ("ood_acc", 1)):
      rows[name_] = []
      for s in seeds:
        digest = hashlib.sha256(f"{text}|{s}|{offset}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        rows[name_].append(mu + rng.normal(0, 0.01) + GRAPHS + rng.normal(0, 0.03, G))
    metrics = {"seeds": list(seeds), "macs": 5000 + 100 * text.count("# GAIN"),
               "param_count": 1000, "train_seconds": 0.1}
    for name_, matrix in rows.items():
      matrix = np.asarray(matrix)
      metrics.update({name_: float(matrix.mean()),
                      f"{name_}_per_seed": matrix.mean(axis=1).tolist(),
                      f"{name_}_per_graph": matrix.tolist()})
    return types.SimpleNamespace(status="ok", reason="", metrics=metrics)


class EditProposer:
  """``noop``: the parent plus a harmless statement (same architecture, new init);
  ``gain``: a clearly better program (one more ``# GAIN`` line)."""

  name = "edit"

  def __init__(self, plan):
    self.plan = plan
    self.calls = 0

  def propose(self, parent, history, rng):
    from spark_clrs.proposers import Proposal

    del history
    kind = self.plan[self.calls]
    self.calls += 1
    edit = int(rng.integers(1 << 30))
    line = f"    _noop_{edit} = {edit}\n" + ("    # GAIN\n" if kind == "gain" else "")
    child = regions.replace_region(parent.text, "ACTION",
                                   regions.get_region(parent.text, "ACTION") + line)
    return Proposal(child_text=child, scope=("ACTION",), directive=kind,
                    decision={"scope_source": "llm"})



class _Case(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = pathlib.Path(self.create_tempdir().full_path)
    self.run_dir = self.tmp / "run"

  def search(self, plan, evaluate, **overrides):
    cfg = config_lib.SearchConfig(**{
        "output": str(self.run_dir), "profile": "quick", "feasibility_check": False,
        "progress": "log", "num_islands": 1, "iterations": len(plan), "seed": 0,
        "exploration_ratio": 0.0, "exploitation_ratio": 0.0, "elite_selection_ratio": 1.0,
        **overrides})
    log = self.tmp / "console.txt"
    with open(log, "a") as stream:
      Controller(rundir.open_run(cfg), proposer=EditProposer(plan), evaluate=evaluate,
                 stream=stream).run()
    return json.loads((self.run_dir / "results" / "summary.json").read_text()), log.read_text()


class PairedDecisionTest(_Case):

  def test_noop_children_tie_and_a_real_gain_is_a_new_best(self):
    plan = ["noop"] * 6 + ["gain"] + ["noop"] * 3
    summary, console = self.search(plan, NoisyEvaluate(), final_top_k=0)
    cands = {c.id: c for c in helpers.run_candidates(self.run_dir)}
    new_bests = [c.id for c in cands.values() if c.comparison.get("new_best")]
    self.assertEqual(new_bests, [0, 7])  # The seed, then the one real gain.
    self.assertEqual(summary["new_bests"], 1)
    self.assertEqual(summary["best_program_id"], 7)
    # A no-op child may have a higher raw mean than the seed; it is still a tie.
    noops = [cands[i] for i in range(1, 7)]
    self.assertTrue(all(c.comparison["verdict"] == "tie" for c in noops))
    self.assertEqual(console.count("NEW BEST"), 1)
    self.assertEqual(console.count("tie within noise"), 9)
    record = cands[7].comparison
    self.assertEqual((record["against"], record["verdict"]), (0, "better"))
    self.assertGreater(record["lo"], 0)
    self.assertEqual(record["paired"], "graphs")
    # Single-seed candidates borrow the seed program's 3-seed spread.
    seed = cands[0]
    self.assertEqual(seed.metrics["seeds"], [0, 1, 2])
    self.assertEqual(cands[1].metrics["ood_val_acc_interval"]["seed_term"], "borrowed")
    self.assertEqual(seed.metrics["ood_val_acc_interval"]["seed_term"], "measured")
    self.assertIn("seed spread of the seed program", console)
    steps = standing.best_so_far(list(cands.values()))
    self.assertEqual([s.best_id for s in steps], [0] * 7 + [7] * 4)
    self.assertEqual(summary["seed_spread"]["seeds"], 3)
    self.assertEqual([r["id"] for r in summary["pareto_front"]][-1], 7)


class FinalReevaluationTest(_Case):

  def test_fresh_seeds_never_used_in_the_search(self):
    evaluate = NoisyEvaluate()
    summary, console = self.search(["gain", "noop", "gain", "noop"], evaluate,
                                   final_top_k=3, final_seeds=3)
    final = summary["final"]
    used = set()
    for c in helpers.run_candidates(self.run_dir):
      used |= set(c.metrics.get("seeds") or [])
    used |= set(summary["training_seeds"]) | set(summary["seed_program_seeds"])
    self.assertEqual(final["seeds"], [3, 4, 5])
    self.assertFalse(used & set(final["seeds"]))
    final_calls = [(n, s) for n, s in evaluate.calls if set(s) & set(final["seeds"])]
    self.assertTrue(all(s == (3, 4, 5) for _, s in final_calls))
    self.assertLen(final_calls, 3)
    self.assertEqual(final["candidates"][0]["id"], summary["best_program_id"])
    self.assertEqual(final["status"], "complete")
    best = max(final["candidates"], key=lambda e: e["ood_val_acc"])
    self.assertEqual(final["best_id"], best["id"])
    for entry in final["candidates"]:
      self.assertEqual(entry["ood_val_acc_interval"]["seeds"], 3)
      self.assertIn("95% CI, 3 seeds x 128 graphs", entry["ood_acc_interval"]["text"])
      self.assertIsNotNone(entry["search_fitness"])
    last = console.strip().splitlines()[-1]
    self.assertIn("final (re-trained with fresh seeds 3,4,5)", last)
    self.assertIn("search-time best candidate", last)
    self.assertTrue(summary["complete"])
    result = SearchResult.load(self.run_dir)
    self.assertEqual(result.final["best_id"], final["best_id"])
    self.assertIn("result (final re-evaluation, fresh seeds 3,4,5)", str(result))

  def test_killed_final_reevaluation_reruns_only_the_unfinished(self):
    plan = ["gain", "gain", "noop"]  # Final order: the best (2), then 3 and 1 by fitness.
    first = NoisyEvaluate(interrupt_final_on="0003")
    with self.assertRaises(KeyboardInterrupt):
      self.search(plan, first, final_top_k=3, final_seeds=2)
    summary = json.loads((self.run_dir / "results" / "summary.json").read_text())
    final = summary["final"]
    self.assertEqual([e["id"] for e in final["candidates"]], [2, 3, 1])
    self.assertEqual([e["status"] for e in final["candidates"]],
                     ["evaluated", "evaluating", "evaluating"])
    self.assertEqual((final["status"], summary["complete"]), ("partial", False))
    self.assertEqual([n for n, s in first.calls if s == (3, 4)], ["0002", "0003"])
    second = NoisyEvaluate()
    summary, console = self.search(plan, second, final_top_k=3, final_seeds=2)
    # Nothing proposed or trained again but the two unfinished re-evaluations.
    self.assertEqual(second.calls, [("0003", (3, 4)), ("0001", (3, 4))])
    self.assertEqual(summary["final"]["status"], "complete")
    self.assertTrue(summary["complete"])
    self.assertIn("final re-evaluation: candidate(s) 3, 1 re-trained", console)


# The archive schema before issue 18 (no comparison column, no final_evaluations table).
_OLD_CANDIDATES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE candidates (
  id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES candidates(id), island INTEGER,
  strategy TEXT NOT NULL, scope TEXT, directive TEXT, decision TEXT NOT NULL, code TEXT,
  changed_factors TEXT, entangled INTEGER, status TEXT NOT NULL, stage TEXT, reason TEXT,
  metrics TEXT, fitness REAL, features TEXT, created_at REAL NOT NULL, finished_at REAL);
INSERT INTO meta VALUES ('schema_version', '1');
"""


class OldArchiveTest(_Case):

  def test_old_archive_loads_reports_and_resumes(self):
    self.search(["noop", "gain"], NoisyEvaluate(), final_top_k=0, seed_program_seeds=1)
    cands = helpers.run_candidates(self.run_dir)
    # Rewrite the archive in the old schema, with old-style metrics (no per-graph rows).
    path = self.run_dir / "archive.sqlite"
    old = self.tmp / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.executescript(_OLD_CANDIDATES)
    for c in cands:
      metrics = {k: v for k, v in c.metrics.items()
                 if not k.endswith(("_per_graph", "_interval"))}
      metrics["ood_val_acc_ci"] = 0.01
      conn.execute("INSERT INTO candidates VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (c.id, c.parent_id, c.island, c.strategy,
                    json.dumps(list(c.scope)) if c.scope else None, c.directive,
                    json.dumps(c.decision), c.code, json.dumps(list(c.changed_factors)),
                    None if c.entangled is None else int(c.entangled), c.status, c.stage,
                    c.reason, json.dumps(metrics), c.fitness, json.dumps(c.features),
                    c.created_at, c.finished_at))
    conn.commit()
    conn.close()
    for suffix in ("", "-wal", "-shm"):
      pathlib.Path(str(path) + suffix).unlink(missing_ok=True)
    old.rename(path)
    (self.run_dir / "results" / "summary.json").unlink()
    result = SearchResult.load(self.run_dir)  # Decided on the fly, nothing written.
    self.assertEqual(result.best.id, 2)
    self.assertIsNone(result.final)
    self.assertTrue(all(not c.comparison for c in result.candidates))
    summary, _ = self.search(["noop", "gain", "noop"], NoisyEvaluate(), final_top_k=1,
                             seed_program_seeds=1)
    cands = {c.id: c for c in helpers.run_candidates(self.run_dir)}
    self.assertEqual(sorted(cands), [0, 1, 2, 3])
    self.assertTrue(all(c.comparison for c in cands.values()))  # Migrated on resume.
    self.assertEqual(summary["final"]["status"], "complete")
    self.assertIn("graph bootstrap", summary["seed_ood_val_acc_noise"]["text"])



class SpendStopTest(_Case):
  """The budget ends in the middle of a proposal: nothing half-made is recorded."""

  def test_token_budget_ends_a_proposal_between_two_calls(self):

    cfg = config_lib.SearchConfig(
        output=str(self.run_dir), profile="quick", feasibility_check=False, progress="log",
        num_islands=2, iterations=20, parallel_evaluations=2, strategy="spark",
        budget="tokens", budget_amount=20_000, llm_max_tokens=1000, final_top_k=1,
        final_seeds=1)
    log = self.tmp / "console.txt"
    with open(log, "w") as stream:
      Controller(rundir.open_run(cfg), evaluate=NoisyEvaluate(), stream=stream).run()
    summary = json.loads((self.run_dir / "results" / "summary.json").read_text())
    db = archive_db.ArchiveDB(self.run_dir / "archive.sqlite")
    try:
      calls, cands, used = db.llm_calls(), db.candidates(), db.llm_usage()
    finally:
      db.close()
    self.assertLess(summary["proposals"], 20)
    self.assertTrue(summary["budget"]["spent"])
    self.assertIn("--budget=tokens --budget_amount=20000 would be exceeded",
                  summary["stop_reason"])
    self.assertLessEqual(used[0], 20_000)  # Checked before every request: no overshoot.
    # The proposal the budget ended has its sent calls stored, but no candidate.
    last = max(c.id for c in cands)
    orphans = [c for c in calls if c["candidate_id"] is None]
    self.assertTrue(orphans)
    self.assertEqual({c["iteration"] for c in orphans}, {last + 1})
    self.assertTrue(all(c.status not in ("proposed", "evaluating") for c in cands))
    self.assertTrue(summary["complete"])  # A spent budget is a complete run.
    self.assertEqual(summary["final"]["status"], "complete")

  def test_spend_limit_stops_the_run_without_a_final(self):
    from spark_clrs import llm

    class Refused(EditProposer):
      def propose(self, parent, history, rng):
        if self.calls == 2:
          raise llm.SpendExhausted("--max_cost_usd=0.01 would be exceeded: $0.0100 spent",
                                   cap="max_cost_usd")
        return super().propose(parent, history, rng)

    cfg = config_lib.SearchConfig(output=str(self.run_dir), profile="quick",
                                  feasibility_check=False, progress="none", num_islands=1,
                                  iterations=5)
    Controller(rundir.open_run(cfg), proposer=Refused(["noop"] * 5),
               evaluate=NoisyEvaluate()).run()
    summary = json.loads((self.run_dir / "results" / "summary.json").read_text())
    self.assertEqual(summary["proposals"], 2)
    self.assertEqual([c.id for c in helpers.run_candidates(self.run_dir)], [0, 1, 2])
    self.assertIn("--max_cost_usd=0.01 would be exceeded", summary["stop_reason"])
    self.assertFalse(summary["complete"])
    self.assertIsNone(summary["final"])  # Re-run with a larger limit first.
    self.assertIn("search stopped early", (self.run_dir / "logs" / "search.log").read_text())


if __name__ == "__main__":
  absltest.main()
