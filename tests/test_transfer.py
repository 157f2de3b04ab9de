"""transfer: a program and the baseline trained on two CLRS tasks (real, tiny), resumable."""

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest

from spark_clrs.analysis import transfer

ROOT = pathlib.Path(__file__).resolve().parent.parent
JAX_CACHE = pathlib.Path(tempfile.gettempdir()) / "spark_clrs_test_jax_cache"
ENV = {"JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE), "MPLBACKEND": "Agg"}
TINY = ("train_steps=2", "hidden=8")
ALGORITHMS = ("bfs", "dfs")


class TransferTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix="spark_clrs_transfer_test_"))
    # A stand-in for RUN/results/best_program.py: the MPNN seed, against Triplet-GMPNN.
    cls.program = cls.tmp / "best_program.py"
    shutil.copy(ROOT / "seeds" / "mpnn.py", cls.program)
    cls.out = cls.tmp / "transfer"
    with mock.patch.dict(os.environ, ENV):
      cls.result = transfer.transfer(cls.program, output=cls.out, algorithms=ALGORITHMS,
                                     seeds=[0], profile="quick", profile_overrides=TINY,
                                     stream=io.StringIO())

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_table_has_both_programs_and_both_tasks(self):
    self.assertEqual(self.result.evaluated, 4)
    data = json.loads((self.out / "transfer.json").read_text())
    self.assertEqual(data["programs"], {"program": "best_program.py",
                                        "baseline": "triplet_gmpnn"})
    self.assertEqual([t["algorithm"] for t in data["tasks"]], list(ALGORITHMS))
    for task in data["tasks"]:
      for role in ("program", "baseline"):
        cell = json.loads((self.out / "cells" / role / task["algorithm"] /
                           "seed0.json").read_text())
        self.assertEqual(cell["status"], "ok", cell["reason"])
        self.assertEqual(cell["profile"]["algorithm"], task["algorithm"])
        self.assertEqual(cell["profile"]["train_steps"], 2)
        self.assertEqual(task[role]["ood_acc"]["mean"], cell["metrics"]["ood_acc"])
        self.assertEqual(task[role]["macs"]["mean"], cell["metrics"]["macs"])
        self.assertEqual(task[role]["seeds_done"], [0])
      self.assertAlmostEqual(task["delta_ood_acc"], task["program"]["ood_acc"]["mean"] -
                             task["baseline"]["ood_acc"]["mean"])
    # MPNN has no triplet messages, so it is the cheaper processor.
    first = data["tasks"][0]
    self.assertLess(first["program"]["macs"]["mean"], first["baseline"]["macs"]["mean"])
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
    again = transfer.transfer(self.program, output=self.out, algorithms=ALGORITHMS, seeds=[0],
                              profile="quick", profile_overrides=TINY, stream=stream)
    self.assertEqual(again.evaluated, 0)
    self.assertEqual(stream.getvalue().count("done before (ok)"), 4)
    self.assertEqual(sorted((self.out / "cells").rglob("*.json")), cells)
    for path, stamp in stamps.items():
      self.assertEqual((path.stat().st_mtime_ns, path.read_text()), stamp, path)
    self.assertEqual(again.table["tasks"], self.result.table["tasks"])

  def test_other_program_or_profile_is_refused(self):
    with self.assertRaisesRegex(transfer.TransferError, "made for another --program"):
      transfer.transfer("pgn", output=self.out, algorithms=ALGORITHMS, seeds=[0],
                        profile="quick", profile_overrides=TINY, stream=io.StringIO())
    with self.assertRaisesRegex(transfer.TransferError,
                                "computed with another profile: train_steps 2 -> 3"):
      transfer.transfer(self.program, output=self.out, algorithms=ALGORITHMS, seeds=[0],
                        profile="quick", profile_overrides=("train_steps=3", "hidden=8"),
                        stream=io.StringIO())


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
                           "--algorithms=bfs,nope", f"--output={out}/t"], cwd=ROOT,
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
