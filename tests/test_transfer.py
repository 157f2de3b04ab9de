"""transfer: a program and the baseline trained on CLRS tasks, aggregated, resumable.

The cell logic (layout, aggregation, resume, refusals) runs with the fake executor
(tests/helpers.py); one real task (MPNN and Triplet-GMPNN on BFS, tiny) checks the real
sandboxed evaluations behind it.
"""

import io
import json
import pathlib
import shutil
import subprocess
import sys
from unittest import mock

from absl.testing import absltest

from spark_clrs.analysis import transfer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import helpers  # noqa: E402

TINY = helpers.TINY_PROFILE_OVERRIDES
ALGORITHMS = ("bfs", "dfs")
SEEDS = (0, 1)


def _fake_executor(settings, root):
  del settings, root
  return helpers.FakeExecutor()


class TransferLogicTest(absltest.TestCase):
  """Two tasks x two seeds x both programs, evaluated by the fake executor."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = helpers.temp_root() / "transfer_logic"
    # A stand-in for RUN/results/best_program.py: the MPNN seed, against Triplet-GMPNN.
    cls.program = cls.tmp / "best_program.py"
    cls.program.parent.mkdir(parents=True)
    shutil.copy(helpers.ROOT / "seeds" / "mpnn.py", cls.program)
    cls.out = cls.tmp / "transfer"
    cls.result = cls._transfer()

  @classmethod
  def _transfer(cls, program=None, overrides=TINY, stream=None):
    with mock.patch.object(transfer, "_make_executor", _fake_executor):
      return transfer.transfer(program or cls.program, output=cls.out, algorithms=ALGORITHMS,
                               seeds=SEEDS, profile="quick", profile_overrides=overrides,
                               stream=stream or io.StringIO())

  def test_table_has_both_programs_every_task_and_seed(self):
    self.assertEqual(self.result.evaluated, 8)
    data = json.loads((self.out / "transfer.json").read_text())
    self.assertEqual(data["programs"], {"program": "best_program.py",
                                        "baseline": "triplet_gmpnn"})
    self.assertEqual([t["algorithm"] for t in data["tasks"]], list(ALGORITHMS))
    for task in data["tasks"]:
      for role in ("program", "baseline"):
        cells = [json.loads((self.out / "cells" / role / task["algorithm"] /
                             f"seed{k}.json").read_text()) for k in SEEDS]
        for cell in cells:
          self.assertEqual(cell["status"], "ok", cell["reason"])
          self.assertEqual(cell["profile"]["algorithm"], task["algorithm"])
          self.assertEqual(cell["profile"]["train_steps"], 2)
        accs = [c["metrics"]["ood_acc"] for c in cells]
        self.assertAlmostEqual(task[role]["ood_acc"]["mean"], sum(accs) / len(accs))
        self.assertEqual(task[role]["ood_acc"]["n"], 2)
        self.assertEqual(task[role]["macs"]["mean"], cells[0]["metrics"]["macs"])
        self.assertEqual(task[role]["seeds_done"], list(SEEDS))
      self.assertAlmostEqual(task["delta_ood_acc"], task["program"]["ood_acc"]["mean"] -
                             task["baseline"]["ood_acc"]["mean"])
    for role in ("program", "baseline"):
      average = data["average"][role]
      self.assertEqual(average["tasks"], list(ALGORITHMS))
      means = [t[role]["ood_acc"]["mean"] for t in data["tasks"]]
      self.assertAlmostEqual(average["ood_acc"]["mean"], sum(means) / len(means))
    markdown = (self.out / "transfer.md").read_text()
    self.assertIn("program OOD-test (best_program.py)", markdown)
    self.assertIn("baseline OOD-test (triplet_gmpnn)", markdown)
    for algorithm in ALGORITHMS:
      self.assertIn(f"| {algorithm} |", markdown)
    self.assertIn("**average** (2 task(s) with both)", markdown)
    self.assertEqual((self.out / "programs" / "program.py").read_text(),
                     self.program.read_text())

  def test_rerun_is_a_no_op(self):
    cells = sorted((self.out / "cells").rglob("*.json"))
    stamps = {p: (p.stat().st_mtime_ns, p.read_text()) for p in cells}
    stream = io.StringIO()
    again = self._transfer(stream=stream)
    self.assertEqual(again.evaluated, 0)
    self.assertEqual(stream.getvalue().count("done before (ok)"), 8)
    self.assertEqual(sorted((self.out / "cells").rglob("*.json")), cells)
    for path, stamp in stamps.items():
      self.assertEqual((path.stat().st_mtime_ns, path.read_text()), stamp, path)
    self.assertEqual(again.table["tasks"], self.result.table["tasks"])

  def test_other_program_or_profile_is_refused(self):
    with self.assertRaisesRegex(transfer.TransferError, "made for another --program"):
      self._transfer(program="pgn")
    with self.assertRaisesRegex(transfer.TransferError,
                                "computed with another profile: train_steps 2 -> 3"):
      self._transfer(overrides=("train_steps=3", "hidden=8"))


class TransferRealTaskTest(absltest.TestCase):
  """One task for real: MPNN against Triplet-GMPNN on BFS, sandboxed, 2 steps at hidden 8."""

  def test_real_evaluations_fill_the_table(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    program = tmp / "best_program.py"
    shutil.copy(helpers.ROOT / "seeds" / "mpnn.py", program)
    with mock.patch.dict("os.environ", helpers.ENV):
      result = transfer.transfer(program, output=tmp / "transfer", algorithms=["bfs"],
                                 seeds=[0], profile="quick", profile_overrides=TINY,
                                 stream=io.StringIO())
    self.assertEqual(result.evaluated, 2)
    (task,) = result.table["tasks"]
    for role in ("program", "baseline"):
      cell = json.loads((tmp / "transfer" / "cells" / role / "bfs" / "seed0.json").read_text())
      self.assertEqual(cell["status"], "ok", cell["reason"])
      self.assertEqual(cell["profile"]["algorithm"], "bfs")
      self.assertEqual(task[role]["ood_acc"]["mean"], cell["metrics"]["ood_acc"])
      self.assertEqual(task[role]["macs"]["mean"], cell["metrics"]["macs"])
    # MPNN has no triplet messages, so it is the cheaper processor.
    self.assertLess(task["program"]["macs"]["mean"], task["baseline"]["macs"]["mean"])


class TransferErrorsTest(absltest.TestCase):
  """Bad settings fail in one line before anything is trained."""

  def test_unknown_algorithm(self):
    with self.assertRaisesRegex(transfer.TransferError,
                                r"unknown algorithm\(s\) bfz; CLRS-30 has: .*bfs"):
      transfer.check_algorithms("bfs,bfz")
    self.assertEqual(transfer.check_algorithms(" bfs, dfs "), ("bfs", "dfs"))

  def test_profile_overrides(self):
    self.assertEqual(transfer.parse_profile_overrides(["train_steps=5", "train_lengths=4,7",
                                                       "use_ln=false"]),
                     {"train_steps": 5, "train_lengths": (4, 7), "use_ln": False})
    with self.assertRaisesRegex(transfer.TransferError, "not an overridable field"):
      transfer.parse_profile_overrides(["algorithm=bfs"])
    with self.assertRaisesRegex(transfer.TransferError, "not FIELD=VALUE"):
      transfer.parse_profile_overrides(["train_steps"])
    with self.assertRaisesRegex(transfer.TransferError, "not a valid int"):
      transfer.parse_profile_overrides(["train_steps=many"])

  def test_cli_usage_errors_are_one_line(self):
    out = self.create_tempdir().full_path
    done = subprocess.run([sys.executable, "-m", "spark_clrs.transfer", "--program=mpnn",
                           "--algorithms=bfs,nope", f"--output={out}/t"], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=300)
    self.assertEqual(done.returncode, 2)
    # Our error is one line, the last; lines above it are JAX / TensorFlow start-up logs.
    lines = done.stderr.strip().splitlines()
    self.assertLen([line for line in lines if line.startswith("error:")], 1)
    self.assertTrue(lines[-1].startswith("error: unknown algorithm(s) nope; CLRS-30 has:"),
                    lines[-1])
    self.assertNotIn("Traceback", done.stderr)


if __name__ == "__main__":
  absltest.main()
