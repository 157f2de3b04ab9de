"""Search tests: the controller with fakes (fast), real tiny searches, SIGKILL resume, quick.flags.

The real searches use a tiny `quick` profile (2 training steps, hidden 8) and share
one JAX persistent compilation cache, so a program compiled by one test is not
compiled again by the next (the offline proposer is deterministic, so the tests
propose the same programs).
"""

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import types
from unittest import mock

import helpers
import psutil
import pytest
from absl.testing import absltest

from spark_clrs import config as config_lib
from spark_clrs.programs import regions
from spark_clrs.search import api, archive_db, rundir
from spark_clrs.search.controller import Controller, SearchError

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEED_TEXT = (ROOT / "seeds" / "triplet_gmpnn.py").read_text()
JAX_CACHE = pathlib.Path(tempfile.gettempdir()) / "spark_clrs_test_jax_cache"
# BFS (half DFS's compilation) and one training seed: what these runs prove is the loop's
# bookkeeping around real jailed training, not the statistics.
TINY = dict(profile="quick", profile_overrides=("train_steps=2", "hidden=8", "algorithm=bfs"),
            iterations=2, num_islands=2, progress="log", seed=0, final_top_k=0,
            seed_program_seeds=1)
TINY_FLAGS = ["--profile=quick", "--profile_overrides=train_steps=2",
              "--profile_overrides=hidden=8", "--profile_overrides=algorithm=bfs",
              "--iterations=2", "--num_islands=2", "--progress=log", "--seed=0",
              "--final_top_k=0", "--seed_program_seeds=1"]
