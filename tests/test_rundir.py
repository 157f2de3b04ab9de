"""Run directory tests: layout, resume, mismatch refusal naming flags, no overwrite, lock."""

import pathlib
import tempfile

from absl.testing import absltest

from spark_clrs import config as config_lib
from spark_clrs.search import rundir


class RunDirTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = pathlib.Path(tmp.name)
    self.cfg = config_lib.SearchConfig(output=str(self.tmp / "run"), profile="quick",
                                       iterations=4)

  def test_new_run_layout_and_config(self):
    opened = rundir.open_run(self.cfg)
    self.assertFalse(opened.resumed)
    run = opened.run
    for d in (run.programs, run.logs, run.results, run.checkpoints, run.work):
      self.assertTrue(d.is_dir(), d)
    self.assertEqual(config_lib.parse_flagfile(str(run.config_path)), self.cfg)

  def test_same_config_resumes(self):
    rundir.open_run(self.cfg)
    again = rundir.open_run(self.cfg)
    self.assertTrue(again.resumed)
    self.assertEqual(again.config, self.cfg)

  def test_more_iterations_resume_and_keep_old_config(self):
    first = rundir.open_run(self.cfg)
    old_text = first.run.config_path.read_text()
    again = rundir.open_run(self.cfg.replace(iterations=10))
    self.assertTrue(again.resumed)
    self.assertIn("--iterations: 4 -> 10", " ".join(again.notes))
    self.assertEqual(config_lib.parse_flagfile(str(first.run.config_path)).iterations, 10)
    self.assertEqual((first.run.logs / "config.1.flags").read_text(), old_text)

  def test_mismatch_refused_naming_flags(self):
    rundir.open_run(self.cfg)
    with self.assertRaises(rundir.RunDirError) as ctx:
      rundir.open_run(self.cfg.replace(seed=7, profile="spark", iterations=9))
    message = str(ctx.exception)
    self.assertIn("--seed (0 in the run, 7 now)", message)
    self.assertIn("--profile (quick in the run, spark now)", message)
    self.assertNotIn("--iterations", message)
    self.assertIn("--resume=false", message)
    self.assertNotIn("\n", message)

  def test_resume_false_picks_new_directory(self):
    first = rundir.open_run(self.cfg)
    before = first.run.config_path.read_text()
    other = rundir.open_run(self.cfg.replace(seed=7, resume=False))
    self.assertEqual(other.run.root, self.tmp / "run-2")
    self.assertIn("run-2", " ".join(other.notes))
    self.assertEqual(first.run.config_path.read_text(), before)  # Untouched.
    self.assertEqual(config_lib.parse_flagfile(str(other.run.config_path)).output,
                     str(self.tmp / "run-2"))
    third = rundir.open_run(self.cfg.replace(resume=False))
    self.assertEqual(third.run.root, self.tmp / "run-3")

  def test_foreign_directory_refused(self):
    (self.tmp / "run").mkdir()
    (self.tmp / "run" / "notes.txt").write_text("mine")
    with self.assertRaisesRegex(rundir.RunDirError, "not a spark_clrs run directory"):
      rundir.open_run(self.cfg)

  def test_program_files_never_overwritten(self):
    run = rundir.open_run(self.cfg).run
    path = run.write_program(3, "x = 1\n")
    self.assertEqual(path.name, "0003.py")
    run.write_program(3, "x = 1\n")  # Same content: fine.
    with self.assertRaisesRegex(rundir.RunDirError, "already exists with different content"):
      run.write_program(3, "x = 2\n")
    self.assertEqual(path.read_text(), "x = 1\n")

  def test_lock_excludes_a_second_search(self):
    run = rundir.open_run(self.cfg).run
    with rundir.RunLock(run):
      with self.assertRaisesRegex(rundir.RunDirError, "in use by a running search"):
        rundir.RunLock(run).acquire()
    with rundir.RunLock(run):  # Released: can be taken again.
      pass


if __name__ == "__main__":
  absltest.main()
