"""Where candidate evaluations run: local jailed slots or Ray tasks (SPEC §8, §9).

The search keeps ``executor.slots`` evaluations in flight, each one a blocking
:meth:`Executor.evaluate` call from its own driver thread, with the signature of
``spark_clrs.evaluation.evaluate.evaluate``; the driver alone writes the archive.

* :class:`LocalExecutor` (``--executor=local``): N slots on this machine. Each slot runs
  its evaluations on a ``runner.Worker`` (``warm``, the default: pre-started single-use
  jailed interpreters, the next of which
  imports JAX, Haiku and CLRS while the current candidate runs (no 5-15 s of imports on
  the critical path, and no interpreter ever runs two candidates) or else a
  ``runner.FreshRunner``, and one accelerator
  when there are any (``CUDA_VISIBLE_DEVICES`` of its own, and the GPU device nodes
  bound into its jail; slots sharing a GPU split its memory). With ``--sandbox=none``
  the slots share the run's persistent JAX compilation cache (a program compiled before
  skips XLA's backend compile); the jail hides it, since a cache shared by candidates is
  a channel from one candidate to the next.
* :class:`RayExecutor` (``--executor=ray``): each evaluation is one Ray task requesting
  one GPU when the cluster has GPUs, else ``cpus_per_evaluation`` CPUs. The task runs the
  same jailed evaluation (``sandbox.run_in_child`` through ``evaluate.evaluate``, with
  the driver's ``--sandbox`` mode) on its worker, from the program text shipped with the
  task (workers need not share a file system). A task lost with its worker (killed, node
  died, out of memory) is retried once by Ray, then recorded as ``crashed``; the jail
  dies with the task's process (``--die-with-parent``), and a guardian process on the
  worker kills anything left of the lost attempt. Ray is optional: ``pip install -e
  .[ray]``.

Every evaluation sees exactly one device: dm-clrs 2.0.3's multi-device path calls the
removed ``jax.device_put_replicated``.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import json
import math
import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import psutil

from spark_clrs.config import EXECUTORS
from spark_clrs.isolation import devices as devices_lib
from spark_clrs.isolation import exchange, jail, sandbox, supervision
from spark_clrs.isolation.runner import FreshRunner
from spark_clrs.messages import error_line

# What a warm evaluation worker imports once (everything the jailed trainer needs).
EVAL_PRELOAD = ("jax", "jax.numpy", "haiku", "numpy", "clrs", "spark_clrs.evaluation.trainer")
JAX_CACHE_VAR = "JAX_COMPILATION_CACHE_DIR"
RAY_INSTALL_HINT = "pip install -e '.[ray]'"
RAY_TASK_PREFIX = "spark_clrs_ray_"  # Name prefix of a Ray task's private directory.
RAY_RECORD = "ray_task.json"  # In the evaluation's workdir on the driver.


class ExecutorError(RuntimeError):
  """An executor cannot be set up; the message is one line naming the fix."""


class Executor(abc.ABC):
  """Runs sandboxed evaluations; thread-safe, ``slots`` of them at a time."""

  slots: int

  @abc.abstractmethod
  def evaluate(self, program_path: str | pathlib.Path, profile: Any, seeds: Sequence[int], *,
               workdir: pathlib.Path, limits: sandbox.Limits | None = None,
               cost: dict[str, Any] | None = None) -> Any:
    """Trains and scores one program; returns an ``evaluate.EvalResult`` (never raises
    for anything the candidate does). ``cost``: the checks' cost of the program
    (``checks.Verdict.cost_metrics()``), reused instead of exporting it again."""

  @abc.abstractmethod
  def describe(self) -> str:
    """One line for the run log."""

  @abc.abstractmethod
  def start(self) -> None:
    """Acquires resources (workers, cluster connection); idempotent."""

  @abc.abstractmethod
  def close(self) -> None:
    """Releases what :meth:`start` acquired."""

  def __enter__(self) -> Executor:
    self.start()
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


# ------------------------------------------------------------------------------ local


@dataclasses.dataclass
class _Slot:
  """One local evaluation slot: its accelerator (if any) and its warm worker."""

  index: int
  device: str | None
  env: dict[str, str]
  worker: sandbox.Worker | None = None


class LocalExecutor(Executor):
  """``slots`` evaluations at a time on this machine, each in a child of a warm worker.

  Args:
    slots: evaluations in flight.
    workdir: where the workers keep their home directories and logs.
    compile_cache_dir: persistent JAX compilation cache shared by the slots (None = off).
    devices: accelerator ids to spread the slots over (default: ``isolation.devices.gpu_ids``).
    warm: pre-started single-use workers (default); False = a fresh interpreter each.
  """

  def __init__(self, slots: int, *, workdir: pathlib.Path,
               compile_cache_dir: pathlib.Path | None = None,
               devices: Sequence[str] | None = None, warm: bool = True):
    if slots < 1:
      raise ExecutorError(f"--parallel_evaluations={slots} must be at least 1")
    self.slots = slots
    self._workdir = pathlib.Path(workdir)
    self._cache = pathlib.Path(compile_cache_dir) if compile_cache_dir else None
    self._devices = list(devices_lib.gpu_ids(os.environ) if devices is None else devices)
    self._warm = warm
    self._slots = [self._make_slot(i) for i in range(slots)]
    self._closed = False
    self._free: queue.Queue[_Slot] = queue.Queue()
    for slot in self._slots:
      self._free.put(slot)

  def _make_slot(self, index: int) -> _Slot:
    env: dict[str, str] = {}
    if self._cache is not None:
      env[JAX_CACHE_VAR] = str(self._cache)
    device = None
    if self._devices:
      device = self._devices[index % len(self._devices)]
      env["CUDA_VISIBLE_DEVICES"] = device
      sharing = math.ceil(self.slots / len(self._devices))
      if sharing > 1:  # JAX preallocates 75 % of a GPU by default; split it instead.
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / sharing:.3f}"
    return _Slot(index=index, device=device, env=env)

  @property
  def devices(self) -> list[str | None]:
    """The accelerator of each slot (None on CPU)."""
    return [s.device for s in self._slots]

  def describe(self) -> str:
    where = (f"GPU(s) {','.join(sorted(set(d for d in self.devices if d)))}" if self._devices
             else "CPU")
    how = ("pre-started single-use workers" if self._warm else "a fresh interpreter each")
    how += (", in the bubblewrap jail" if jail.mode() == "bwrap"
            else ", WITHOUT the jail (--sandbox=none)")
    cache = (f", JAX compilation cache {self._cache}"
             if self._cache and jail.mode() == "none" else "")
    return f"executor: local, {self.slots} evaluation(s) at a time on {where}, {how}{cache}"

  def start(self) -> None:
    """Starts the slots' warm workers, all at once (each imports JAX and CLRS)."""
    self._closed = False
    if self._cache is not None:
      self._cache.mkdir(parents=True, exist_ok=True)
    if not self._warm:
      return
    for slot in self._slots:
      if slot.worker is None:
        slot.worker = sandbox.Worker(workdir=self._workdir / f"slot-{slot.index}",
                                     preload=EVAL_PRELOAD, extra_env=slot.env,
                                     gpu=slot.device is not None)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(self._slots)) as pool:
      futures = [pool.submit(slot.worker.start) for slot in self._slots if slot.worker]
      errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
      self.close()
      raise ExecutorError(f"cannot start the evaluation workers: {error_line(errors[0], 300)}")

  def close(self) -> None:
    """Stops the workers; evaluations still running come back ``crashed``."""
    self._closed = True
    for slot in self._slots:
      if slot.worker is not None:
        slot.worker.close()
        slot.worker = None

  supports_deferred_test = True  # evaluate(score_test=False) + evaluate_test.

  def evaluate(self, program_path: str | pathlib.Path, profile: Any, seeds: Sequence[int], *,
               workdir: pathlib.Path, limits: sandbox.Limits | None = None,
               score_test: bool = True, cost: dict[str, Any] | None = None) -> Any:
    """``evaluate.evaluate`` in a free slot (``cost``: the checks' cost, see there)."""
    return self._in_slot("evaluate", program_path, profile, seeds, workdir=workdir,
                         limits=limits, score_test=score_test, cost=cost)

  def evaluate_test(self, program_path: str | pathlib.Path, profile: Any,
                    seeds: Sequence[int], *, workdir: pathlib.Path,
                    limits: sandbox.Limits | None = None) -> Any:
    """OOD-test of an earlier ``evaluate(..., score_test=False)`` in the same ``workdir``."""
    return self._in_slot("evaluate_test", program_path, profile, seeds, workdir=workdir,
                         limits=limits)

  def _in_slot(self, name: str, program_path: str | pathlib.Path, profile: Any,
               seeds: Sequence[int], *, workdir: pathlib.Path,
               limits: sandbox.Limits | None, **extra: Any) -> Any:
    from spark_clrs.evaluation import evaluate  # pylint: disable=g-import-not-at-top  # JAX, CLRS.

    slot = self._free.get()
    try:
      if self._closed:  # Shutting down (e.g. Ctrl-C): start nothing new.
        return evaluate.EvalResult(status="crashed", metrics=None, reason="crashed: the "
                                   "executor was closed before this evaluation started",
                                   wall_seconds=0.0, peak_rss_mb=0.0, stderr_tail="")
      if self._warm and slot.worker is None:
        slot.worker = sandbox.Worker(workdir=self._workdir / f"slot-{slot.index}",
                                     preload=EVAL_PRELOAD, extra_env=slot.env,
                                     gpu=slot.device is not None)
      runner = slot.worker if self._warm else FreshRunner(slot.env)
      return getattr(evaluate, name)(program_path, profile, seeds, workdir=workdir,
                                     limits=limits, runner=runner,
                                     visible_device=slot.device, **extra)
    finally:
      self._free.put(slot)


