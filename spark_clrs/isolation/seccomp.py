"""The seccomp filter of the jail: system calls a training process never needs.

Built with libseccomp through ``pyseccomp`` (a ctypes binding with the API of libseccomp's
own Python bindings, loading the system's ``libseccomp.so.2``: no compiler, no bundled
copy of the library) and handed to bubblewrap as a compiled BPF program (``--seccomp FD``),
which loads it last, right before it executes the child, with no-new-privileges set.

Default: allow. Denied with ``EPERM``: mounting and pivoting (mount, umount2, pivot_root,
chroot, the new mount API), namespaces (unshare, setns, and clone with any
``CLONE_NEW*`` flag), tracing and reading other processes (ptrace, process_vm_readv/writev,
pidfd_getfd, kcmp), the kernel keyring, bpf, perf_event_open, userfaultfd, kexec, kernel
modules, reboot, swap, acct, quotas, file handles, io_uring, the system clock and names,
raw port I/O, and the ``TIOCSTI``/``TIOCLINUX`` ioctls that push input into a terminal.
``clone3`` fails with ``ENOSYS`` (its flags sit in memory, where a filter cannot read
them), so glibc falls back to ``clone``, whose flags are filtered. System calls of another
architecture (i386, x32) kill the process.

If libseccomp cannot be loaded the jail is unavailable (:class:`SeccompUnavailable`): it
never runs weaker than described here.
"""

from __future__ import annotations

import errno
import functools
import os

DENIED = (
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    "unshare", "setns",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "settimeofday", "clock_settime", "clock_adjtime", "sethostname", "setdomainname",
    "iopl", "ioperm", "vhangup", "syslog", "fanotify_init", "uselib",
)
# clone's namespace flags (CLONE_NEWTIME's bit is part of clone's exit signal, so it is
# only refused through unshare/clone3, which are denied whole).
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                         0x20000000, 0x40000000)
TERMINAL_IOCTLS = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX.


class SeccompUnavailable(RuntimeError):
  """libseccomp (or its Python binding) cannot build the filter here; one line."""


@functools.lru_cache(maxsize=1)
def program() -> bytes:
  """The compiled BPF program (cached); raises SeccompUnavailable."""
  try:
    import pyseccomp as sc  # pylint: disable=g-import-not-at-top  # Loads libseccomp.
  except (ImportError, OSError, RuntimeError) as e:
    raise SeccompUnavailable(f"cannot load libseccomp through pyseccomp "
                             f"({type(e).__name__}: {e}); pip install pyseccomp and the "
                             "system's libseccomp2") from None
  try:
    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED:
      flt.add_rule(deny, name)
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in CLONE_NAMESPACE_FLAGS:
      flt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for request in TERMINAL_IOCTLS:
      flt.add_rule(deny, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    fd = os.memfd_create("spark_clrs_seccomp", os.MFD_CLOEXEC)
    try:
      with os.fdopen(os.dup(fd), "wb") as f:
        flt.export_bpf(f)
      return os.pread(fd, 1 << 20, 0)
    finally:
      os.close(fd)
  except (OSError, RuntimeError, ValueError) as e:
    raise SeccompUnavailable(f"libseccomp could not build the jail's filter "
                             f"({type(e).__name__}: {e})") from None


def program_fd() -> int:
  """A fresh memfd holding :func:`program`, positioned at 0 (for one
  ``bwrap --seccomp FD``; the caller closes it after the start)."""
  data = program()
  fd = os.memfd_create("spark_clrs_seccomp", os.MFD_CLOEXEC)
  os.write(fd, data)
  os.lseek(fd, 0, os.SEEK_SET)
  return fd
