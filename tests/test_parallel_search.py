"""Parallel search: ``--parallel_evaluations=N``, asynchronous by default, ``--synchronous``.

Fast tests drive the controller with a scripted proposer and an evaluation whose
duration is chosen per candidate (so completion orders differ): synchronous runs are
identical whatever the completion order; asynchronous runs keep N evaluations in flight,
propose while they run, write the archive from the driver thread only, and lose nothing
when interrupted. A tiny real search runs two warm local slots end to end.
"""

import json
import pathlib
import tempfile
import threading
import time
import types
from unittest import mock

import helpers
from absl.testing import absltest

from spark_clrs import config as config_lib
from spark_clrs.programs import regions
from spark_clrs.search import archive as archive_lib
from spark_clrs.search import rundir
from spark_clrs.search.controller import Controller

JAX_CACHE = pathlib.Path(tempfile.gettempdir()) / "spark_clrs_test_jax_cache"


class Proposer:
  """A deterministic ACTION edit per call (its tag drawn from the iteration's RNG)."""

  def __init__(self, on_propose=None):
    self.on_propose = on_propose
    self.parents = []

  def propose(self, parent, history, rng):
    from spark_clrs.proposers import Proposal

    del history
    if self.on_propose is not None:
      self.on_propose()
    self.parents.append(parent.program_id)
    # A code edit (an identical AST would be rejected as unchanged before any compute).
    edit = rng.integers(1 << 30)
    tag = f"    _edit_{edit} = {edit}  # edit {edit}\n"
    child = regions.replace_region(parent.text, "ACTION",
                                   regions.get_region(parent.text, "ACTION") + tag)
    return Proposal(child_text=child, scope=("ACTION",), directive="edit",
                    decision={"scope_source": "llm"})


class Evaluate:
  """Fitness grows with the edits; ``delay(name)`` seconds per candidate; thread-safe."""

  def __init__(self, delay=lambda name: 0.0, interrupt_on=None):
    self.delay = delay
    self.interrupt_on = interrupt_on
    self.lock = threading.Lock()
    self.running = 0
    self.peak = 0
    self.finished = []

  def __call__(self, program_path, profile, seeds, *, workdir, limits):
    del profile, seeds, workdir, limits
    name = pathlib.Path(program_path).stem
    text = pathlib.Path(program_path).read_text()
    with self.lock:
      self.running += 1
      self.peak = max(self.peak, self.running)
    try:
      time.sleep(self.delay(name))
      if name == self.interrupt_on:
        raise KeyboardInterrupt  # Like Ctrl-C while this candidate trains.
    finally:
      with self.lock:
        self.running -= 1
        self.finished.append(name)
    edits = text.count("# edit")
    return types.SimpleNamespace(
        status="ok", reason="",
        metrics={"ood_val_acc": 0.5 + 0.01 * edits + 0.001 * (len(text) % 7),
                 "ood_acc": 0.4, "val_acc": 0.9, "param_count": 1000 + edits,
                 "macs": 5000 * (1 + edits), "train_seconds": 0.1})



