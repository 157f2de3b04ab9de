"""Cheap feasibility checks of a candidate program before any training (SPEC §3).

Stages, in order: ``parse -> scope -> policy -> interface -> shape -> finite -> budget``.
The first three read text and syntax trees in this process and never execute candidate
code. The last four execute it, so they run together in ONE sandboxed child
(:func:`child_checks`, via :func:`spark_clrs.isolation.sandbox.run_in_child` or a warm
:class:`spark_clrs.isolation.sandbox.Worker`):

* ``interface``: the program imports, has ``get_processor_factory(use_ln,
  nb_triplet_fts, ...)``, the factory builds a Haiku module named ``*clrs_processor*``
  with CLRS's ``inf_bias``/``inf_bias_edge`` and a ``__call__(node_fts, edge_fts,
  graph_fts, adj_mat, hidden, **kwargs)`` (constructed, never called).
* ``shape``: ``jax.make_jaxpr`` of the Haiku ``init`` (abstract tracing, no compute; init
  runs the forward pass) at two graph sizes (default n=64 then n=11, batch 32, the
  configured hidden H): ``__call__`` must return the pair ``nxt_hidden`` ``[B, N, H]``
  float32 and ``tri_msgs`` ``None`` or ``[B, N, N, H]`` float32, parameter shapes must not
  depend on N, and no intermediate array may exceed ``max_array_mb`` (catches
  ``[B, N, N, N, H]`` blow-ups and huge allocations before anything is allocated).
* ``finite``: one real forward pass (jitted, batch 2) at each of ``finite_sizes``
  (default: n=8 and the largest traced size, the OOD size n=64) with parameters from the
  candidate's own initializers has no NaN/Inf in its outputs or parameters.
* ``budget``: the child exports one processor step (``macs.export_processor``: the
  parameters as an ``.npz`` and the ``jax.export`` of the call, written to the workdir);
  the PARENT, which never loads the candidate, derives the parameter count and MACs from
  those files (``macs.cost_from_export``) and applies the caps (default: 4x the seed's).
  A child that forges its own verdict therefore cannot forge these numbers.

The shape and finite stages state their contract as chex assertions (``assert_shape``,
``assert_type``, ``assert_tree_all_finite``) with a one-line reason on top. Every
rejection is a :class:`Verdict` with its stage and a one-line, sanitised reason (never
more than :data:`MAX_REASON_CHARS` printable characters, at most
:data:`MAX_QUOTE_CHARS` of them quoted from candidate-controlled text). A child that hangs,
crashes or blows up is attributed to the stage it was in.
"""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import functools
import inspect
import io
import json
import math
import os
import pathlib
import stat
import time
import traceback
import zipfile
from collections.abc import Sequence
from typing import Any

from spark_clrs.checks import policy
from spark_clrs.isolation import sandbox
from spark_clrs.messages import one_line
from spark_clrs.programs import regions

STAGES = ("parse", "scope", "policy", "interface", "shape", "finite", "budget")
CHILD_TARGET = "spark_clrs.checks:child_checks"
PROCESSOR_TAG = "clrs_processor"
PROGRAM_FILE = "candidate.py"
# What the check child leaves for the parent's budget stage (next to the program).
PARAMS_FILE = "processor_params.npz"
EXPORT_FILE = "processor.export"
MAX_PARAMS_FILE_BYTES = 256 << 20
MAX_REASON_CHARS = 400  # A whole verdict reason.
MAX_QUOTE_CHARS = 160  # Text quoted from an exception raised by candidate code.

# Modules a warm check worker imports once before forking (see make_worker).
WORKER_PRELOAD = ("jax", "jax.numpy", "haiku", "numpy", "chex", "spark_clrs.checks",
                  "spark_clrs.evaluation.macs", "processors")
# Checks run on the CPU: they are tiny and must not contend with training on an
# accelerator (nor preallocate its memory).
CHILD_ENV = {"JAX_PLATFORMS": "cpu"}
DEFAULT_LIMITS = sandbox.Limits(timeout_s=60.0, memory_mb=4096, max_output_bytes=1 << 20)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """Outcome of the checks (SPEC §3 JSON).

  Attributes:
    feasible: True when every stage passed.
    stage: ``"ok"`` when feasible, else the rejecting stage (one of :data:`STAGES`).
    reason: one line, ``"<stage>: <what is wrong and how to fix it>"``; empty when ok.
    param_count: processor parameters (0 if the budget stage was not reached).
    macs: multiply-accumulates of one processor step for one graph (0 if not reached).
  """

  feasible: bool
  stage: str
  reason: str
  param_count: int = 0
  macs: int = 0

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict())


@dataclasses.dataclass(frozen=True)
class Budget:
  """Caps of the budget stage (processor only; MACs of one step, one graph).

  A ``None`` cap is filled with the default (:func:`default_budget`) in the parent
  (:func:`resolve_budget`), never by the check child.
  """

  max_param_count: int | None
  max_macs: int | None