# -------------------------------------------------------------------------------- ray


def _import_ray() -> Any:
  try:
    import ray  # pylint: disable=g-import-not-at-top  # Optional extra.
  except ImportError:
    raise ExecutorError(f"--executor=ray needs Ray, which is not installed; install the "
                        f"optional extra: {RAY_INSTALL_HINT}") from None
  return ray


def _sandboxes_under(root: pathlib.Path) -> list[int]:
  """The processes whose HOME lies under ``root`` (a jailed child's HOME is its workdir):
  ours, and as root also those running as the jails' own uids."""
  prefix = str(root)
  uid, me, found = os.getuid(), os.getpid(), []
  for p in psutil.process_iter(["uids"]):
    try:
      if p.pid == me or p.info["uids"] is None or (uid != 0 and p.info["uids"].real != uid):
        continue
      home = p.environ().get("HOME", "")
      if home == prefix or home.startswith(prefix + os.sep):
        found.append(p.pid)
    except psutil.Error:
      continue
  return found


def guard(root: pathlib.Path) -> None:
  """Guardian of one Ray evaluation: waits for its stdin to close (the task finished or
  its worker died), then kills what is left of its jails and removes ``root``.

  As root, the jails of a dead worker are in cgroups whose owner is gone
  (``supervision.reap_stale``); any jailed process left under ``root`` (its HOME) is then
  killed with its tree, each by the isolation layer's one kill.
  """
  try:
    while sys.stdin.buffer.read(1 << 12):
      pass
  except OSError:
    pass
  supervision.reap_stale()
  for _ in range(3):
    pids = _sandboxes_under(root)
    if not pids:
      break
    for pid in pids:
      supervision.kill_until_gone(pid)
  try:  # It holds the jail's workdir: removed without following what the jail planted.
    exchange.unlink(root.parent, root.name)
  except exchange.BoundaryError:
    pass


