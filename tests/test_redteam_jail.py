"""Red team of the bubblewrap jail: attacker code that got past the policy, run directly.

Each target in ``tests/data/sandbox_targets.py`` (section "red team") is what a candidate
could do once it reached ``os``, ``socket`` or ``subprocess``; it runs in the jail exactly
as the check and evaluation children do (``sandbox.run_in_child`` and a
``sandbox.Worker``), and each test asserts the effect ON THE HOST: no file written
outside the workdir (the run's SQLite archive byte-identical), no secret in any output,
no listener reached, no process left, the caps hit. No JAX: the whole file takes seconds.
"""

import hashlib
import http.server
import json
import os
import pathlib
import socket
import sqlite3
import sys
import threading
import time
import uuid
from unittest import mock

import helpers
import psutil
from absl.testing import absltest

from spark_clrs.isolation import jail, sandbox

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": str(ROOT / "tests" / "data")}
LIMITS = sandbox.Limits(timeout_s=30.0, memory_mb=1024)


def _token() -> str:
  return f"spark-redteam-{uuid.uuid4().hex}"


def processes_with(text: str) -> list[int]:
  """Live host processes with ``text`` in their argv."""
  found = []
  for p in psutil.process_iter(["cmdline"]):
    try:
      if text in " ".join(p.info["cmdline"] or ()) and p.status() != psutil.STATUS_ZOMBIE:
        found.append(p.pid)
    except psutil.Error:
      continue
  return found


def wait_gone(text: str, timeout_s: float = 5.0) -> list[int]:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline and processes_with(text):
    time.sleep(0.05)
  return processes_with(text)