@dataclasses.dataclass(frozen=True)
class CheckConfig:
  """Sizes used by the executing stages.

  Attributes:
    shape_sizes: graph sizes N traced by ``shape`` (the largest should be the OOD size).
    shape_batch: batch size B traced by ``shape``.
    finite_nodes: the training-size N of the real forward pass of ``finite``.
    finite_sizes: every N at which ``finite`` runs a real forward pass; empty (default):
      ``finite_nodes`` and the largest of ``shape_sizes`` (the OOD size, n=64 by default),
      see :meth:`finite_node_sizes`.
    finite_batch: B of the real forward passes of ``finite``.
    max_array_mb: largest intermediate array allowed at the traced sizes, in MiB.
    macs_nb_nodes: graph size at which MACs are counted (SPEC §4 default 16).
    use_ln: passed to ``get_processor_factory``.
    nb_triplet_fts: passed to ``get_processor_factory``.
  """

  shape_sizes: tuple[int, ...] = (11, 64)
  shape_batch: int = 32
  finite_nodes: int = 8
  finite_batch: int = 2
  max_array_mb: int = 2048
  macs_nb_nodes: int = 16
  use_ln: bool = True
  nb_triplet_fts: int = 8
  finite_sizes: tuple[int, ...] = ()

  def finite_node_sizes(self) -> tuple[int, ...]:
    """The N values of the finite stage, ascending (the OOD size included by default)."""
    sizes = self.finite_sizes or (self.finite_nodes, max(self.shape_sizes, default=0))
    return tuple(sorted({int(n) for n in sizes if int(n) > 0}))


def _reject(stage: str, reason: str, param_count: int = 0, macs: int = 0) -> Verdict:
  return Verdict(feasible=False, stage=stage, reason=one_line(f"{stage}: {reason}"),
                 param_count=param_count, macs=macs)


# ------------------------------------------------------------------ in-process stages


def static_checks(candidate_text: str, *, parent_text: str | None = None,
                  scope: Sequence[str] | None = None) -> Verdict | None:
  """Runs ``parse``, ``scope`` and ``policy`` (text only); None when all pass.

  With a parent and no ``scope``, every parent factor is editable but the read-only
  skeleton (and the markers) must be unchanged.

  Raises:
    ValueError: if ``scope`` names a factor the parent does not have (a usage error).
  """
  # parse
  try:
    tree = ast.parse(candidate_text, filename=PROGRAM_FILE)
  except SyntaxError as e:
    return _reject("parse", f"line {e.lineno}: {e.msg}; the program must be valid Python")
  try:
    child_regions = regions.parse_regions(candidate_text)
  except regions.RegionError as e:
    return _reject("parse", str(e))
  if not child_regions:
    return _reject("parse", "no factor regions found; keep the '# ===== BEGIN NAME REGION "
                   "=====' / '# ===== END NAME REGION =====' marker lines")
  # scope
  if parent_text is not None:
    parent_regions = regions.parse_regions(parent_text)
    names = list(parent_regions)
    selected = list(scope) if scope else names
    unknown = [s for s in selected if s not in parent_regions]
    if unknown:
      raise ValueError(f"unknown scope {', '.join(unknown)}; the parent's factors are "
                       f"{', '.join(names)}")
    missing = [n for n in names if n not in child_regions]
    if missing:
      return _reject("parse", f"region {', '.join(missing)} is missing (marker lines deleted "
                     f"or renamed); the parent has {', '.join(names)}")
    problems = regions.outside_scope_changes(parent_text, candidate_text, selected)
    if problems:
      return _reject("scope", f"changed outside {'+'.join(selected)}: {'; '.join(problems)}; "
                     "edit only the selected region")
  # policy
  violations = policy.check_policy(tree)
  if violations:
    more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
    return _reject("policy", f"{violations[0]}{more}")
  return None


# --------------------------------------------------------------------- parent driver


