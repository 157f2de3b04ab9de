"""A search SIGKILLed at any moment leaves no process of its own alive 5 s later.

A small driver (standing in for a search) starts a pre-started worker and a fresh child and
is SIGKILLed at three moments: while the jails are being set up, while a worker is still
importing its preload (a module that sleeps), and while requests run and have started
processes of their own. The driver's processes carry a token, in their argv (the launcher:
the token is in the workdir's path; the sleepers) or their environment (the jailed
interpreters); 5 s after the kill none may be alive, and (as root) none may be left in
the driver's cgroups, which hold every process of its jails (bubblewrap included). No JAX.
"""

import os
import pathlib
import subprocess
import sys
import time
import uuid

import psutil
from absl.testing import absltest

from spark_clrs.isolation import cgroups, supervision

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = str(ROOT / "tests" / "data")

DRIVER = """
import pathlib, sys, threading
from spark_clrs.isolation import sandbox
token, work, moment, data = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
env = {"PYTHONPATH": data, "SPARK_CLRS_TEST_MARK": token}
limits = sandbox.Limits(timeout_s=120, memory_mb=1024)
preload = ("slow_import",) if moment == "worker_start" else ("json",)
worker = sandbox.Worker(workdir=work / "worker", preload=preload, extra_env=env)
def fresh():
  sandbox.run_in_child("sandbox_targets:start_token_and_hang", {"token": token},
                       workdir=work / "fresh", limits=limits, extra_env=env)
threading.Thread(target=fresh).start()
if moment == "worker_start":
  worker.start()
worker.run("sandbox_targets:start_token_and_hang", {"token": token}, workdir=work / "warm",
           limits=limits)
"""


def _carriers(token: str) -> list[psutil.Process]:
  """Live processes with ``token`` in their argv or environment."""
  found = []
  for p in psutil.process_iter(["cmdline"]):
    try:
      if p.status() == psutil.STATUS_ZOMBIE:
        continue
      if token in " ".join(p.info["cmdline"] or ()) or token in str(p.environ()):
        found.append(p)
    except psutil.Error:
      continue
  return found


class SigkillTest(absltest.TestCase):

  def _kill_at(self, moment: str) -> None:
    token = f"spark-kill-{uuid.uuid4().hex}"
    work = pathlib.Path(self.create_tempdir().full_path) / token  # In the launcher's argv.
    work.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, token, str(work), moment, DATA],
                              cwd=ROOT)
    try:
      deadline = time.monotonic() + 120
      if moment == "setup":
        time.sleep(0.5)  # The probe and the first launches are under way.
      else:
        # Jailed interpreters (the token in their environment) and, running, their sleepers.
        want = 1 if moment == "worker_start" else 4
        while time.monotonic() < deadline:
          self.assertIsNone(driver.poll(), "the driver exited early")
          if len(_carriers(token)) >= want:
            break
          time.sleep(0.05)
        self.assertLess(time.monotonic(), deadline, f"nothing started for {moment}")
      driver.kill()
      driver.wait()
      time.sleep(5)
      left = _carriers(token)
      self.assertEqual([(p.pid, p.cmdline()[:3]) for p in left], [],
                       f"alive 5 s after the SIGKILL at {moment}")
      for group in cgroups.of_owner(driver.pid):
        self.assertEqual(group.pids(), [], f"{group.name} still has tasks")
    finally:
      if driver.poll() is None:
        driver.kill()
        driver.wait()
      for p in _carriers(token):  # Only our own token's processes, if the test failed.
        p.kill()
      if os.geteuid() == 0:
        supervision.reap_stale()

  def test_killed_during_setup(self):
    self._kill_at("setup")

  def test_killed_while_a_worker_imports(self):
    self._kill_at("worker_start")

  def test_killed_while_requests_run(self):
    self._kill_at("running")


if __name__ == "__main__":
  absltest.main()