def _sha(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


class _JailCase(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.assertEqual(jail.mode(), "bwrap")
    self.tmp = pathlib.Path(self.create_tempdir().full_path)
    # A run directory laid out like a search's: the archive beside the candidates' work.
    self.run_dir = self.tmp / "run"
    (self.run_dir / "programs").mkdir(parents=True)
    self.program = self.run_dir / "programs" / "0001.py"
    self.program.write_text("# candidate 1\n")
    self.archive = self.run_dir / "archive.sqlite"
    with sqlite3.connect(self.archive) as con:
      con.execute("CREATE TABLE candidates (id INTEGER, fitness REAL)")
      con.execute("INSERT INTO candidates VALUES (1, 0.25)")
    self.workdir = self.run_dir / "work" / "0001" / "eval"

  def jailed(self, name: str, payload: dict, limits: sandbox.Limits = LIMITS,
             worker: sandbox.Worker | None = None) -> sandbox.ChildResult:
    return helpers.run_jailed(name, payload, workdir=self.workdir, limits=limits, env=ENV,
                              worker=worker)

  def all_output(self, result: sandbox.ChildResult) -> str:
    return json.dumps(result.value) + result.reason + result.stderr_tail + json.dumps(
        result.progress)


class FilesystemTest(_JailCase):

  def test_nothing_is_written_outside_the_workdir(self):
    token = _token()
    home = pathlib.Path(os.path.expanduser("~"))
    site = pathlib.Path(sandbox.__file__).resolve().parent
    targets = [self.tmp / f"{token}.txt", self.run_dir / f"{token}.txt",
               self.run_dir / "programs" / "0002.py", self.program,
               pathlib.Path("/tmp") / f"{token}.txt", home / f".{token}",
               site / f"{token}.py", ROOT / "seeds" / f"{token}.py",
               pathlib.Path(os.path.realpath(sys.prefix)) / f"{token}.pth"]
    before = _sha(self.archive), self.archive.stat().st_mtime_ns
    try:
      result = self.jailed("write_outside", {"paths": [str(p) for p in targets],
                                             "sqlite": str(self.archive)})
      self.assertEqual(result.status, "ok", result.reason)
      for path in targets:
        if path == self.program:
          self.assertEqual(path.read_text(), "# candidate 1\n")
        else:
          self.assertFalse(path.exists(), f"the jail wrote {path}")
        # Under /tmp the write "succeeds" into the jail's private tmpfs (the run dir of
        # this test is under /tmp too); the staged program is the jail's own copy.
        if not str(path).startswith("/tmp/") and path != self.program:
          self.assertTrue(result.value[str(path)].startswith("blocked"), (path, result.value))
      self.assertEqual((_sha(self.archive), self.archive.stat().st_mtime_ns), before)
      with sqlite3.connect(self.archive) as con:
        self.assertEqual(con.execute("SELECT * FROM candidates").fetchall(), [(1, 0.25)])
    finally:
      for path in targets:
        if path != self.program and path.exists():
          path.unlink()

  def test_huge_file_is_stopped_by_the_file_size_limit(self):
    limits = sandbox.Limits(timeout_s=30.0, memory_mb=1024, max_file_mb=8)
    result = self.jailed("huge_file", {"mb": 64}, limits=limits)
    self.assertEqual(result.status, "ok", result.reason)
    self.assertEqual(result.value["write"], "blocked: OSError")  # EFBIG.
    self.assertLessEqual((self.workdir / "big.bin").stat().st_size, 8 * 2**20)

  def test_filling_the_workdir_is_stopped(self):
    for limits, payload, words in (
        (sandbox.Limits(timeout_s=30.0, workdir_files=200), {"files": 5000, "kb": 1},
         "more than 200 files"),
        (sandbox.Limits(timeout_s=30.0, workdir_mb=16), {"files": 400, "kb": 1024},
         "over the 16 MB limit")):
      result = self.jailed("fill_workdir", payload, limits=limits)
      self.assertEqual(result.status, "output_limit", result.reason)
      self.assertIn(words, result.reason)

  def test_tmp_is_private_and_capped(self):
    name = _token()
    result = self.jailed("fill_tmp", {"name": name})
    self.assertEqual(result.status, "ok", result.reason)
    self.assertEqual(result.value["/tmp_error"], "OSError")  # ENOSPC.
    self.assertLessEqual(result.value["/tmp"], jail.TMP_MB)
    self.assertLessEqual(result.value["/dev/shm"], jail.SHM_MB)
    self.assertFalse((pathlib.Path("/tmp") / name).exists())
    self.assertFalse((pathlib.Path("/dev/shm") / name).exists())


class SecretsTest(_JailCase):

  def test_parent_environment_and_host_files_are_unreachable(self):
    secret_env, secret_tmp, secret_home = _token(), _token(), _token()
    host_file = self.tmp / "secret.txt"
    host_file.write_text(secret_tmp)
    home_file = pathlib.Path(os.path.expanduser("~")) / f".{_token()}"
    home_file.write_text(secret_home)
    try:
      with mock.patch.dict(os.environ, {"OPENAI_API_KEY": secret_env,
                                        "MY_SERVICE_TOKEN": secret_env}):
        payload = {"files": [str(host_file), str(home_file), "/etc/shadow"],
                   "parent_pid": os.getpid(), "home": str(home_file.parent)}
        fresh = self.jailed("read_secrets", payload)
        with sandbox.Worker(workdir=self.tmp / "worker", preload=("json",),
                            extra_env=ENV) as worker:
          warm = self.jailed("read_secrets", payload, worker=worker)
      for result in (fresh, warm):
        self.assertEqual(result.status, "ok", result.reason)
        text = self.all_output(result)
        for secret in (secret_env, secret_tmp, secret_home):
          self.assertNotIn(secret, text)
        value = result.value
        self.assertNotIn(home_file.name, value["home_listing"])  # HOME is not even listed.
        for key in (str(host_file), str(home_file), "/etc/shadow"):
          self.assertTrue(value[key].startswith("blocked"), (key, value[key]))
        self.assertTrue(value["parent_environ"].startswith("blocked"))
        self.assertLessEqual(len(value["visible_pids"]), 4)  # Only the jail's own.
        self.assertNotIn(os.getpid(), value["visible_pids"])
    finally:
      home_file.unlink()


class NetworkTest(_JailCase):

  def test_no_host_listener_is_reached(self):
    hits: list[str] = []
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.settimeout(0.2)
    unix_path = self.tmp / "host.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    unix.listen()
    unix.settimeout(0.2)
    abstract_name = _token()
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0" + abstract_name)
    abstract.listen()
    abstract.settimeout(0.2)

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # noqa: N802 (http.server's name)
        hits.append("http")
        self.send_response(200)
        self.end_headers()

      def log_message(self, *args):
        del args

    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stop = threading.Event()

    def accept_loop():
      while not stop.is_set():
        for name, server in (("tcp", tcp), ("unix", unix), ("abstract", abstract)):
          try:
            conn, _ = server.accept()
          except (TimeoutError, OSError):
            continue
          hits.append(name)
          conn.close()

    threads = [threading.Thread(target=accept_loop, daemon=True),
               threading.Thread(target=http_server.serve_forever, daemon=True)]
    for t in threads:
      t.start()
    try:
      # The listeners work from the host (the test is not vacuous).
      socket.create_connection(("127.0.0.1", tcp.getsockname()[1]), timeout=2).close()
      deadline = time.monotonic() + 5
      while "tcp" not in hits and time.monotonic() < deadline:
        time.sleep(0.05)
      self.assertEqual(hits, ["tcp"])
      hits.clear()
      result = self.jailed("reach_network", {
          "tcp_port": tcp.getsockname()[1],
          "http_url": f"http://127.0.0.1:{http_server.server_address[1]}/",
          "unix_path": str(unix_path), "abstract_name": abstract_name})
      time.sleep(0.5)
    finally:
      stop.set()
      http_server.shutdown()
      http_server.server_close()
      for s in (tcp, unix, abstract):
        s.close()
    self.assertEqual(result.status, "ok", result.reason)
    self.assertEqual(hits, [])
    for key in ("tcp", "http", "unix", "abstract", "outside"):
      self.assertTrue(result.value[key].startswith("blocked"), (key, result.value[key]))
    self.assertEqual(result.value["interfaces"], "ok: ['lo']")  # The jail's own loopback.


class ProcessTest(_JailCase):

  def test_identity_inside_the_jail(self):
    result = self.jailed("identity", {})
    self.assertEqual(result.status, "ok", result.reason)
    value = result.value
    self.assertEqual((value["uid"], value["euid"], value["gid"]), (65534, 65534, 65534))
    self.assertTrue(value["setuid0"].startswith("blocked"))
    self.assertEqual(value["hostname"], jail.HOSTNAME)
    self.assertLessEqual(len(value["pids"]), 3)
    self.assertEqual(value["tmpdir"], "/tmp")
    self.assertTrue(value["cwd_writable"])
    self.assertTrue(value["usr_writable"].startswith("blocked"))
    self.assertFalse([d for d in value["dev"] if d.startswith("nvidia")])
    self.assertEqual(value["cwd"], str(self.workdir.resolve()))

  def test_detached_daemon_does_not_survive_the_evaluation(self):
    for use_worker in (False, True):
      token = _token()
      if use_worker:
        with sandbox.Worker(workdir=self.tmp / "worker", preload=(),
                            extra_env=ENV) as worker:
          result = self.jailed("daemon_escape", {"token": token}, worker=worker)
      else:
        result = self.jailed("daemon_escape", {"token": token})
      self.assertEqual(result.status, "ok", result.reason)
      self.assertTrue(result.value["started"])  # It ran, setsid'd, with a clean env.
      self.assertEqual(wait_gone(token), [])

  def test_fork_bomb_is_capped_and_leaves_nothing(self):
    limits = sandbox.Limits(timeout_s=60.0, memory_mb=4096, max_processes=64)
    result = self.jailed("fork_bomb", {"attempts": 5000}, limits=limits)
    self.assertEqual(result.status, "ok", result.reason)
    self.assertLess(result.value["forked"], 64)
    self.assertEqual(result.value["error"], "BlockingIOError")  # EAGAIN from fork.
    # The forked copies carry the request path (in the workdir) in their argv.
    self.assertEqual(wait_gone(str(self.workdir.resolve())), [])


if __name__ == "__main__":
  absltest.main()