def run_checks(candidate_text: str, *, parent_text: str | None = None,
               scope: Sequence[str] | None = None, budget: Budget | None = None,
               workdir: pathlib.Path, limits: sandbox.Limits | None = None,
               hidden: int = 128, config: CheckConfig | None = None,
               worker: sandbox.Worker | None = None, budget_seed: str = "triplet_gmpnn",
               budget_factor: float = 4.0) -> Verdict:
  """Runs every stage in order and returns the first rejection (or a feasible verdict).

  Args:
    candidate_text: the program.
    parent_text: the parent program; without it the ``scope`` stage is skipped.
    scope: factor names the child may change (default: all parent factors).
    budget: caps; None (or a None cap) = ``budget_factor`` x the ``budget_seed``
      processor's (:func:`default_budget`, computed here, in the parent).
    workdir: private directory for the sandboxed stages (created).
    limits: sandbox limits (default :data:`DEFAULT_LIMITS`).
    hidden: processor width H (``out_size``), as in the evaluation profile.
    config: sizes of the executing stages (default :class:`CheckConfig`).
    worker: a warm worker from :func:`make_worker` (default: a fresh child).
    budget_seed: seed whose cost defines the default caps.
    budget_factor: multiple of the seed's cost allowed by the default caps.

  Raises:
    ValueError: if ``scope`` names a factor the parent does not have.
  """
  verdict = static_checks(candidate_text, parent_text=parent_text, scope=scope)
  if verdict is not None:
    return verdict
  workdir = pathlib.Path(workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  program = workdir / PROGRAM_FILE
  program.write_text(candidate_text)
  config = config or CheckConfig()
  for stale in (PARAMS_FILE, EXPORT_FILE):  # Only what this child writes may be read.
    (workdir / stale).unlink(missing_ok=True)
  payload = {
      "program_path": str(program),
      "hidden": hidden,
      "config": dataclasses.asdict(config),
  }
  limits = limits or DEFAULT_LIMITS
  if worker is not None:
    result = worker.run(CHILD_TARGET, payload, workdir=workdir, limits=limits)
  else:
    result = sandbox.run_in_child(CHILD_TARGET, payload, workdir=workdir, limits=limits,
                                  extra_env=CHILD_ENV)
  caps = resolve_budget(budget, seed=budget_seed, hidden=hidden, factor=budget_factor,
                        config=config)
  return verdict_from_child(result, budget=caps, workdir=workdir, hidden=hidden,
                            config=config)


def resolve_budget(budget: Budget | None, *, seed: str = "triplet_gmpnn", hidden: int = 128,
                   factor: float = 4.0, config: CheckConfig | None = None) -> Budget:
  """``budget`` with each None cap filled by ``factor`` x the ``seed``'s (trusted, here)."""
  if budget is not None and budget.max_param_count is not None and budget.max_macs is not None:
    return budget
  config = config or CheckConfig()
  default = default_budget(seed, hidden, factor, config.nb_triplet_fts, config.macs_nb_nodes)
  if budget is None:
    return default
  return Budget(max_param_count=budget.max_param_count if budget.max_param_count is not None
                else default.max_param_count,
                max_macs=budget.max_macs if budget.max_macs is not None else default.max_macs)


class _ChildFileError(ValueError):
  """A file the child left is unusable; the message is ours (safe to show)."""


def _read_child_file(path: pathlib.Path, cap: int) -> bytes:
  """The bytes of a file the jailed child wrote: a regular file (no symlink, FIFO or
  device: those could point the parent at a secret or block it), at most ``cap`` bytes."""
  fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
  with os.fdopen(fd, "rb") as f:
    info = os.fstat(f.fileno())
    if not stat.S_ISREG(info.st_mode):
      raise _ChildFileError(f"{path.name} is not a regular file")
    if info.st_size > cap:
      raise _ChildFileError(f"{path.name} is over {cap:,} bytes")
    data = f.read(cap + 1)
  if len(data) > cap:
    raise _ChildFileError(f"{path.name} is over {cap:,} bytes")
  return data


def _npz_shapes(path: pathlib.Path) -> dict[str, tuple[tuple[int, ...], str]]:
  """``{"module/name": (shape, dtype)}`` from an ``.npz``'s headers (no data is loaded).

  The file was written by the jailed child: only ``.npy`` headers are parsed (no pickle,
  no decompression of the data), and the file size is capped.
  """
  import numpy as np

  data = _read_child_file(path, MAX_PARAMS_FILE_BYTES)
  shapes = {}
  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    for info in archive.infolist():
      if not info.filename.endswith(".npy"):
        raise _ChildFileError(f"{PARAMS_FILE} holds a member that is not an .npy array")
      with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
          shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
          shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
          raise _ChildFileError(f"{PARAMS_FILE} holds an .npy of unsupported version {version}")
      if dtype.hasobject:
        raise _ChildFileError(f"{PARAMS_FILE} holds an object array")
      shapes[info.filename[:-len(".npy")]] = (tuple(int(d) for d in shape), dtype.name)
  return shapes


def trusted_cost(program_dir: pathlib.Path, *, hidden: int | None = None,
                 nb_nodes: int | None = None) -> Any:
  """``macs.ProcessorCost`` from the files the check child left (``macs.cost_from_export``).

  Runs in the parent: reads data only, never the candidate. Raises ``macs.ExportError`` or
  ``ValueError``/``OSError`` with a short reason when the files are missing or do not agree.
  """
  from spark_clrs.evaluation import macs

  program_dir = pathlib.Path(program_dir)
  serialized = _read_child_file(program_dir / EXPORT_FILE, macs.MAX_EXPORT_BYTES)
  shapes = _npz_shapes(program_dir / PARAMS_FILE)
  return macs.cost_from_export(serialized, shapes, hidden=hidden, nb_nodes=nb_nodes)


def _trusted_budget(workdir: pathlib.Path, budget: Budget, hidden: int,
                    config: CheckConfig) -> Verdict:
  """The budget stage's decision, from data only (see :func:`trusted_cost`)."""
  n = config.macs_nb_nodes
  try:
    cost = trusted_cost(workdir, hidden=hidden, nb_nodes=n)
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    ours = isinstance(e, _ChildFileError) or type(e).__name__ == "ExportError"
    detail = str(e) if ours else type(e).__name__
    return _reject("budget", f"the processor's export could not be costed: {one_line(detail)}")
  assert budget.max_param_count is not None and budget.max_macs is not None
  if cost.param_count > budget.max_param_count:
    return _reject("budget", f"{cost.param_count:,} processor parameters exceed the cap of "
                   f"{budget.max_param_count:,}; use fewer or narrower layers",
                   cost.param_count, cost.macs)
  if cost.macs > budget.max_macs:
    return _reject("budget", f"{cost.macs:,} MACs per step (n={n}) exceed the cap of "
                   f"{budget.max_macs:,}; use cheaper operators", cost.param_count, cost.macs)
  return Verdict(feasible=True, stage="ok", reason="", param_count=cost.param_count,
                 macs=cost.macs)


def verdict_from_child(result: sandbox.ChildResult, *, budget: Budget | None = None,
                       workdir: pathlib.Path | None = None, hidden: int = 128,
                       config: CheckConfig | None = None) -> Verdict:
  """Turns the sandbox outcome of :func:`child_checks` into a verdict.

  The child's own word is taken only for the stages it ran (and its reason is sanitised);
  when it passed them and ``budget``/``workdir`` are given, the budget stage is decided
  here from the exported files. Without them (e.g. a caller that only wants the child's
  stages) a passing child gives a feasible verdict with no cost numbers.
  """
  if result.ok and isinstance(result.value, dict):
    v = result.value
    stage = v.get("stage")
    if v.get("feasible") is True and stage == "ok":
      if budget is None or workdir is None:
        return Verdict(feasible=True, stage="ok", reason="")
      return _trusted_budget(pathlib.Path(workdir), budget, hidden, config or CheckConfig())
    if stage not in STAGES[3:]:
      return _reject("interface", "the check child returned a malformed verdict")
    reason = str(v.get("reason", ""))
    prefix = f"{stage}: "
    return _reject(stage, reason[len(prefix):] if reason.startswith(prefix) else reason)
  stage = result.progress.get("stage", "interface")
  if stage not in STAGES[3:]:
    stage = "interface"
  return _reject(stage, f"the check child stopped ({result.reason})")


def make_worker(workdir: pathlib.Path) -> sandbox.Worker:
  """A warm sandbox worker with JAX, Haiku and the checks preloaded (start it with ``with``)."""
  return sandbox.Worker(workdir=workdir, preload=WORKER_PRELOAD, extra_env=CHILD_ENV)


@functools.lru_cache(maxsize=16)
def default_budget(seed: str = "triplet_gmpnn", hidden: int = 128, factor: float = 4.0,
                   nb_triplet_fts: int = 8, nb_nodes: int = 16) -> Budget:
  """``factor`` x the seed processor's parameters and MACs (imports JAX in this process).

  The seed is trusted code (it ships with the package), so it is loaded in-process.
  """
  import processors
  from spark_clrs.evaluation import macs

  factory = processors.load(seed, use_ln=True, nb_triplet_fts=nb_triplet_fts)
  cost = macs.processor_cost(factory, hidden=hidden, nb_nodes=nb_nodes)
  return Budget(max_param_count=math.ceil(factor * cost.param_count),
                max_macs=math.ceil(factor * cost.macs))


# ---------------------------------------------------------------------- child stages


class _StageFailure(Exception):
  """A stage rejects the candidate with a one-line reason."""


def _candidate_line(e: BaseException, program_path: str) -> str:
  """' (candidate line N)' for the innermost frame inside the program, if any."""
  for frame in reversed(traceback.extract_tb(e.__traceback__)):
    if frame.filename == program_path:
      return f" (candidate line {frame.lineno})"
  return ""


def _describe(e: BaseException, program_path: str) -> str:
  """``Type: message (candidate line N)``; the message is candidate-controlled, so it is
  flattened to printable ASCII and cut to :data:`MAX_QUOTE_CHARS`."""
  try:
    text = one_line(str(e), MAX_QUOTE_CHARS)
  except Exception:  # A hostile __str__.
    text = ""
  name = one_line(type(e).__name__, 60)
  return (f"{name}: {text}" if text else name) + _candidate_line(e, program_path)


def _path_str(path: Sequence[Any]) -> str:
  """``module/name`` for a Haiku parameter path."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _params(fn: Any) -> str:
  """``(a, b, **kw)``: a signature without annotations, to keep reasons on one short line."""
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return "(...)"
  prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
  return "(" + ", ".join(prefix.get(p.kind, "") + p.name for p in params) + ")"


def _shape_str(x: Any) -> str:
  if x is None:
    return "None"
  shape = getattr(x, "shape", None)
  if shape is None:
    return type(x).__name__
  return f"[{', '.join(str(d) for d in shape)}]"


class _Program:
  """The candidate loaded in the child, with helpers to build its Haiku transform."""

  def __init__(self, program_path: str, hidden: int, config: CheckConfig):
    self.path = program_path
    self.hidden = hidden
    self.config = config
    self.factory: Any = None
    self.params: Any = None  # Set by ``finite``; exported by ``budget``.
    # (module name, parameter name) -> (initializer, shape, dtype), seen by ``shape``.
    self.initializers: dict[tuple[str, str], tuple[Any, tuple[int, ...], Any]] = {}

  def recording_creator(self) -> Any:
    """A Haiku creator that records every parameter's initializer in ``initializers``."""

    def creator(next_creator, shape, dtype, init, context):
      self.initializers[(context.module_name, context.name)] = (init, tuple(shape), dtype)
      return next_creator(shape, dtype, init)

    return creator

  def load(self) -> None:
    """interface, part 1: import, ``get_processor_factory`` and the factory."""
    import processors

    try:
      module = processors.load_module(self.path)
    except processors.ProgramLoadError as e:
      cause = e.__cause__ or e
      raise _StageFailure(f"importing the program failed: {_describe(cause, self.path)}"
                          ) from e
    get_factory = getattr(module, "get_processor_factory", None)
    if not callable(get_factory):
      raise _StageFailure("no get_processor_factory() found; define get_processor_factory("
                          "use_ln=True, nb_triplet_fts=8, **unused) returning "
                          "factory(out_size) -> processor")
    kwargs = {"use_ln": self.config.use_ln, "nb_triplet_fts": self.config.nb_triplet_fts}
    try:
      inspect.signature(get_factory).bind(**kwargs)
    except (TypeError, ValueError) as e:
      raise _StageFailure(f"get_processor_factory{_params(get_factory)} cannot be called with "
                          f"{kwargs}: {e}; accept use_ln, nb_triplet_fts and **unused") from e
    try:
      factory = get_factory(**kwargs)
    except Exception as e:
      raise _StageFailure(f"get_processor_factory() raised {_describe(e, self.path)}") from e
    if not callable(factory):
      raise _StageFailure(f"get_processor_factory() returned {type(factory).__name__}; "
                          "return a callable factory(out_size) -> processor")
    self.factory = factory

  def processor(self) -> Any:
    """Builds the processor (inside a Haiku transform) and checks its interface."""
    import haiku as hk

    try:
      proc = self.factory(self.hidden)
    except Exception as e:
      raise _StageFailure(f"factory({self.hidden}) raised {_describe(e, self.path)}") from e
    if not isinstance(proc, hk.Module):
      raise _StageFailure(f"factory(out_size) returned {type(proc).__name__}, not a Haiku "
                          "module; subclass hk.Module (as CLRS processors do)")
    if PROCESSOR_TAG not in proc.module_name:
      raise _StageFailure(f"processor module is named {proc.module_name!r}; its name must end "
                          f"in '{PROCESSOR_TAG}' (CLRS trains only parameters under such a "
                          "module), e.g. name='mpnn_aggr_clrs_processor'")
    for attr in ("inf_bias", "inf_bias_edge"):
      if not hasattr(proc, attr):
        raise _StageFailure(f"processor has no {attr!r} property; CLRS's BaselineModel reads "
                            "it (return False unless the processor needs it)")
    try:
      inspect.signature(proc.__call__).bind(
          "node_fts", "edge_fts", "graph_fts", "adj_mat", "hidden", batch_size=1, nb_nodes=1)
    except (TypeError, ValueError) as e:
      raise _StageFailure(f"__call__{_params(proc.__call__)} does not accept CLRS's call "
                          "(node_fts, edge_fts, graph_fts, adj_mat, hidden, batch_size=..., "
                          f"nb_nodes=...): {e}; keep the seed's signature with **kwargs") from e
    return proc

  def transformed(self, batch: int, nodes: int, creator: Any = None,
                  probe: list | None = None) -> Any:
    """``hk.transform`` of one processor step for inputs of batch ``batch``, size ``nodes``.

    Args:
      batch: B.
      nodes: N.
      creator: an optional Haiku parameter creator in force during the step (used to
        record the initializers and to draw them with numpy).
      probe: if given, each call appends the shapes/dtypes of what ``__call__`` returned,
        so that tracing ``init`` alone also yields the output shapes.
    """
    import haiku as hk
    import jax

    def call(node_fts, edge_fts, graph_fts, adj_mat, hidden):
      proc = self.processor()
      try:
        return proc(node_fts, edge_fts, graph_fts, adj_mat, hidden, batch_size=batch,
                    nb_nodes=nodes)
      except _StageFailure:
        raise
      except Exception as e:
        raise _CallFailure(_describe(e, self.path)) from e

    def abstract(x):
      if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(x.shape, x.dtype)
      return x

    def step(*inputs):
      if creator is None:
        out = call(*inputs)
      else:
        with hk.custom_creator(creator, state=False):
          out = call(*inputs)
      if probe is not None:
        probe.append(jax.tree_util.tree_map(abstract, out))
      return out

    return hk.transform(step)

  def abstract_inputs(self, batch: int, nodes: int) -> tuple[Any, ...]:
    import jax
    import jax.numpy as jnp

    h = self.hidden
    f32 = jnp.float32
    return (jax.ShapeDtypeStruct((batch, nodes, h), f32),
            jax.ShapeDtypeStruct((batch, nodes, nodes, h), f32),
            jax.ShapeDtypeStruct((batch, h), f32),
            jax.ShapeDtypeStruct((batch, nodes, nodes), f32),
            jax.ShapeDtypeStruct((batch, nodes, h), f32))


class _CallFailure(Exception):
  """The processor's ``__call__`` raised while being traced or run."""


def _abstract_key() -> Any:
  import jax
  import jax.numpy as jnp

  return jax.ShapeDtypeStruct((2,), jnp.uint32)


def _stage_interface(prog: _Program) -> None:
  """Import, factory, module type and name, ``inf_bias*`` and the ``__call__`` signature.

  The processor is only constructed (inside a Haiku transform), never called: what its
  ``__call__`` returns is the ``shape`` stage's business.
  """
  import haiku as hk
  import jax

  prog.load()
  try:
    jax.eval_shape(hk.transform(prog.processor).init, _abstract_key())
  except _StageFailure:
    raise
  except Exception as e:
    raise _StageFailure(f"building the processor failed: {_describe(e, prog.path)}") from e


def _iter_avals(jaxpr: Any):
  """Yields (eqn, aval) for every intermediate of a jaxpr, sub-jaxprs included."""
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield eqn, var.aval
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _iter_avals(inner)


def _eqn_line(eqn: Any, program_path: str) -> str:
  tb = getattr(eqn.source_info, "traceback", None)
  for frame in getattr(tb, "frames", None) or ():
    if frame.file_name == program_path:
      return f" at candidate line {frame.line_num}"
  return ""


def _check_output(name: str, value: Any, expected: tuple[int, ...], optional: bool) -> None:
  """The contract as chex states it (``assert_shape``, ``assert_type``); our reason on top."""
  import chex
  import jax.numpy as jnp

  want = f"[{', '.join(map(str, expected))}]"
  want = f"None or {want}" if optional else want
  if value is None and optional:
    return
  if getattr(value, "shape", None) is None or getattr(value, "dtype", None) is None:
    raise _StageFailure(f"{name} is {_shape_str(value)}, expected {want}")
  try:
    chex.assert_shape(value, expected)
  except AssertionError:
    raise _StageFailure(f"{name} is {_shape_str(value)}, expected {want}") from None
  try:
    chex.assert_type(value, jnp.float32)
  except AssertionError:
    raise _StageFailure(f"{name} is {value.dtype} {_shape_str(value)}, expected float32 "
                        f"{want}") from None


def _stage_shape(prog: _Program) -> None:
  """Abstract init (which runs the forward pass) at each configured size (no compute).

  One ``jax.make_jaxpr`` of ``init`` per size gives the parameter shapes, every
  intermediate of the forward pass, and (through the probe) the returned shapes.
  """
  import jax
  import numpy as np

  cfg = prog.config
  batch = cfg.shape_batch
  param_shapes: dict[str, tuple[int, ...]] | None = None
  first_n = None
  for n in sorted(cfg.shape_sizes, reverse=True):  # The largest (OOD) size first.
    probe: list = []
    model = prog.transformed(batch=batch, nodes=n, creator=prog.recording_creator(),
                             probe=probe)
    inputs = prog.abstract_inputs(batch, n)
    try:
      closed, params = jax.make_jaxpr(model.init, return_shape=True)(_abstract_key(), *inputs)
    except _StageFailure:
      raise
    except _CallFailure as e:
      raise _StageFailure(f"tracing at n={n}, batch {batch} failed: {e}") from e
    except Exception as e:
      raise _StageFailure(f"tracing at n={n}, batch {batch} failed: "
                          f"{_describe(e, prog.path)}") from e
    out = probe[-1]
    if not isinstance(out, (tuple, list)) or len(out) != 2:
      got = f"{len(out)} values" if isinstance(out, (tuple, list)) else f"a {_shape_str(out)}"
      raise _StageFailure(f"__call__ returned {got}; it must return the pair (nxt_hidden "
                          f"[{batch}, {n}, {prog.hidden}], tri_msgs None or "
                          f"[{batch}, {n}, {n}, {prog.hidden}])")
    nxt_hidden, tri_msgs = out
    _check_output("nxt_hidden", nxt_hidden, (batch, n, prog.hidden), optional=False)
    _check_output("tri_msgs", tri_msgs, (batch, n, n, prog.hidden), optional=True)
    shapes = {_path_str(path): tuple(leaf.shape) for path, leaf
              in jax.tree_util.tree_flatten_with_path(params)[0]}
    if param_shapes is None:
      param_shapes, first_n = shapes, n
    elif shapes != param_shapes:
      for key in sorted(set(shapes) | set(param_shapes)):
        a, b = param_shapes.get(key), shapes.get(key)
        if a != b:
          raise _StageFailure(f"parameter {key} is {list(a) if a else 'absent'} at n={first_n} "
                              f"but {list(b) if b else 'absent'} at n={n}; parameter shapes "
                              "must not depend on the number of nodes")
    cap = cfg.max_array_mb * 2**20
    worst, worst_eqn, worst_bytes = None, None, 0
    for eqn, aval in _iter_avals(closed.jaxpr):
      shape = getattr(aval, "shape", None)
      try:
        itemsize = np.dtype(aval.dtype).itemsize
      except TypeError:  # PRNG key and other extended dtypes: tiny, skip.
        continue
      if shape is None:
        continue
      nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
      if nbytes > worst_bytes:
        worst, worst_eqn, worst_bytes = aval, eqn, nbytes
    if worst_bytes > cap:
      raise _StageFailure(
          f"an intermediate {worst_eqn.primitive.name} result is {worst.dtype} "
          f"{_shape_str(worst)} = {worst_bytes / 2**30:.1f} GiB at n={n}, batch {batch}"
          f"{_eqn_line(worst_eqn, prog.path)}, over the {cfg.max_array_mb} MiB cap; reduce "
          "its rank or width")


def _numpy_initial_value(init: Any, shape: Sequence[int], dtype: Any,
                         rng: Any) -> Any | None:
  """A numpy draw from Haiku's common initializers (None: not one of them).

  Same distribution as the initializer, drawn without compiling an XLA RNG program (the
  init's RNG is what makes compiling a jitted ``init`` take seconds on a CPU).
  """
  import haiku as hk
  import jax.numpy as jnp
  import numpy as np

  shape = tuple(shape)
  if not np.issubdtype(np.dtype(dtype), np.floating):
    return None
  try:
    if init is jnp.zeros:
      return np.zeros(shape, dtype)
    if init is jnp.ones:
      return np.ones(shape, dtype)
    if type(init) is hk.initializers.Constant:
      return np.broadcast_to(np.asarray(init.constant, dtype), shape).copy()
    if type(init) is hk.initializers.RandomNormal:
      draw = rng.standard_normal(shape)
      return (float(init.mean) + float(init.stddev) * draw).astype(dtype)
    if type(init) is hk.initializers.RandomUniform:
      return rng.uniform(float(init.minval), float(init.maxval), shape).astype(dtype)
    if type(init) is hk.initializers.TruncatedNormal:
      lower, upper = float(init.lower), float(init.upper)
      draw = rng.standard_normal(shape)
      bad = (draw < lower) | (draw > upper)
      while bad.any():
        draw[bad] = rng.standard_normal(int(bad.sum()))
        bad = (draw < lower) | (draw > upper)
      return (float(init.mean) + float(init.stddev) * draw).astype(dtype)
  except (TypeError, ValueError):  # e.g. a traced stddev: use the real initializer.
    return None
  return None


def _numpy_creator() -> Any:
  """A Haiku param creator drawing common initializers with numpy (see above)."""
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(0)

  def creator(next_creator, shape, dtype, init, context):
    del context
    value = _numpy_initial_value(init, shape, dtype, rng)
    return next_creator(shape, dtype, init) if value is None else jnp.asarray(value)

  return creator


def _numpy_params(prog: _Program) -> dict | None:
  """Parameters drawn with numpy from the initializers ``shape`` recorded (None: unknown ones)."""
  import numpy as np

  rng = np.random.default_rng(0)
  params: dict[str, dict[str, Any]] = {}
  for (module, name), (init, shape, dtype) in prog.initializers.items():
    value = _numpy_initial_value(init, shape, dtype, rng)
    if value is None:
      return None
    params.setdefault(module, {})[name] = value
  return params


_FAST_COMPILE = {"xla_backend_optimization_level": 0}  # About half the CPU compile time.


def _finite_inputs(b: int, n: int, h: int) -> tuple[Any, ...]:
  """Random processor inputs from numpy (no per-op XLA compilation)."""
  import numpy as np

  rng = np.random.default_rng(0)
  adj = np.maximum((rng.uniform(size=(b, n, n)) < 0.5), np.eye(n)).astype(np.float32)
  inputs = tuple(rng.standard_normal(s).astype(np.float32)
                 for s in ((b, n, h), (b, n, n, h), (b, h)))
  return inputs + (adj, rng.standard_normal((b, n, h)).astype(np.float32))


def _non_finite_reason(named: Sequence[tuple[str, Any]], where: str) -> str:
  import numpy as np

  for name, value in named:
    value = np.asarray(value)
    bad = ~np.isfinite(value)
    if bad.any():
      nans = int(np.isnan(value).sum())
      return (f"{name} has {int(bad.sum())} non-finite values of {value.size} (NaN {nans}, "
              f"Inf {int(bad.sum()) - nans}) after one forward pass ({where}); guard log, "
              "division and sqrt against 0 (e.g. jnp.log(x + 1e-6))")
  return f"a non-finite value after one forward pass ({where})"


def _stage_finite(prog: _Program) -> None:
  """A real init+forward on a small random batch at each size: everything finite.

  The sizes are ``CheckConfig.finite_node_sizes()`` (the training size and the OOD size
  by default: a NaN that appears only on larger graphs is caught). The parameters come
  from the candidate's own initializers, once (their shapes do not depend on N, which
  ``shape`` checked): drawn with numpy for Haiku's common ones (no XLA RNG program to
  compile), else by a jitted ``init``. They are kept for the ``budget`` export.
  """
  import chex
  import jax
  import numpy as np

  cfg = prog.config
  b, h = cfg.finite_batch, prog.hidden
  key = np.zeros((2,), np.uint32)  # jax.random.PRNGKey(0), without a device op.
  sizes = cfg.finite_node_sizes()

  def failure(n: int, e: BaseException) -> _StageFailure:
    where = f"n={n}, batch {b}"
    if isinstance(e, _CallFailure):
      return _StageFailure(f"forward pass ({where}) failed: {e}")
    return _StageFailure(f"forward pass ({where}) failed: {_describe(e, prog.path)}")

  inputs = {n: _finite_inputs(b, n, h) for n in sizes}
  lowered = {}
  params = _numpy_params(prog)
  for n in sizes:
    try:
      if params is None:
        init = prog.transformed(batch=b, nodes=n, creator=_numpy_creator()).init
        params = jax.device_get(
            jax.jit(init).lower(key, *inputs[n]).compile(_FAST_COMPILE)(key, *inputs[n]))
      lowered[n] = jax.jit(prog.transformed(batch=b, nodes=n).apply).lower(
          params, key, *inputs[n])
    except Exception as e:
      raise failure(n, e) from e
  # The XLA compiles (most of this stage's time) run side by side: they release the GIL.
  with concurrent.futures.ThreadPoolExecutor(max_workers=len(sizes)) as pool:
    compiling = {n: pool.submit(lowered[n].compile, _FAST_COMPILE) for n in sizes}
    for n in sizes:
      try:
        nxt_hidden, tri_msgs = jax.device_get(compiling[n].result()(params, key, *inputs[n]))
      except Exception as e:
        raise failure(n, e) from e
      named = [("nxt_hidden", nxt_hidden), ("tri_msgs", tri_msgs)]
      named += [(f"parameter {_path_str(p)}", leaf)
                for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]
      named = [(k, v) for k, v in named if v is not None]
      try:
        chex.assert_tree_all_finite([v for _, v in named])
      except AssertionError:
        raise _StageFailure(_non_finite_reason(named, f"n={n}, batch {b}")) from None
  prog.params = params


def _stage_budget(prog: _Program) -> None:
  """Writes the processor's parameters and the export of one step for the parent.

  The numbers are NOT computed here (this process runs candidate code): the parent
  derives them from these files (:func:`trusted_cost`) and applies the caps.
  """
  import numpy as np

  from spark_clrs.evaluation import macs

  try:
    flat, serialized = macs.export_processor(prog.factory, hidden=prog.hidden,
                                             nb_nodes=prog.config.macs_nb_nodes,
                                             params=prog.params)
  except Exception as e:
    raise _StageFailure(f"exporting one processor step failed: {_describe(e, prog.path)}"
                        ) from e
  out = pathlib.Path(prog.path).parent
  with open(out / PARAMS_FILE, "wb") as f:
    np.savez(f, **flat)
  (out / EXPORT_FILE).write_bytes(serialized)


def child_checks(payload: dict) -> dict:
  """Sandbox target: the executing stages for one program (runs in the jailed child).

  Args:
    payload: ``{"program_path": str, "hidden": int, "config": CheckConfig fields}``
      (other keys are ignored).

  Returns:
    ``{"feasible", "stage", "reason", "seconds": {stage: s}, "cpu_seconds": {stage: s}}``;
    when feasible, the
    program's directory holds :data:`PARAMS_FILE` and :data:`EXPORT_FILE` for the
    parent's budget decision.
  """
  config = CheckConfig(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in payload["config"].items()})
  hidden = int(payload["hidden"])
  prog = _Program(payload["program_path"], hidden, config)
  seconds: dict[str, float] = {}
  cpu_seconds: dict[str, float] = {}  # This process's CPU time (all threads) per stage.
  stage = "interface"

  def result(feasible: bool, stage: str, reason: str) -> dict:
    return {"feasible": feasible, "stage": stage, "reason": one_line(reason),
            "seconds": seconds, "cpu_seconds": cpu_seconds}

  try:
    for stage in ("interface", "shape", "finite", "budget"):
      sandbox.report_progress(stage=stage)
      start, cpu_start = time.perf_counter(), time.process_time()
      if stage == "interface":
        _stage_interface(prog)
      elif stage == "shape":
        _stage_shape(prog)
      elif stage == "finite":
        _stage_finite(prog)
      else:
        _stage_budget(prog)
      seconds[stage] = time.perf_counter() - start
      cpu_seconds[stage] = time.process_time() - cpu_start
  except _StageFailure as e:
    return result(False, stage, f"{stage}: {e.args[0]}")
  except Exception as e:  # Anything a stage did not anticipate still names the stage.
    return result(False, stage, f"{stage}: {_describe(e, prog.path)}")
  return result(True, "ok", "")


__all__ = ["Budget", "CHILD_TARGET", "CheckConfig", "DEFAULT_LIMITS", "EXPORT_FILE",
           "PARAMS_FILE", "STAGES", "Verdict", "child_checks", "default_budget",
           "make_worker", "resolve_budget", "run_checks", "static_checks",
           "trusted_cost", "verdict_from_child"]
