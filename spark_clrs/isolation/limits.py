"""What one jailed run may use (:class:`Limits`) and how it ended (:class:`ChildResult`).

Memory is capped three ways, each catching what the others miss: a per-jail memory cgroup
(as root, where one is writable: counts every page the jail charges, tmpfs and memfd
included, with no swap), a watchdog over the resident memory of the jail's process tree,
and ``RLIMIT_AS`` on CPU-only hosts (CUDA/TPU runtimes reserve far more address space than
they use, so none when an accelerator is visible). ``RLIMIT_CPU`` bounds each process's
CPU time, so even a process that escaped every other bound stops burning CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import psutil

from spark_clrs.isolation import devices

STATUSES = ("ok", "error", "timeout", "crashed", "memory", "output_limit")
# Memory a search keeps for itself (its own growth, the check child, each slot's next
# pre-started interpreter) before dividing the rest among the evaluation slots.
PARENT_RESERVE_MB = 2048
MIN_SLOT_MB = 1024


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one sandboxed run.

  Attributes:
    timeout_s: wall-clock limit; the jail is killed when it is reached.
    memory_mb: the jail's memory (its cgroup's limit where there is one, and the resident
      memory of its process tree).
    max_output_bytes: limit on stdout+stderr bytes; excess -> status ``output_limit``.
    address_space_mb: ``RLIMIT_AS`` of the child; ``None`` picks ``max(2 x memory_mb,
      memory_mb + 8192)`` on CPU-only hosts and none with an accelerator; ``0`` disables it.
    max_processes: tasks (processes + threads) the jail may hold; 0 = ``max(1024, 32 x
      CPUs)`` (XLA starts a few threads per core).
    max_file_mb: ``RLIMIT_FSIZE``: largest file the child may write (MiB).
    workdir_mb: total size of the workdir (MiB); excess -> ``output_limit``.
    workdir_files: files and directories in the workdir; excess -> ``output_limit``.
    cpu_seconds: ``RLIMIT_CPU`` of each jailed process; ``None`` = the wall-clock limit
      times the CPUs (no process can use more in that time), ``0`` disables it.
  """

  timeout_s: float = 60.0
  memory_mb: int = 4096
  max_output_bytes: int = 1 << 20
  address_space_mb: int | None = None
  max_processes: int = 0
  max_file_mb: int = 1024
  workdir_mb: int = 2048
  workdir_files: int = 10000
  cpu_seconds: float | None = None

  def resolved_address_space_mb(self) -> int:
    """The ``RLIMIT_AS`` in MiB that the child gets (0 = unlimited)."""
    if self.address_space_mb is not None:
      return max(0, int(self.address_space_mb))
    if devices.accelerator_visible():
      return 0
    return max(2 * self.memory_mb, self.memory_mb + 8192)

  def resolved_max_processes(self) -> int:
    if self.max_processes > 0:
      return int(self.max_processes)
    return max(1024, 32 * (os.cpu_count() or 1))

  def resolved_cpu_seconds(self) -> int:
    """The ``RLIMIT_CPU`` soft limit in seconds (0 = unlimited)."""
    if self.cpu_seconds is not None:
      return max(0, math.ceil(self.cpu_seconds))
    return math.ceil(self.timeout_s * (os.cpu_count() or 1)) + 1


@functools.lru_cache(maxsize=8)
def slot_memory_mb(slots: int, reserve_mb: int = PARENT_RESERVE_MB) -> int:
  """Default memory of one evaluation slot: what this machine has available at the first
  call (measured once per process, before any evaluation holds memory), less
  ``reserve_mb`` for the search itself, divided by ``slots`` (at least MIN_SLOT_MB)."""
  available = psutil.virtual_memory().available / 2**20
  return max(MIN_SLOT_MB, int((available - reserve_mb) / max(1, slots)))


@dataclasses.dataclass(frozen=True)
class ChildResult:
  """Outcome of one sandboxed run.

  Attributes:
    status: one of :data:`STATUSES`.
    value: the target's JSON result when ``status == "ok"``, else ``None``.
    reason: one line saying what went wrong (empty when ok).
    wall_seconds: wall-clock time from the request to the end of cleanup.
    peak_rss_mb: peak resident memory of the child (tree) observed.
    stderr_tail: the last few KiB of the child's stderr.
    progress: the last record the target passed to ``report_progress`` (e.g. the check
      stage that was running when the child died).
    cpu_seconds: user+system CPU time of the child (and the descendants it waited for);
      unlike ``wall_seconds`` it does not grow when other processes share the CPUs.
  """

  status: str
  value: dict | None
  reason: str
  wall_seconds: float
  peak_rss_mb: float
  stderr_tail: str
  progress: dict = dataclasses.field(default_factory=dict)
  cpu_seconds: float = 0.0

  @property
  def ok(self) -> bool:
    return self.status == "ok"