ENV = {"JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE), "MPLBACKEND": "Agg"}


def _tmpdir(test: absltest.TestCase) -> pathlib.Path:
  tmp = tempfile.TemporaryDirectory()
  test.addCleanup(tmp.cleanup)
  return pathlib.Path(tmp.name)



# ---------------------------------------------------------------------------- fakes


class FakeProposer:
  """Scripted proposals: an ACTION edit, an entangled edit, or no child, by iteration."""

  def __init__(self, plan):
    self.plan = plan  # iteration -> "good" | "entangled" | "none" | "timeout"
    self.calls = []

  def propose(self, parent, history, rng):
    from spark_clrs.proposers import Proposal

    del history
    self.calls.append(parent.program_id)
    kind = self.plan[len(self.calls) - 1]
    # A code edit (an identical AST would be rejected as unchanged before any compute).
    edit = rng.integers(1 << 30)
    tag = f"    _edit_{edit} = {edit}  # edit {edit}\n"
    child = regions.replace_region(parent.text, "ACTION",
                                   regions.get_region(parent.text, "ACTION") + tag)
    if kind == "entangled":
      child = regions.replace_region(child, "OPERATOR",
                                     regions.get_region(child, "OPERATOR") + "    # stray\n")
    if kind == "none":
      return Proposal(child_text=None, scope=("ACTION",), error="rewriter: truncated reply",
                      decision={"scope_source": "fallback"})
    if kind == "timeout":
      child = child.replace(tag, tag + "    # TIMEOUT\n")
    return Proposal(child_text=child, scope=("ACTION",), directive=f"edit {len(self.calls)}",
                    decision={"scope_source": "llm"})


class FakeEvaluate:
  """Fitness grows with the number of edits; '# TIMEOUT' programs time out."""

  def __init__(self, interrupt_on=None):
    self.calls = []
    self.interrupt_on = interrupt_on

  def __call__(self, program_path, profile, seeds, *, workdir, limits):
    del profile, seeds, limits
    text = pathlib.Path(program_path).read_text()
    name = pathlib.Path(program_path).stem
    self.calls.append(name)
    assert pathlib.Path(workdir).is_dir()
    if self.interrupt_on == name:
      raise KeyboardInterrupt  # Like Ctrl-C (or a kill) in the middle of training.
    if "# TIMEOUT" in text:
      return types.SimpleNamespace(status="timeout", metrics=None,
                                   reason="timeout: no result after 1s")
    edits = text.count("# edit")
    return types.SimpleNamespace(
        status="ok", reason="",
        metrics={"ood_val_acc": 0.5 + 0.01 * edits, "ood_acc": 0.4 + 0.01 * edits,
                 "val_acc": 0.9, "param_count": 1000 + edits, "macs": 5000 * (1 + edits),
                 "train_seconds": 0.1})


class ControllerTest(absltest.TestCase):
  """The loop's logic with a scripted proposer and evaluator (no JAX, seconds)."""

  def setUp(self):
    super().setUp()
    self.tmp = _tmpdir(self)

  def _run(self, plan, evaluate, **overrides):
    # The loop alone: the final re-evaluation is tested in test_search_stats.py.
    cfg = config_lib.SearchConfig(output=str(self.tmp / "run"), profile="quick",
                                  feasibility_check=False, progress="none", num_islands=2,
                                  migration_interval=2, **{"iterations": len(plan),
                                                           "final_top_k": 0, **overrides})
    proposer = FakeProposer(plan)
    opened = rundir.open_run(cfg)
    controller = Controller(opened, proposer=proposer, evaluate=evaluate,
                            refresh=api.PageRefresher(opened.run))
    return controller, proposer

  def test_loop_records_every_outcome(self):
    plan = ["good", "entangled", "none", "good", "timeout", "good"]
    evaluate = FakeEvaluate()
    controller, _ = self._run(plan, evaluate)
    controller.run()
    run = self.tmp / "run"
    cands = {c.id: c for c in helpers.run_candidates(run)}
    self.assertEqual(sorted(cands), list(range(7)))
    self.assertEqual(cands[0].status, "evaluated")
    self.assertEqual((cands[2].status, cands[2].stage), ("rejected", "entangled"))
    self.assertIn("region OPERATOR", cands[2].reason)
    self.assertEqual((cands[3].status, cands[3].stage), ("rejected", "proposal"))
    self.assertEqual((cands[5].status, cands[5].stage), ("failed", "evaluate"))
    self.assertIn("timeout", cands[5].reason)
    # Entangled and childless proposals never reach training.
    self.assertEqual(evaluate.calls, ["0000", "0001", "0004", "0005", "0006"])
    summary = json.loads((run / "results" / "summary.json").read_text())
    self.assertEqual(summary["proposals"], 6)
    self.assertAlmostEqual(summary["valid_rate"], 3 / 6)
    self.assertAlmostEqual(summary["entanglement_rate"], 1 / 6)
    best = max((c for c in cands.values() if c.can_be_parent), key=lambda c: c.fitness)
    self.assertEqual(summary["best_program_id"], best.id)
    self.assertEqual(summary["best_ood_acc"], best.metrics["ood_acc"])
    self.assertEqual(summary["evaluations_to_best"], best.id)
    self.assertEqual(summary["per_scope"]["ACTION"]["proposals"], 6)
    self.assertEqual(summary["router_fallbacks"], 1)
    self.assertTrue(summary["complete"])
    self.assertEqual((run / "results" / "best_program.py").read_text(), best.code)
    self.assertTrue((run / "results" / "best_so_far.png").read_bytes().startswith(b"\x89PNG"))
    for cid, c in cands.items():
      if c.code is not None:
        self.assertEqual((run / "programs" / f"{cid:04d}.py").read_text(), c.code)
    self.assertFalse((run / "programs" / "0003.py").exists())
    events = [json.loads(line) for line in (run / "logs" / "events.jsonl").open()]
    self.assertEqual({e["candidate_id"] for e in events if e["kind"] == "proposal"},
                     set(range(1, 7)))
    self.assertIn("proposal 2", (run / "logs" / "search.log").read_text())
    self.assertIn("migration", {e["kind"] for e in events})

  def test_population_context_and_island_reset(self):
    from spark_clrs.proposers import ContextRequest, IslandReset

    seen = []

    class Population(FakeProposer):
      context_request = ContextRequest(top=2)
      island_reset = IslandReset(interval=2, fraction=0.5)

      def propose(self, parent, history, rng):
        seen.append([p.program_id for p in parent.inspirations])
        return super().propose(parent, history, rng)

    cfg = config_lib.SearchConfig(output=str(self.tmp / "run"), profile="quick",
                                  feasibility_check=False, progress="none", num_islands=2,
                                  iterations=4, final_top_k=0)
    Controller(rundir.open_run(cfg), proposer=Population(["good"] * 4),
               evaluate=FakeEvaluate()).run()
    self.assertEqual(seen[0], [])  # Only the seed exists, and it is the parent.
    self.assertTrue(all(len(ids) <= 2 for ids in seen))
    self.assertTrue(any(seen[1:]))
    events = [json.loads(line) for line in (self.tmp / "run" / "logs" / "events.jsonl").open()]
    resets = [e for e in events if e["kind"] == "island_reset"]
    self.assertEqual([e["iteration"] for e in resets], [2])

  def test_interrupted_evaluation_is_rerun_once_and_nothing_is_reproposed(self):
    plan = ["good", "good", "good", "good"]
    first = FakeEvaluate(interrupt_on="0003")
    controller, proposer = self._run(plan, first)
    with self.assertRaises(KeyboardInterrupt):
      controller.run()
    cands = {c.id: c for c in helpers.run_candidates(self.tmp / "run")}
    self.assertEqual(cands[3].status, "evaluating")
    self.assertLen(proposer.calls, 3)
    second = FakeEvaluate()
    controller, proposer2 = self._run(plan, second)
    controller.run()
    self.assertEqual(second.calls, ["0003", "0004"])  # Finished ones are not repeated.
    self.assertLen(proposer2.calls, 1)  # Only iteration 4 was still to be proposed.
    cands = helpers.run_candidates(self.tmp / "run")
    self.assertEqual([c.id for c in cands], [0, 1, 2, 3, 4])
    self.assertTrue(all(c.status == "evaluated" for c in cands))
    workdirs = sorted(p.name for p in (self.tmp / "run" / "work" / "0003").iterdir())
    self.assertEqual(workdirs, ["eval", "eval-2"])  # The re-run never reuses a workdir.

  def test_failing_seed_stops_with_a_clear_error(self):
    def evaluate(program_path, profile, seeds, *, workdir, limits):
      del program_path, profile, seeds, workdir, limits
      return types.SimpleNamespace(status="crashed", metrics=None,
                                   reason="crashed: killed by SIGSEGV")
    controller, _ = self._run(["good"], evaluate)
    with self.assertRaisesRegex(SearchError, "seed program triplet_gmpnn failed at evaluate"):
      controller.run()

  def test_bad_profile_override_names_the_fields(self):
    controller, _ = self._run(["good"], FakeEvaluate(),
                              profile_overrides=("train_stepz=3",))
    with self.assertRaisesRegex(config_lib.ConfigError, "train_stepz.*train_steps"):
      controller.run()


# ----------------------------------------------------------------------- real runs


class PackageEntryTest(absltest.TestCase):
  """``spark_clrs.search`` is the callable package: cheap to reach, submodules still import."""

  def test_lazy_search_is_the_package_and_loads_no_jax(self):
    code = (
        "import sys, spark_clrs\n"
        "search = spark_clrs.search\n"
        "import spark_clrs.search.results as results\n"
        "assert search is sys.modules['spark_clrs.search'], search\n"
        "assert callable(search)\n"
        "assert spark_clrs.SearchResult is results.SearchResult\n"
        "print('jax' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertEqual(out.stdout.strip(), "False")


class SearchEndToEndTest(absltest.TestCase):
  """Tiny real searches: offline proposer, sandboxed checks and CLRS training."""

  def setUp(self):
    super().setUp()
    self.tmp = _tmpdir(self)
    patcher = mock.patch.dict(os.environ, ENV)
    patcher.start()
    self.addCleanup(patcher.stop)

  @pytest.mark.slow
  def test_python_api_end_to_end_and_rerun_resumes(self):
    import spark_clrs

    out = self.tmp / "run"
    result = spark_clrs.search(output=str(out), **TINY)
    for rel in ("config.flags", "archive.sqlite", "programs/0000.py", "logs/search.log",
                "logs/events.jsonl", "results/summary.json", "results/best_program.py",
                "results/best_so_far.png", "checkpoints"):
      self.assertTrue((out / rel).exists(), rel)
    cands = helpers.run_candidates(out)
    self.assertEqual([c.id for c in cands], [0, 1, 2])
    self.assertTrue(all(c.status not in ("proposed", "evaluating") for c in cands))
    s = result.summary
    self.assertEqual(s["proposals"], 2)
    self.assertEqual(s["llm_model"], "spark/offline")
    self.assertGreaterEqual(s["llm"]["calls"], 6)  # Router, refiner, rewriter per proposal.
    self.assertGreater(s["llm"]["estimated_tokens"], 0)  # spark/offline counts are estimates.
    self.assertEqual(s["llm"]["total_tokens"], 0)
    self.assertEqual(s["best_program_id"], result.best.id)
    self.assertEqual(s["best_ood_val_acc"], result.best.ood_val_acc)
    self.assertEqual(s["best_ood_acc"], result.best.metrics["ood_acc"])
    self.assertEqual((out / "results" / "best_program.py").read_text(), result.best.text)
    self.assertLen(result.history, 3)
    self.assertGreater(cands[0].metrics["macs"], 0)
    self.assertEqual(config_lib.parse_flagfile(str(out / "config.flags")),
                     config_lib.from_mapping({**TINY, "output": str(out)}))
    fig = result.plot()
    self.assertLen(fig.axes, 1)
    # The same call again resumes: nothing is proposed, evaluated or asked again.
    again = spark_clrs.search(output=str(out), **TINY)
    self.assertEqual([c.id for c in helpers.run_candidates(out)], [0, 1, 2])
    self.assertEqual(again.summary["llm"]["calls"], s["llm"]["calls"])
    self.assertEqual(again.best.id, result.best.id)

  def test_sigkill_mid_evaluation_then_rerun(self):
    """Kill -9 the CLI during a candidate's training; the re-run completes the run exactly."""
    sys.path.insert(0, str(ROOT / "tests"))
    from llm_server import Reply, ScriptedServer

    from spark_clrs.llm import offline

    out = self.tmp / "run"

    def responder(request):
      return Reply(offline.answer(request["messages"], seed=0))

    with ScriptedServer(responder=responder) as server:
      # One proposal: the kill lands in its training, so the re-run must finish it alone.
      flags = [f for f in TINY_FLAGS if not f.startswith("--iterations=")] + ["--iterations=1"]
      cmd = [sys.executable, "-m", "spark_clrs.search", *flags, f"--output={out}",
             "--llm_model=openai/scripted", f"--llm_api_base={server.api_base}"]
      env = {**os.environ, **ENV}
      proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
      try:
        _wait_for(lambda: (out / "work" / "0001" / "eval").is_dir() or proc.poll() is not None,
                  timeout=900)
        self.assertIsNone(proc.poll(), "the search ended before candidate 1 was training")
        time.sleep(3)  # Well inside the training child (imports, compilation).
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
      finally:
        if proc.poll() is None:
          proc.kill()
          proc.wait()
      for child in descendants:  # Sandboxed children live in their own sessions.
        try:
          child.kill()
        except psutil.NoSuchProcess:
          pass
      with sqlite3.connect(out / "archive.sqlite") as conn:
        status = dict(conn.execute("SELECT id, status FROM candidates").fetchall())
      self.assertEqual(status.get(1), "evaluating")
      hits_before = server.hits
      rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=1200)
      self.assertEqual(rerun.returncode, 0, rerun.stderr[-3000:])
      requests = list(server.requests)
    cands = helpers.run_candidates(out)
    self.assertEqual([c.id for c in cands], [0, 1])  # Every candidate exactly once.
    self.assertTrue(all(c.status in ("evaluated", "rejected", "failed") for c in cands))
    events = [json.loads(line) for line in (out / "logs" / "events.jsonl").open()]
    evaluating = [e["candidate_id"] for e in events if e["kind"] == "evaluating"]
    self.assertEqual(evaluating.count(1), 2)  # In flight at the kill: evaluated again.
    self.assertEqual(evaluating.count(0), 1)  # Finished before the kill: not repeated.
    # No LLM request was sent twice: every request the server saw is distinct, and the
    # re-run asked nothing (proposal 1 was recorded before the kill).
    bodies = [json.dumps(r["messages"], sort_keys=True) for r in requests]
    self.assertEqual(len(bodies), len(set(bodies)))
    self.assertGreaterEqual(hits_before, 3)
    self.assertLen(requests, hits_before)
    db = archive_db.ArchiveDB(out / "archive.sqlite")
    try:
      calls = db.llm_calls()
    finally:
      db.close()
    self.assertEqual(len(requests), sum(not c["cached"] for c in calls))
    summary = json.loads((out / "results" / "summary.json").read_text())
    self.assertTrue(summary["complete"])
    self.assertEqual(summary["proposals"], 1)
    self.assertEqual(summary["llm_model"], "openai/scripted")
    self.assertEqual(summary["llm"]["calls"], len(calls))
    best = max((c for c in cands if c.can_be_parent), key=lambda c: (c.fitness, -c.id))
    self.assertEqual(summary["best_program_id"], best.id)
    self.assertEqual(summary["best_ood_acc"], best.metrics["ood_acc"])
    self.assertEqual((out / "results" / "best_program.py").read_text(), best.code)
    self.assertTrue((out / "results" / "best_so_far.png").is_file())
    self.assertTrue((out / "checkpoints").is_dir())
    self.assertIn("proposal 1", (out / "logs" / "search.log").read_text())
    self.assertIn("best candidate", rerun.stdout)
    self.assertEqual(config_lib.parse_flagfile(str(out / "config.flags")).llm_model,
                     "openai/scripted")

  @pytest.mark.slow
  def test_quick_flags_cli(self):
    """The README's main command: at least 8 evaluated candidates in under 10 minutes."""
    out = self.tmp / "quick"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "spark_clrs.search", "--flagfile=quick.flags",
         f"--output={out}"], cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - start
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    cands = helpers.run_candidates(out)
    trained = [c for c in cands if c.status in ("evaluated", "failed")]
    self.assertGreaterEqual(len(trained), 8)
    summary = json.loads((out / "results" / "summary.json").read_text())
    self.assertTrue(summary["complete"])
    print(f"quick.flags: {wall:.0f} s, {len(cands)} candidates, {len(trained)} trained, "
          f"best {summary['best_ood_val_acc']}", file=sys.stderr)
    self.assertLess(wall, 600)


def _wait_for(predicate, timeout: float) -> None:
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      raise AssertionError(f"condition not met within {timeout} s")
    time.sleep(0.2)


if __name__ == "__main__":
  absltest.main()