class _Guardian:
  """Starts :func:`guard` for ``root`` in its own session; closing its stdin (or our death)
  ends it."""

  def __init__(self, root: pathlib.Path):
    self._proc = subprocess.Popen(
        [sys.executable, "-m", "spark_clrs.evaluation.executors", "guard", str(root)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True)

  def close(self) -> None:
    assert self._proc.stdin is not None
    self._proc.stdin.close()
    try:
      self._proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      self._proc.kill()
      self._proc.wait()


def ray_task(request: dict[str, Any]) -> dict[str, Any]:
  """Body of one Ray task: a sandboxed evaluation of the shipped program on this worker."""
  from spark_clrs.evaluation import evaluate, profiles  # pylint: disable=g-import-not-at-top

  jail.set_mode(request.get("sandbox", "bwrap"))  # The driver's --sandbox, never weaker.
  root = pathlib.Path(tempfile.mkdtemp(prefix=RAY_TASK_PREFIX)).resolve()
  guardian = _Guardian(root)
  try:
    exchange.write_bytes(root, request["program_name"], request["program_text"].encode())
    program = root / request["program_name"]
    cache = request.get("compile_cache_dir")
    env = {}
    if cache:
      try:
        pathlib.Path(cache).mkdir(parents=True, exist_ok=True)
      except OSError:  # Not this node's file system: a node-local cache instead.
        cache = str(pathlib.Path(tempfile.gettempdir()) / "spark_clrs_jax_cache")
        pathlib.Path(cache).mkdir(parents=True, exist_ok=True)
      env[JAX_CACHE_VAR] = cache
    result = evaluate.evaluate(
        program, profiles.EvalProfile(**request["profile"]), request["seeds"],
        workdir=root / "eval", limits=sandbox.Limits(**request["limits"]),
        runner=FreshRunner(env), cost=request.get("cost"))
    out = dataclasses.asdict(result)
    out["node"] = socket.gethostname()
    out["worker_pid"] = os.getpid()
    out["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return out
  finally:
    guardian.close()


class RayExecutor(Executor):
  """Each evaluation is a Ray task (one GPU, or ``cpus_per_evaluation`` CPUs).

  Args:
    slots: evaluations in flight (set it to the cluster's GPUs or worker count).
    address: Ray cluster address (``ray://...``, ``HOST:PORT`` or ``auto``); empty = the
      Ray instance this process already started, else a new local one.
    cpus_per_evaluation: CPUs each task requests when the cluster has no GPU.
    compile_cache_dir: JAX compilation cache path on the workers (a node-local one where
      that path cannot be created).
  """

  def __init__(self, slots: int, *, address: str = "", cpus_per_evaluation: int = 1,
               compile_cache_dir: pathlib.Path | None = None):
    self._ray = _import_ray()
    if slots < 1:
      raise ExecutorError(f"--parallel_evaluations={slots} must be at least 1")
    if cpus_per_evaluation < 1:
      raise ExecutorError(f"--ray_cpus_per_evaluation={cpus_per_evaluation} must be at "
                          "least 1")
    self.slots = slots
    self._address = address
    self._cpus = cpus_per_evaluation
    self._cache = str(compile_cache_dir) if compile_cache_dir else None
    self._started_ray = False
    self._remote: Any = None
    self._resources: dict[str, float] = {}

  def start(self) -> None:
    if self._remote is not None:
      return
    ray = self._ray
    if not ray.is_initialized():
      try:
        ray.init(address=self._address or None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
      except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = self._address or "a new local instance"
        hint = ("; if the cluster uses token authentication, export RAY_AUTH_MODE=token "
                "(the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN)"
                if self._address else "")
        raise ExecutorError(f"--executor=ray: cannot connect to Ray at {where}: "
                            f"{' '.join(str(e).split())[:300]}{hint}") from None
      self._started_ray = True
    cluster = ray.cluster_resources()
    gpus = cluster.get("GPU", 0.0)
    if gpus >= 1:
      self._resources = {"num_gpus": 1, "num_cpus": 1}
    else:
      if cluster.get("CPU", 0.0) < self._cpus:
        raise ExecutorError(f"--ray_cpus_per_evaluation={self._cpus} exceeds the cluster's "
                            f"{cluster.get('CPU', 0.0):g} CPUs")
      self._resources = {"num_gpus": 0, "num_cpus": self._cpus}
    self._remote = ray.remote(ray_task).options(
        max_retries=1, retry_exceptions=False, **self._resources)

  def close(self) -> None:
    self._remote = None
    if self._started_ray:
      self._ray.shutdown()
      self._started_ray = False

  def describe(self) -> str:
    cluster = self._ray.cluster_resources() if self._ray.is_initialized() else {}
    per_task = ("1 GPU" if self._resources.get("num_gpus") else
                f"{self._resources.get('num_cpus', self._cpus)} CPU(s)")
    return (f"executor: ray at {self._address or 'local instance'} "
            f"({cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs), "
            f"{self.slots} evaluation(s) at a time, {per_task} each; a task lost with its "
            "worker is retried once")

  def evaluate(self, program_path: str | pathlib.Path, profile: Any, seeds: Sequence[int], *,
               workdir: pathlib.Path, limits: sandbox.Limits | None = None,
               cost: dict[str, Any] | None = None) -> Any:
    from spark_clrs.evaluation import evaluate  # pylint: disable=g-import-not-at-top

    self.start()
    ray = self._ray
    path = pathlib.Path(program_path)
    limits = limits or evaluate.default_limits(profile, len(seeds))
    request = {"program_name": path.name, "program_text": path.read_text(),
               "profile": profile.to_dict(), "seeds": [int(s) for s in seeds],
               "limits": dataclasses.asdict(limits), "compile_cache_dir": self._cache,
               "sandbox": jail.mode(), "cost": cost}
    start = time.monotonic()
    try:
      out = ray.get(self._remote.remote(request))
    except ray.exceptions.RayTaskError as e:  # Our task code raised: a bug, one line.
      return self._failure("error", f"error: the Ray task raised {error_line(e, 300)}", start,
                           workdir)
    except ray.exceptions.RayError as e:  # Worker/node lost on both attempts.
      return self._failure("crashed", "crashed: the Ray task was lost with its worker twice "
                           f"(retried once): {type(e).__name__}: {error_line(e, 300)}", start,
                           workdir)
    record = {k: out.get(k) for k in ("status", "reason", "node", "worker_pid",
                                      "cuda_visible_devices", "wall_seconds")}
    _write_record(workdir, record)
    return evaluate.EvalResult(
        status=out["status"], metrics=out["metrics"], reason=out["reason"],
        wall_seconds=out["wall_seconds"], peak_rss_mb=out["peak_rss_mb"],
        stderr_tail=out["stderr_tail"])

  @staticmethod
  def _failure(status: str, reason: str, start: float, workdir: pathlib.Path) -> Any:
    from spark_clrs.evaluation import evaluate  # pylint: disable=g-import-not-at-top

    _write_record(workdir, {"status": status, "reason": reason})
    return evaluate.EvalResult(status=status, metrics=None, reason=reason,
                               wall_seconds=time.monotonic() - start, peak_rss_mb=0.0,
                               stderr_tail="")


def _write_record(workdir: pathlib.Path, record: dict[str, Any]) -> None:
  """``workdir/ray_task.json``: where and how the task ran (an evaluation's workdir may
  hold what a jail left there, so it is written as every such file is)."""
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  exchange.write_bytes(workdir, RAY_RECORD, (json.dumps(record, indent=2) + "\n").encode())


# ---------------------------------------------------------------------------- factory


def make_executor(kind: str, slots: int, *, workdir: pathlib.Path,
                  compile_cache_dir: pathlib.Path | None = None, ray_address: str = "",
                  ray_cpus_per_evaluation: int = 1) -> Executor:
  """The executor ``--executor=kind`` names (not started yet)."""
  if kind == "local":
    return LocalExecutor(slots, workdir=workdir, compile_cache_dir=compile_cache_dir)
  if kind == "ray":
    return RayExecutor(slots, address=ray_address,
                       cpus_per_evaluation=ray_cpus_per_evaluation,
                       compile_cache_dir=compile_cache_dir)
  raise ExecutorError(f"--executor={kind!r} is not one of {', '.join(EXECUTORS)}")


def main(argv: list[str]) -> None:
  """``python -m spark_clrs.evaluation.executors guard ROOT`` (internal: the Ray task's guardian)."""
  if len(argv) != 3 or argv[1] != "guard":
    print("usage: python -m spark_clrs.evaluation.executors guard ROOT (internal)", file=sys.stderr)
    sys.exit(2)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  guard(pathlib.Path(argv[2]))


if __name__ == "__main__":
  main(sys.argv)


__all__ = ["EVAL_PRELOAD", "EXECUTORS", "Executor", "ExecutorError", "LocalExecutor",
           "RayExecutor", "guard", "make_executor", "ray_task"]