class _Case(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = pathlib.Path(self.create_tempdir().full_path)

  def search(self, name: str, evaluate, proposer=None, **overrides):
    settings = dict(output=str(self.tmp / name), profile="quick", feasibility_check=False,
                    progress="none", num_islands=2, migration_interval=3, iterations=8,
                    parallel_evaluations=3, final_top_k=0)
    cfg = config_lib.SearchConfig(**{**settings, **overrides})
    controller = Controller(rundir.open_run(cfg), proposer=proposer or Proposer(),
                            evaluate=evaluate)
    controller.run()
    return helpers.run_candidates(self.tmp / name)


class SynchronousTest(_Case):

  def test_same_candidates_whatever_the_completion_order(self):
    # Later candidates of a generation finish first in one run, last in the other.
    late_first = Evaluate(delay=lambda name: 0.05 * (3 - int(name) % 3))
    early_first = Evaluate(delay=lambda name: 0.05 * (int(name) % 3))
    a = self.search("a", late_first, synchronous=True)
    b = self.search("b", early_first, synchronous=True)
    self.assertNotEqual(late_first.finished, early_first.finished)
    self.assertEqual(late_first.peak, 3)
    key = lambda c: (c.id, c.parent_id, c.island, c.code, c.status, c.fitness)  # noqa: E731
    self.assertEqual([key(c) for c in a], [key(c) for c in b])
    self.assertLen(a, 9)
    self.assertTrue(all(c.status == "evaluated" for c in a))


class AsynchronousTest(_Case):

  def test_keeps_n_in_flight_and_proposes_while_they_run(self):
    # Evaluations long enough that proposing (checks, dedup, archive writes) fills every slot.
    evaluate = Evaluate(delay=lambda name: 0.3 + 0.1 * (int(name) % 4))
    running_at_proposal = []
    proposer = Proposer(on_propose=lambda: running_at_proposal.append(evaluate.running))
    main = threading.main_thread()
    writes = []
    originals = {name: getattr(archive_lib.Archive, name)
                 for name in ("record_proposal", "record_result", "record_failure",
                              "record_rejection", "mark_evaluating")}

    def wrap(name):
      def method(self_, *args, **kwargs):
        writes.append(threading.current_thread() is main)
        return originals[name](self_, *args, **kwargs)
      return method

    with mock.patch.multiple(archive_lib.Archive, **{n: wrap(n) for n in originals}):
      cands = self.search("async", evaluate, proposer=proposer, iterations=10)
    self.assertEqual([c.id for c in cands], list(range(11)))
    self.assertTrue(all(c.status == "evaluated" for c in cands))
    self.assertEqual(evaluate.peak, 3)
    self.assertGreater(max(running_at_proposal), 0)  # Proposed while others trained.
    self.assertTrue(writes)
    self.assertTrue(all(writes), "an evaluation thread wrote to the archive")

  def test_interrupt_then_resume_loses_nothing(self):
    first = Evaluate(delay=lambda name: 0.1 if name == "0004" else 0.01,
                     interrupt_on="0004")
    with self.assertRaises(KeyboardInterrupt):
      self.search("run", first)
    before = {c.id: c.status for c in helpers.run_candidates(self.tmp / "run")}
    self.assertEqual(before[4], "evaluating")
    second = Evaluate()
    cands = self.search("run", second)
    self.assertEqual([c.id for c in cands], list(range(9)))
    self.assertTrue(all(c.status == "evaluated" for c in cands))
    finished_first = {int(n) for n in first.finished if n != "0004"}
    recorded_first = {cid for cid, s in before.items() if s == "evaluated"}
    # Everything archived before the interrupt is kept; the rest is evaluated again.
    self.assertTrue(recorded_first <= finished_first | {0})
    self.assertEqual({int(n) for n in second.finished},
                     set(range(9)) - recorded_first)


class LocalSlotsEndToEndTest(absltest.TestCase):
  """The session's tiny real run: two warm local slots, real checks and training, async."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tiny = helpers.tiny_run()

  def test_tiny_search_with_two_slots(self):
    self.assertEqual(helpers.TINY["parallel_evaluations"], 2)
    out = self.tiny.run_dir
    cands = helpers.run_candidates(out)
    self.assertEqual([c.id for c in cands], list(range(helpers.TINY["iterations"] + 1)))
    self.assertTrue(all(c.status in ("evaluated", "rejected", "failed") for c in cands))
    self.assertEqual(cands[0].status, "evaluated")
    # The seed's spread, measured.
    self.assertEqual(cands[0].metrics["seeds"], list(range(helpers.TINY["seed_program_seeds"])))
    summary = json.loads((out / "results" / "summary.json").read_text())
    self.assertTrue(summary["complete"])
    # The final re-evaluation ran in the jail, with seeds the search never used.
    final = summary["final"]
    used = {s for c in cands if c.metrics for s in c.metrics.get("seeds", ())}
    self.assertEqual(final["status"], "complete")
    self.assertLen(final["seeds"], helpers.TINY["final_seeds"])
    self.assertFalse(used & set(final["seeds"]), (used, final["seeds"]))
    self.assertTrue(all(e["status"] == "evaluated" and e["ood_acc"] is not None
                        for e in final["candidates"]))
    log = (out / "logs" / "search.log").read_text()
    self.assertIn("executor: local, 2 evaluation(s) at a time on CPU, pre-started single-use "
                  "workers, in the bubblewrap jail", log)
    # Each slot has its own warm workers' directory.
    for slot in ("slot-0", "slot-1"):
      self.assertTrue((out / "work" / "executor" / slot).is_dir(), slot)


if __name__ == "__main__":
  absltest.main()
