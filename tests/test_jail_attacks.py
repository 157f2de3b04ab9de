"""Attacks on the jail itself, run as root: arbitrary Python that skipped the policy.

Each target in ``tests/data/sandbox_targets.py`` (section "jail attacks") runs directly in
the jail, exactly as a candidate's code would once it escaped the policy, and each test
asserts the effect on the HOST and on the parent: the jail's processes run as an
unprivileged uid of their own; ``/proc/sys`` opens for writing nowhere; a victim file and
folder outside the workdir stay byte-identical; nested namespaces are refused; seccomp is
on; memfd and tmpfs memory end the run at the cgroup's limit; ``RLIMIT_CPU`` holds; no host
file descriptor is inside; planted links and FIFOs make the parent write nothing and wait
for nothing. Tests that need root or a writable cgroup skip with the reason. No JAX.
"""

import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import helpers
import psutil
from absl.testing import absltest

from spark_clrs.isolation import bwrap, cgroups, identity, jail, sandbox

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": str(ROOT / "tests" / "data")}
LIMITS = sandbox.Limits(timeout_s=30.0, memory_mb=1024)
_OUTSIDE_TMP = "/var/tmp" if os.path.isdir("/var/tmp") else str(ROOT)
NOT_ROOT = "needs root: the jail's own uid, cgroups and /proc/sys are root-host protections"


def _tree_digest(path: pathlib.Path) -> str:
  """Names, kinds, modes and contents of everything under ``path`` (links not followed)."""
  h = hashlib.sha256()
  for dirpath, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(dirs + files):
      full = os.path.join(dirpath, name)
      st = os.lstat(full)
      h.update(f"{full} {st.st_mode} {st.st_uid}\n".encode())
      if os.path.isfile(full) and not os.path.islink(full):
        h.update(pathlib.Path(full).read_bytes())
  return h.hexdigest()


