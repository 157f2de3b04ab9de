"""Tests for ``spark_clrs.evaluation.executors`` that need neither JAX training nor Ray.

Slot/device assignment and concurrency of the local executor (with a fake evaluation),
the one-line error without Ray, and the guardian that kills a Ray evaluation's sandboxed
child when its worker dies and removes its directory without following the links the
jail planted there.
"""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from unittest import mock

import psutil
from absl.testing import absltest

import spark_clrs
from spark_clrs.evaluation import executors
from spark_clrs.isolation import devices


def _gone(pid: int) -> bool:
  try:
    return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return True


class AcceleratorsTest(absltest.TestCase):

  def test_cuda_visible_devices(self):
    self.assertEqual(devices.gpu_ids({"CUDA_VISIBLE_DEVICES": "2, 3"}),
                     ["2", "3"])
    self.assertEqual(devices.gpu_ids({"CUDA_VISIBLE_DEVICES": ""}), [])
    self.assertEqual(devices.gpu_ids({"CUDA_VISIBLE_DEVICES": "-1"}), [])

  def test_cpu_platform_hides_gpus(self):
    env = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "0"}
    self.assertEqual(devices.gpu_ids(env), [])


class LocalExecutorTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = pathlib.Path(self.create_tempdir().full_path)

  def test_one_device_per_slot_round_robin(self):
    ex = executors.LocalExecutor(4, workdir=self.tmp, devices=["0", "1"], warm=False)
    self.assertEqual(ex.devices, ["0", "1", "0", "1"])
    # Two slots share each GPU: each gets part of its memory instead of JAX's 75 %.
    fractions = {s.env["XLA_PYTHON_CLIENT_MEM_FRACTION"] for s in ex._slots}
    self.assertEqual(fractions, {"0.450"})
    self.assertIn("GPU(s) 0,1", ex.describe())

  def test_no_memory_split_with_a_gpu_per_slot(self):
    ex = executors.LocalExecutor(2, workdir=self.tmp, devices=["0", "1"], warm=False,
                                 compile_cache_dir=self.tmp / "cache")
    for slot in ex._slots:
      self.assertNotIn("XLA_PYTHON_CLIENT_MEM_FRACTION", slot.env)
      self.assertEqual(slot.env[executors.JAX_CACHE_VAR], str(self.tmp / "cache"))

  def test_cpu_slots_have_no_device(self):
    ex = executors.LocalExecutor(3, workdir=self.tmp, devices=[], warm=False)
    self.assertEqual(ex.devices, [None, None, None])
    self.assertIn("on CPU", ex.describe())

  def test_at_most_slots_in_flight_each_with_its_own_device(self):
    active: list[str] = []
    peak, seen = [0], []
    lock = threading.Lock()

    def fake_evaluate(program_path, profile, seeds, *, workdir, limits, runner,
                      visible_device, score_test=True, cost=None):
      del program_path, profile, seeds, workdir, limits, score_test, cost
      kind, env = runner  # Chosen once by the executor: fresh here, with the slot's device.
      self.assertEqual((kind, env["CUDA_VISIBLE_DEVICES"]), ("fresh", visible_device))
      with lock:
        self.assertNotIn(visible_device, active)  # Never two evaluations on one device.
        active.append(visible_device)
        peak[0] = max(peak[0], len(active))
        seen.append(visible_device)
      time.sleep(0.05)
      with lock:
        active.remove(visible_device)
      return types.SimpleNamespace(status="ok")

    fake_module = types.SimpleNamespace(evaluate=fake_evaluate)
    ex = executors.LocalExecutor(2, workdir=self.tmp, devices=["0", "1"], warm=False)
    # `from spark_clrs.evaluation import evaluate` reads the package attribute once the real
    # module was imported by an earlier test, so patch it there as well as in sys.modules.
    with mock.patch.dict(sys.modules, {"spark_clrs.evaluation.evaluate": fake_module}), \
        mock.patch.object(spark_clrs.evaluation, "evaluate", fake_module, create=True), \
        mock.patch.object(executors, "FreshRunner", lambda env: ("fresh", env)):
      threads = [threading.Thread(target=ex.evaluate, args=("p.py", None, [0]),
                                  kwargs={"workdir": self.tmp / str(i), "limits": None})
                 for i in range(6)]
      for t in threads:
        t.start()
      for t in threads:
        t.join()
    self.assertEqual(peak[0], 2)
    self.assertLen(seen, 6)
    self.assertEqual(set(seen), {"0", "1"})

  def test_bad_slot_count(self):
    with self.assertRaisesRegex(executors.ExecutorError, "parallel_evaluations=0"):
      executors.LocalExecutor(0, workdir=self.tmp)


class RayMissingTest(absltest.TestCase):

  def test_one_line_error_names_the_extra(self):
    with mock.patch.dict(sys.modules, {"ray": None}):
      with self.assertRaises(executors.ExecutorError) as ctx:
        executors.make_executor("ray", 2, workdir=pathlib.Path("/nonexistent"))
    message = str(ctx.exception)
    self.assertNotIn("\n", message)
    self.assertIn("--executor=ray", message)
    self.assertIn("pip install -e '.[ray]'", message)

  def test_unknown_executor(self):
    with self.assertRaisesRegex(executors.ExecutorError, "local, ray"):
      executors.make_executor("slurm", 1, workdir=pathlib.Path("/nonexistent"))


class GuardianTest(absltest.TestCase):
  """A Ray worker dies mid-evaluation: its sandboxed child must not run on unsupervised."""

  def test_child_killed_when_its_worker_dies(self):
    root = pathlib.Path(self.create_tempdir().full_path).resolve() / "task"
    (root / "eval" / "exchange").mkdir(parents=True)
    victim = root.parent / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("KEEP")
    os.symlink(victim, root / "eval" / "exchange" / "ckpt")  # Planted by the jail.
    os.symlink(victim / "keep.txt", root / "eval" / "keep_link")
    pid_file = root.parent / "child.pid"
    # Stands in for the Ray worker: starts the guardian, then a "sandboxed child" in its
    # own session with HOME in the task's directory (as sandbox.run_in_child does).
    worker_code = textwrap.dedent(f"""
        import os, pathlib, subprocess, sys, time
        from spark_clrs.evaluation import executors
        root = pathlib.Path({str(root)!r})
        guardian = executors._Guardian(root)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                 env={{**os.environ, "HOME": str(root / "eval")}},
                                 start_new_session=True)
        pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
        time.sleep(120)
        """)
    worker = subprocess.Popen([sys.executable, "-c", worker_code])
    self.addCleanup(lambda: worker.poll() is None and worker.kill())
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    child = int(pid_file.read_text())
    self.addCleanup(lambda: _gone(child) or os.kill(child, signal.SIGKILL))
    self.assertFalse(_gone(child))
    worker.send_signal(signal.SIGKILL)  # As when Ray's worker process is killed.
    worker.wait()
    deadline = time.monotonic() + 30
    while not _gone(child) and time.monotonic() < deadline:
      time.sleep(0.05)
    self.assertTrue(_gone(child), "the lost evaluation's child is still running")
    deadline = time.monotonic() + 10
    while root.exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    self.assertFalse(root.exists())
    self.assertEqual(os.listdir(victim), ["keep.txt"])  # Removed without following links.
    self.assertEqual((victim / "keep.txt").read_text(), "KEEP")


if __name__ == "__main__":
  absltest.main()
