"""Tests for ``spark_clrs.isolation.sandbox``: every way a child can misbehave has its own status.

The misbehaving targets live in ``tests/data/sandbox_targets.py`` and run only inside
the sandbox (the bubblewrap jail, the default; ``NoJailTest`` repeats a few with
``--sandbox=none``). Each test checks the status, that the calling process is unharmed
(it keeps running the next test) and, where the child starts processes, that none is
left on the host (found by a unique token in their argv: PIDs inside the jail are not
the host's).
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid
from unittest import mock

import psutil
from absl.testing import absltest

from spark_clrs.isolation import jail, sandbox

TARGETS_DIR = str(pathlib.Path(__file__).resolve().parent / "data")
ENV = {"PYTHONPATH": TARGETS_DIR}
FAST = sandbox.Limits(timeout_s=3.0, memory_mb=512, max_output_bytes=1 << 20)
SECRETS = {
    "OPENAI_API_KEY": "sk-test-not-a-real-key",
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "AWS_SECRET_ACCESS_KEY": "aws-test",
    "GITHUB_TOKEN": "ghp-test",
    "HTTPS_PROXY": "http://proxy.invalid:3128",
    "http_proxy": "http://proxy.invalid:3128",
    "DB_PASSWORD": "hunter2",
    "JAX_PLATFORMS": "cpu",
}


def _gone(pid: int) -> bool:
  try:
    return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return True


def token_processes(token: str) -> list[int]:
  """Live host processes with ``token`` in their argv."""
  found = []
  for p in psutil.process_iter(["cmdline"]):
    try:
      if token in " ".join(p.info["cmdline"] or ()) and p.status() != psutil.STATUS_ZOMBIE:
        found.append(p.pid)
    except psutil.Error:
      continue
  return found


def wait_gone(token: str, timeout_s: float = 5.0) -> list[int]:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline and token_processes(token):
    time.sleep(0.05)
  return token_processes(token)


class _SandboxCase(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = pathlib.Path(self.create_tempdir().full_path)

  def run_target(self, name: str, payload: dict | None = None,
                 limits: sandbox.Limits = FAST) -> sandbox.ChildResult:
    return sandbox.run_in_child(f"sandbox_targets:{name}", payload or {},
                                workdir=self.tmp / name, limits=limits, extra_env=ENV)

  def assert_forks_cleaned(self, result: sandbox.ChildResult, token: str) -> None:
    self.assertEqual(result.progress.get("started"), 3, result.reason)  # They did run.
    self.assertEqual(wait_gone(token, timeout_s=2.0), [])


class RunInChildTest(_SandboxCase):

  def test_ok_runs_in_private_workdir(self):
    result = self.run_target("echo", {"x": 1})
    self.assertEqual(result.status, "ok", result.reason)
    self.assertEqual(result.value["echo"], {"x": 1})
    self.assertEqual(result.value["cwd"], str((self.tmp / "echo").resolve()))
    self.assertEqual(result.value["home"], str((self.tmp / "echo").resolve()))

  def test_exception_is_error_with_type_and_message(self):
    result = self.run_target("raise_error")
    self.assertEqual(result.status, "error")
    self.assertIn("ValueError: boom from the child", result.reason)
    self.assertIn("sandbox_targets.py", result.reason)

  def test_sys_exit_and_non_dict_are_errors(self):
    self.assertEqual(self.run_target("exit_early").status, "error")
    result = self.run_target("not_a_dict")
    self.assertEqual(result.status, "error")
    self.assertIn("expected a JSON object", result.reason)

  def test_sleep_forever_times_out(self):
    result = self.run_target("sleep_forever")
    self.assertEqual(result.status, "timeout")
    self.assertIn("3 s", result.reason)

  def test_segfault_is_crashed_with_signal(self):
    result = self.run_target("segfault")
    self.assertEqual(result.status, "crashed")
    self.assertIn("SIGSEGV", result.reason)

  def test_unbounded_allocation_is_memory(self):
    result = self.run_target("allocate_forever")
    self.assertEqual(result.status, "memory", result.reason)
    self.assertIn("512 MB", result.reason)

  def test_50gb_allocation_is_memory(self):
    result = self.run_target("allocate_50gb")
    self.assertEqual(result.status, "memory", result.reason)

  def test_huge_output_is_output_limit(self):
    result = self.run_target("huge_output")
    self.assertEqual(result.status, "output_limit", result.reason)

  def test_forked_children_are_killed_on_timeout(self):
    token = f"spark-token-{uuid.uuid4().hex}"
    result = self.run_target("fork_children", {"token": token, "hang": True})
    self.assertEqual(result.status, "timeout")
    self.assert_forks_cleaned(result, token)

  def test_forked_children_are_killed_after_success(self):
    token = f"spark-token-{uuid.uuid4().hex}"
    result = self.run_target("fork_children", {"token": token, "hang": False})
    self.assertEqual(result.status, "ok", result.reason)
    self.assertEqual(result.value["started"], 3)
    self.assert_forks_cleaned(result, token)

  def test_api_keys_in_parent_env_are_invisible(self):
    with mock.patch.dict(os.environ, SECRETS):
      self.assertEqual(os.environ["OPENAI_API_KEY"], SECRETS["OPENAI_API_KEY"])
      result = self.run_target("read_env")
    self.assertEqual(result.status, "ok", result.reason)
    env = result.value["env"]
    for name in SECRETS:
      if name != "JAX_PLATFORMS":
        self.assertNotIn(name, env)
    self.assertNotIn(SECRETS["OPENAI_API_KEY"], str(env))
    self.assertEqual(env["JAX_PLATFORMS"], "cpu")
    self.assertIn("PATH", env)

  def test_progress_names_where_a_killed_child_was(self):
    result = self.run_target("progress_then_hang", {"name": "cand"})
    self.assertEqual(result.status, "timeout")
    self.assertEqual(result.progress, {"stage": "shape", "candidate": "cand"})

  def test_jax_model_runs_under_default_limits(self):
    limits = sandbox.Limits(timeout_s=120.0)  # Default memory and address-space limits.
    result = self.run_target("small_jax_model", {"hidden": 32}, limits=limits)
    self.assertEqual(result.status, "ok", result.reason + result.stderr_tail)
    self.assertEqual(result.value["grad_leaves"], 6)


class ParentDeathTest(_SandboxCase):
  """A search killed with SIGKILL must not leave its sandbox children running."""

  def _kill_driver_and_check(self, use_worker: bool) -> None:
    token = f"spark-token-{uuid.uuid4().hex}"
    run = ("sandbox.Worker(workdir=work / 'worker', extra_env=env, preload=('json',)).run"
           if use_worker else "functools.partial(sandbox.run_in_child, extra_env=env)")
    driver = (
        "import functools, pathlib\n"
        "from spark_clrs.isolation import sandbox\n"
        f"work = pathlib.Path({str(self.tmp)!r})\n"
        f"env = {ENV!r}\n"
        # The token is split so that the driver's own argv does not carry it.
        f"print({run}('sandbox_targets:start_token_and_hang', "
        f"{{'token': {token[:12]!r} + {token[12:]!r}}}, "
        "workdir=work / 'run', limits=sandbox.Limits(timeout_s=120, memory_mb=1024)))\n")
    proc = subprocess.Popen([sys.executable, "-c", driver])
    try:
      deadline = time.monotonic() + 60
      while not token_processes(token) and time.monotonic() < deadline:
        self.assertIsNone(proc.poll(), "the driver exited before its child started")
        time.sleep(0.05)
      self.assertNotEqual(token_processes(token), [])
      jailed = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
      self.assertNotEqual(jailed, [])
      proc.kill()
      proc.wait()
      self.assertEqual(wait_gone(token, timeout_s=10), [],
                       "sandbox child outlived its SIGKILLed parent")
      deadline = time.monotonic() + 10
      while time.monotonic() < deadline and not all(_gone(p) for p in jailed):
        time.sleep(0.05)
      self.assertEqual([p for p in jailed if not _gone(p)], [])
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()

  def test_fresh_child_dies_with_its_parent(self):
    self._kill_driver_and_check(use_worker=False)

  def test_worker_child_dies_with_its_parent(self):
    self._kill_driver_and_check(use_worker=True)


class WorkerTest(_SandboxCase):

  def test_single_use_workers_isolate_each_run(self):
    token = f"spark-token-{uuid.uuid4().hex}"
    worker = sandbox.Worker(workdir=self.tmp / "worker", preload=("numpy",), extra_env=ENV)
    with mock.patch.dict(os.environ, SECRETS), worker:
      def run(name, payload=None):
        return worker.run(f"sandbox_targets:{name}", payload or {}, workdir=self.tmp / name,
                          limits=FAST)

      echo = run("echo", {"y": 2, "path": str(self.tmp / "echo" / "x.txt")})
      self.assertEqual(echo.status, "ok", echo.reason)
      # The worker's own directory is swapped in and translated back.
      self.assertEqual(echo.value["home"], str((self.tmp / "echo").resolve()))
      self.assertEqual(echo.value["cwd"], str((self.tmp / "echo").resolve()))
      self.assertEqual(echo.value["echo"]["path"], str(self.tmp / "echo" / "x.txt"))
      self.assertEqual(run("segfault").status, "crashed")
      self.assertEqual(run("raise_error").status, "error")
      self.assertEqual(run("huge_output").status, "output_limit")
      self.assertEqual(run("allocate_forever").status, "memory")
      env = run("read_env").value["env"]
      self.assertNotIn("OPENAI_API_KEY", env)
      self.assertNotIn(SECRETS["OPENAI_API_KEY"], str(env))
      forks = run("fork_children", {"token": token, "hang": True})
      self.assertEqual(forks.status, "timeout")
      self.assert_forks_cleaned(forks, token)
      self.assertEqual(run("poison").status, "ok")
      after = run("poisoned")
      self.assertEqual(after.status, "ok", after.reason)
      self.assertEqual({k: after.value[k] for k in ("module", "env", "tmp")},
                       {"module": False, "env": None, "tmp": False})
      if jail.mode() == "bwrap":
        killed = run("kill_jail_init")  # The jail's init cannot be killed from inside.
        self.assertEqual(killed.status, "ok", killed.reason)
        self.assertTrue(killed.value["init_alive"])
      self.assertEqual(run("echo").status, "ok")  # The next worker is ready.
      self.assertTrue(worker.alive)
    self.assertFalse(worker.alive)
    self.assertEqual(sorted(p.name for p in (self.tmp / "worker").iterdir()), ["worker.log"])

  def test_input_files_in_and_output_files_out(self):
    program = self.tmp / "run" / "programs" / "0001.py"  # Outside the workdir.
    program.parent.mkdir(parents=True)
    program.write_text("PROGRAM = 1\n")
    with sandbox.Worker(workdir=self.tmp / "worker", preload=(), extra_env=ENV) as worker:
      for how in ("worker", "fresh"):
        work = self.tmp / f"{how}-run"
        work.mkdir()
        (work / "inputs.txt").write_text("from the caller")
        payload = {"input": str(work / "inputs.txt"), "output": str(work / "preds.txt"),
                   "program": str(program)}
        target = "sandbox_targets:read_input_write_output"
        result = (worker.run(target, payload, workdir=work, limits=FAST) if how == "worker"
                  else sandbox.run_in_child(target, payload, workdir=work, limits=FAST,
                                            extra_env=ENV))
        self.assertEqual(result.status, "ok", result.reason)
        self.assertEqual((work / "preds.txt").read_text(), "FROM THE CALLER")
        self.assertEqual(result.value["program_text"], "PROGRAM = 1\n")
        self.assertEqual(result.value["program"], str(program))  # Mapped back.
        self.assertEqual(result.value["output"], str(work / "preds.txt"))
        self.assertEqual(program.read_text(), "PROGRAM = 1\n")


class NoJailTest(_SandboxCase):
  """``--sandbox=none``: the process limits alone still hold."""

  def setUp(self):
    super().setUp()
    jail.set_mode("none")
    self.addCleanup(jail.set_mode, "bwrap")

  def test_limits_and_cleanup_without_the_jail(self):
    self.assertEqual(self.run_target("sleep_forever").status, "timeout")
    self.assertEqual(self.run_target("allocate_forever").status, "memory")
    # Without the jail a daemon is found by the marker in its environment, so one that
    # clears its environment escapes: that is what the jail's PID namespace is for.
    token = f"spark-token-{uuid.uuid4().hex}"
    result = self.run_target("fork_children", {"token": token, "hang": False,
                                               "clean_env": False})
    self.assertEqual(result.status, "ok", result.reason)
    self.assert_forks_cleaned(result, token)
    identity = self.run_target("identity")
    self.assertEqual(identity.value["uid"], os.getuid())  # Not jailed: the host's uid.

  def test_worker_without_the_jail(self):
    token = f"spark-token-{uuid.uuid4().hex}"
    with sandbox.Worker(workdir=self.tmp / "worker", preload=("numpy",),
                        extra_env=ENV) as worker:
      forks = worker.run("sandbox_targets:fork_children",
                         {"token": token, "hang": True, "clean_env": False},
                         workdir=self.tmp / "forks", limits=FAST)
      self.assertEqual(forks.status, "timeout")
      self.assert_forks_cleaned(forks, token)
      echo = worker.run("sandbox_targets:echo", {}, workdir=self.tmp / "echo", limits=FAST)
      self.assertEqual(echo.value["cwd"], str((self.tmp / "echo").resolve()))


class EnvTest(absltest.TestCase):

  def test_scrubbed_env_keeps_settings_and_drops_secrets(self):
    home = pathlib.Path(tempfile.gettempdir())
    env = sandbox.scrubbed_env(home=home, environ={
        "PATH": "/bin", "XLA_FLAGS": "--x", "LC_ALL": "C", "SSH_AUTH_SOCK": "/s",
        "RANDOM_VAR": "1", **SECRETS})
    self.assertEqual(env["PATH"], "/bin")
    self.assertEqual(env["XLA_FLAGS"], "--x")
    self.assertEqual(env["JAX_PLATFORMS"], "cpu")
    self.assertEqual(env["HOME"], str(home))
    for name in ("SSH_AUTH_SOCK", "RANDOM_VAR", "OPENAI_API_KEY", "http_proxy",
                 "DB_PASSWORD", "GITHUB_TOKEN"):
      self.assertNotIn(name, env)

  def test_secret_extra_env_is_refused(self):
    with self.assertRaisesRegex(ValueError, "looks like a secret"):
      sandbox.scrubbed_env(home=pathlib.Path("/tmp"), extra={"MY_API_KEY": "x"})

  def test_address_space_defaults(self):
    with mock.patch.dict(os.environ, {"JAX_PLATFORMS": "cpu"}):
      self.assertEqual(sandbox.Limits(memory_mb=4096).resolved_address_space_mb(), 12288)
    with mock.patch.dict(os.environ, {"JAX_PLATFORMS": "cuda"}):
      self.assertEqual(sandbox.Limits(memory_mb=4096).resolved_address_space_mb(), 0)
    self.assertEqual(sandbox.Limits(address_space_mb=0).resolved_address_space_mb(), 0)
    self.assertEqual(sandbox.Limits(address_space_mb=999).resolved_address_space_mb(), 999)


if __name__ == "__main__":
  absltest.main()