class _AttackCase(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.assertEqual(jail.mode(), "bwrap")
    # Not under /tmp: there a write "succeeds" into the jail's private tmpfs, which would
    # make a blocked route look open.
    self.tmp = pathlib.Path(tempfile.mkdtemp(dir=_OUTSIDE_TMP, prefix="spark_jail_attack_"))
    self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
    self.victim_dir = self.tmp / "victim_folder"
    self.victim_dir.mkdir()
    (self.victim_dir / "keep.txt").write_text("folder content\n")
    self.victim = self.tmp / "victim.txt"
    self.victim.write_text("host file\n")
    self.workdir = self.tmp / "work"
    self.before = _tree_digest(self.tmp / "victim_folder"), self.victim.read_bytes()

  def jailed(self, name: str, payload: dict, limits: sandbox.Limits = LIMITS,
             worker: sandbox.Worker | None = None) -> sandbox.ChildResult:
    return helpers.run_jailed(name, payload, workdir=self.workdir, limits=limits, env=ENV,
                              worker=worker)

  def assert_victims_untouched(self) -> None:
    self.assertEqual((_tree_digest(self.victim_dir), self.victim.read_bytes()), self.before)


def _jail_processes(since: float) -> list[psutil.Process]:
  """Jailed children (``child --serve``) started after ``since``, running as a jail uid."""
  found = []
  for p in psutil.process_iter(["uids", "cmdline", "create_time"]):
    uids, argv = p.info["uids"], p.info["cmdline"] or [""]
    if (uids and identity.UID_BASE <= uids.real < identity.UID_BASE + identity.UID_COUNT
        and "spark_clrs.isolation.child" in argv and argv[0] != "bwrap"
        and p.info["create_time"] >= since):
      found.append(p)
  return found


@absltest.skipUnless(os.geteuid() == 0, NOT_ROOT)
class IdentityTest(_AttackCase):

  def test_each_jail_is_an_unprivileged_uid_of_its_own(self):
    since = time.time() - 1
    works = [self.tmp / "a", self.tmp / "b"]
    results: dict[int, sandbox.ChildResult] = {}

    def run(i: int) -> None:
      results[i] = sandbox.run_in_child("sandbox_targets:hold_until_released", {},
                                        workdir=works[i], limits=LIMITS, extra_env=ENV)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
      t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all((w / "started").exists() for w in works):
      time.sleep(0.05)
    procs = _jail_processes(since)
    maps = {}
    for p in procs:  # From the host: the jail's uid 65534 is the jail's own host uid.
      maps[p.pid] = pathlib.Path(f"/proc/{p.pid}/uid_map").read_text().split()
    for w in works:
      (w / "release").touch()
    for t in threads:
      t.join()
    self.assertLen(procs, 2, "two jailed children should be running")
    uids = {p.uids().real for p in procs if p.is_running()} | {
        int(m[1]) for m in maps.values()}
    self.assertLen(uids, 2, f"two concurrent jails share a uid: {maps}")
    for fields in maps.values():
      self.assertEqual(fields[0], "65534")
      self.assertGreaterEqual(int(fields[1]), identity.UID_BASE)
      self.assertEqual(fields[2], "1")
    for i, w in enumerate(works):
      self.assertEqual(results[i].status, "ok", results[i].reason)
      self.assertIn("Uid:\t65534\t65534\t65534\t65534", results[i].value["status"])
      owner = (w / "mine.txt").stat().st_uid
      self.assertIn(owner, uids)  # Written by the jail: owned by its uid, not root.
      self.assertEqual(w.stat().st_uid, owner)
      self.assertEqual(w.stat().st_mode & 0o777, 0o700)

  def test_leases_are_unique_across_processes(self):
    """Two searches on one machine never share a jail uid (the lease is a flock)."""
    mine = identity.lease()
    try:
      other = subprocess.run(
          [sys.executable, "-c", "from spark_clrs.isolation import identity\n"
           "print(identity.lease().uid)"], capture_output=True, text=True, cwd=ROOT,
          check=True, timeout=60)
      self.assertNotEqual(int(other.stdout), mine.uid)
      self.assertGreaterEqual(int(other.stdout), identity.UID_BASE)
    finally:
      mine.release()

  def test_proc_sys_is_not_writable(self):
    paths = ["/proc/sys/kernel/core_pattern", "/proc/sys/vm/swappiness",
             "/proc/sys/kernel/modprobe", "/proc/sys/user/max_user_namespaces",
             "/proc/sysrq-trigger"]
    result = self.jailed("proc_sys_writable", {"paths": paths})
    self.assertEqual(result.status, "ok", result.reason)
    for path in paths:
      self.assertTrue(result.value[path].startswith("blocked"), (path, result.value[path]))


class HostFilesTest(_AttackCase):

  def test_victims_outside_the_workdir_stay_identical(self):
    payload = {"victim": str(self.victim), "folder": str(self.victim_dir)}
    for use_worker in (False, True):
      if use_worker:
        with sandbox.Worker(workdir=self.tmp / "worker", preload=(), extra_env=ENV) as w:
          result = self.jailed("escape_writes", payload, worker=w)
      else:
        result = self.jailed("escape_writes", payload)
      self.assertEqual(result.status, "ok", result.reason)
      for route, outcome in result.value.items():
        if not route.startswith("readlink"):
          self.assertTrue(outcome.startswith("blocked"), (route, outcome))
        else:  # No descriptor names a host file or directory.
          self.assertRegex(outcome, r"^(blocked|ok: '(pipe|socket|anon_inode):|ok: '/dev/null')",
                           route)
      self.assert_victims_untouched()

  def test_no_host_descriptor_and_the_output_is_a_pipe(self):
    token = f"spark-fd-{uuid.uuid4().hex}"
    worker_dir = self.tmp / "worker"
    with sandbox.Worker(workdir=worker_dir, preload=("json",), extra_env=ENV) as w:
      warm = self.jailed("fd_audit", {"token": token}, worker=w)
    self.workdir = self.tmp / "fresh"
    fresh = self.jailed("fd_audit", {"token": token})
    for result in (warm, fresh):
      self.assertEqual(result.status, "ok", result.reason)
      for pid in ("self", "1"):
        for fd, target in result.value[pid].items():
          self.assertRegex(target, r"^(ok: '(pipe|socket|anon_inode):|ok: '/dev/null'|"
                           r"ok: '/proc/\d+/fd'|blocked)", (pid, fd))
      for fd in result.value["1"]:  # Through init's descriptors, nothing but /dev/null.
        outcome = result.value[f"write /proc/1/fd/{fd}"]
        self.assertTrue(outcome.startswith("blocked") or result.value["1"][fd] == "ok: "
                        "'/dev/null'", (fd, outcome))
    # What reached init's stdout/stderr went to the parent through the pipes, not a file.
    self.assertNotIn(token, (worker_dir / "worker.log").read_text())
    for path in self.tmp.rglob("*"):
      if path.is_file() and not path.is_symlink():
        self.assertNotIn(token.encode(), path.read_bytes(), path)


class NamespaceAndSeccompTest(_AttackCase):

  def test_nested_namespaces_are_refused(self):
    result = self.jailed("nested_namespaces", {"bwrap": bwrap.find_bwrap().path})
    self.assertEqual(result.status, "ok", result.reason)
    for name in ("user", "mount", "net"):
      self.assertEqual(result.value[f"unshare {name}"], [-1, 1], name)  # EPERM.
    for command in ("unshare --user", f"{bwrap.find_bwrap().path} --unshare-user"):
      outcome = result.value[command]
      self.assertTrue(outcome.startswith("blocked") or outcome != "ok: 0", (command, outcome))

  @absltest.skipUnless(platform.machine() == "x86_64", "system call numbers are x86_64's")
  def test_seccomp_is_active_and_denies(self):
    result = self.jailed("seccomp_probe", {})
    self.assertEqual(result.status, "ok", result.reason)
    value = result.value
    self.assertIn("Seccomp:\t2", value["status"])
    self.assertIn("NoNewPrivs:\t1", value["status"])
    self.assertIn("CapEff:\t0000000000000000", value["status"])
    for name in ("ptrace", "keyctl", "bpf", "perf_event_open", "userfaultfd", "mount",
                 "setns", "io_uring_setup", "kexec_load", "init_module", "open_by_handle_at",
                 "ioctl TIOCSTI"):
      self.assertEqual(value[name], [-1, 1], name)  # EPERM, from the filter.
    self.assertEqual(value["clone3"], [-1, 38])  # ENOSYS: glibc falls back to clone,
    self.assertEqual(value["fork"], "ok: 0")  # which still starts processes.


@absltest.skipUnless(os.geteuid() == 0 and cgroups.available(),
                     "needs root and a writable memory+pids cgroup")
class CgroupMemoryTest(_AttackCase):

  def test_memfd_and_tmpfs_pages_count(self):
    limits = sandbox.Limits(timeout_s=60.0, memory_mb=192)
    for target in ("memfd_fill", "tmpfs_fill"):
      start = time.monotonic()
      result = self.jailed(target, {"mb": 400}, limits=limits)
      self.assertEqual(result.status, "memory", (target, result.reason))
      self.assertIn("memory cgroup", result.reason)
      self.assertLess(time.monotonic() - start, 30)
    self.assertEqual([g.name for g in cgroups.of_owner(os.getpid()) if g.pids()], [])


class CpuTimeTest(_AttackCase):

  def test_rlimit_cpu_ends_a_spinning_child(self):
    for ignore in (False, True):
      start = time.monotonic()
      result = self.jailed("burn_cpu", {"ignore_sigxcpu": ignore},
                           limits=sandbox.Limits(timeout_s=60.0, memory_mb=512,
                                                 cpu_seconds=1))
      self.assertEqual(result.status, "timeout", result.reason)
      self.assertIn("RLIMIT_CPU", result.reason)
      self.assertLess(time.monotonic() - start, 30)

  def test_default_cpu_limit_follows_the_timeout(self):
    limits = sandbox.Limits(timeout_s=10.0)
    self.assertEqual(limits.resolved_cpu_seconds(), 10 * (os.cpu_count() or 1) + 1)
    self.assertEqual(sandbox.Limits(cpu_seconds=0).resolved_cpu_seconds(), 0)


class ControlFileTrapsTest(_AttackCase):

  def test_planted_links_and_fifos_cause_no_write_and_no_hang(self):
    program = self.tmp / "programs" / "prog.py"  # Staged for the jail on the next run.
    program.parent.mkdir()
    program.write_text("PROGRAM = 1\n")
    traps = {"victim": str(self.victim), "folder": str(self.victim_dir)}
    quick = sandbox.Limits(timeout_s=20.0, memory_mb=512)
    for use_worker in (False, True):
      self.workdir = self.tmp / f"trapped-{use_worker}"
      first = self.jailed("plant_control_traps", traps, limits=quick)
      self.assertEqual(first.status, "ok", first.reason)
      payload = {"input": str(self.workdir / "in.txt"), "output": str(self.workdir / "o.txt"),
                 "program": str(program)}
      (self.workdir / "in.txt").write_text("x")
      start = time.monotonic()
      if use_worker:
        with sandbox.Worker(workdir=self.tmp / "worker", preload=(), extra_env=ENV) as w:
          second = self.jailed("read_input_write_output", payload, limits=quick, worker=w)
      else:
        second = self.jailed("read_input_write_output", payload, limits=quick)
      self.assertLess(time.monotonic() - start, 20)
      self.assertEqual(second.status, "ok", second.reason)
      self.assertEqual(second.value["program_text"], "PROGRAM = 1\n")
      self.assertTrue((self.workdir / "victim_link").is_symlink())  # Left as planted.
      self.assert_victims_untouched()
      self.assertEqual(program.read_text(), "PROGRAM = 1\n")


if __name__ == "__main__":
  absltest.main()
