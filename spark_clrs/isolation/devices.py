"""Which accelerator a jailed run gets, and the host paths that CUDA needs for it.

The one place that decides whether a GPU is visible (no ``RLIMIT_AS`` then) and whether a
child was given one (then the jail binds its device nodes). A GPU run binds only what the
NVIDIA runtime opens: the ``/dev/nvidia*`` nodes, ``/proc/driver/nvidia``, the PCI device
directories of the GPUs in ``/sys`` (with the ``/sys/bus/pci/devices`` links to them), the
driver's ``/sys/module/nvidia*`` and the CPU/NUMA topology; never the whole of ``/sys``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

_NVIDIA_NODE = re.compile(r"^(nvidia\d+|nvidiactl|nvidia-uvm|nvidia-uvm-tools|nvidia-modeset)$")
_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$")
_SYS_TOPOLOGY = ("/sys/devices/system/cpu", "/sys/devices/system/node")
_SYS_MODULES = ("/sys/module/nvidia", "/sys/module/nvidia_uvm")


def accelerator_visible() -> bool:
  """Whether a GPU/TPU runtime is likely in use (then no RLIMIT_AS by default)."""
  platforms = os.environ.get("JAX_PLATFORMS", "").lower()
  if platforms:
    return any(p in platforms for p in ("cuda", "gpu", "rocm", "tpu"))
  return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/accel0")


def _cuda_ids(env: Mapping[str, str]) -> list[str] | None:
  """``[]`` when ``env`` hides every GPU (``JAX_PLATFORMS`` names only other platforms,
  ``CUDA_VISIBLE_DEVICES`` empty or ``-1``), its ``CUDA_VISIBLE_DEVICES`` ids, else None."""
  platforms = env.get("JAX_PLATFORMS", "").lower()
  if platforms and not any(p in platforms for p in ("cuda", "gpu")):
    return []
  visible = env.get("CUDA_VISIBLE_DEVICES")
  if visible is None:
    return None
  ids = [d.strip() for d in visible.split(",") if d.strip()]
  return [] if not ids or ids[0] == "-1" else ids


def gpu_ids(env: Mapping[str, str]) -> list[str]:
  """CUDA device ids a process with environment ``env`` may use, without initialising any
  runtime: those ``env`` names, else the host's ``/dev/nvidiaN`` numbers."""
  ids = _cuda_ids(env)
  if ids is not None:
    return ids
  return sorted((n[len("nvidia"):] for n in _listdir("/dev") if re.fullmatch(r"nvidia\d+", n)),
                key=int)


def gpu_given(env: Mapping[str, str]) -> bool:
  """Whether a child with environment ``env`` was given a GPU (then the jail binds the
  GPU device nodes): ``env`` hides none and the host has the NVIDIA driver."""
  return _cuda_ids(env) != [] and os.path.exists("/dev/nvidiactl")


@dataclasses.dataclass(frozen=True)
class GpuPaths:
  """What a GPU run binds: device nodes (read-write), read-only paths, and symlinks."""

  nodes: tuple[str, ...]
  readonly: tuple[str, ...]
  links: tuple[tuple[str, str], ...]  # (link path, target) as bwrap --symlink takes them.


def _listdir(path: str) -> list[str]:
  try:
    return sorted(os.listdir(path))
  except OSError:
    return []


def gpu_nodes() -> list[str]:
  """The host's NVIDIA device nodes (and the MIG capability nodes' directory)."""
  nodes = [f"/dev/{name}" for name in _listdir("/dev") if _NVIDIA_NODE.match(name)]
  if os.path.isdir("/dev/nvidia-caps"):
    nodes.append("/dev/nvidia-caps")
  return nodes


def gpu_pci_addresses() -> list[str]:
  """PCI addresses of the NVIDIA GPUs, as the driver lists them in /proc/driver/nvidia."""
  return [a for a in _listdir("/proc/driver/nvidia/gpus") if _PCI_ADDRESS.match(a)]


def gpu_paths() -> GpuPaths:
  """The host paths a CUDA process needs (see the module docstring)."""
  readonly, links = [], []
  if os.path.isdir("/proc/driver/nvidia"):
    readonly.append("/proc/driver/nvidia")
  for address in gpu_pci_addresses():
    link = f"/sys/bus/pci/devices/{address}"
    target = os.path.realpath(link)
    if target.startswith("/sys/devices/") and os.path.isdir(target):
      readonly.append(target)
      links.append((target, link))
  readonly.extend(p for p in (*_SYS_MODULES, *_SYS_TOPOLOGY) if os.path.isdir(p))
  return GpuPaths(nodes=tuple(gpu_nodes()), readonly=tuple(readonly), links=tuple(links))
