"""Cheap feasibility checks of a candidate program before any training (SPEC §3).

Stages, in order: ``parse -> scope -> policy -> interface -> shape -> finite -> budget``.
The first three read text and syntax trees in this process and never execute candidate
code. The last four execute it, so they run together in ONE sandboxed child
(:func:`child_checks`, via :func:`spark_clrs.sandbox.run_in_child` or a warm
:class:`spark_clrs.sandbox.Worker`):

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
* ``finite``: one real forward pass (jitted, n=8, batch 2) with parameters from the
  candidate's own initializers has no NaN/Inf in its outputs or parameters.
* ``budget``: processor parameters and MACs (``spark_clrs.macs``) under the caps
  (default: 4x the seed's).

Every rejection is a :class:`Verdict` with its stage and a one-line reason. A child that
hangs, crashes or blows up is attributed to the stage it was in.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import math
import pathlib
import time
import traceback
from collections.abc import Sequence
from typing import Any

from spark_clrs import policy, regions, sandbox

STAGES = ("parse", "scope", "policy", "interface", "shape", "finite", "budget")
CHILD_TARGET = "spark_clrs.checks:child_checks"
PROCESSOR_TAG = "clrs_processor"
PROGRAM_FILE = "candidate.py"

# Modules a warm check worker imports once before forking (see make_worker).
WORKER_PRELOAD = ("jax", "jax.numpy", "haiku", "numpy", "chex", "spark_clrs.checks",
                  "spark_clrs.macs", "processors")
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

  A ``None`` cap is filled with the default (:func:`default_budget`) in the check child.
  """

  max_param_count: int | None
  max_macs: int | None


@dataclasses.dataclass(frozen=True)
class CheckConfig:
  """Sizes used by the executing stages.

  Attributes:
    shape_sizes: graph sizes N traced by ``shape`` (the largest should be the OOD size).
    shape_batch: batch size B traced by ``shape``.
    finite_nodes: N of the real forward pass of ``finite``.
    finite_batch: B of the real forward pass of ``finite``.
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


def _reject(stage: str, reason: str) -> Verdict:
  return Verdict(feasible=False, stage=stage, reason=f"{stage}: {reason}")


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
      processor's (:func:`default_budget`, computed in the child).
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
  payload = {
      "program_path": str(program),
      "hidden": hidden,
      "config": dataclasses.asdict(config or CheckConfig()),
      "budget": dataclasses.asdict(budget) if budget else None,
      "budget_seed": budget_seed,
      "budget_factor": budget_factor,
  }
  limits = limits or DEFAULT_LIMITS
  if worker is not None:
    result = worker.run(CHILD_TARGET, payload, workdir=workdir, limits=limits)
  else:
    result = sandbox.run_in_child(CHILD_TARGET, payload, workdir=workdir, limits=limits,
                                  extra_env=CHILD_ENV)
  return verdict_from_child(result)


def verdict_from_child(result: sandbox.ChildResult) -> Verdict:
  """Turns the sandbox outcome of :func:`child_checks` into a verdict."""
  if result.ok and result.value is not None:
    v = result.value
    return Verdict(feasible=bool(v["feasible"]), stage=v["stage"], reason=v["reason"],
                   param_count=int(v.get("param_count", 0)), macs=int(v.get("macs", 0)))
  stage = result.progress.get("stage", "interface")
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
  from spark_clrs import macs

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
  text = " ".join(str(e).split())
  if len(text) > 300:
    text = text[:300] + "..."
  name = type(e).__name__
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
  import jax.numpy as jnp

  want = f"[{', '.join(map(str, expected))}]"
  want = f"None or {want}" if optional else want
  if value is None and optional:
    return
  shape = getattr(value, "shape", None)
  if shape is None or tuple(shape) != expected:
    raise _StageFailure(f"{name} is {_shape_str(value)}, expected {want}")
  if value.dtype != jnp.float32:
    raise _StageFailure(f"{name} is {value.dtype} {_shape_str(value)}, expected float32 "
                        f"{want}")


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


def _stage_finite(prog: _Program) -> None:
  """One real init+forward on a small random batch: everything finite.

  The parameters come from the candidate's own initializers: drawn with numpy for
  Haiku's common ones (no XLA RNG program to compile), else by a jitted ``init``.
  """
  import jax
  import numpy as np

  cfg = prog.config
  b, n, h = cfg.finite_batch, cfg.finite_nodes, prog.hidden
  model = prog.transformed(batch=b, nodes=n)
  # Inputs from numpy: no per-op XLA compilation, only the jit of the forward pass.
  rng = np.random.default_rng(0)
  adj = np.maximum((rng.uniform(size=(b, n, n)) < 0.5), np.eye(n)).astype(np.float32)
  inputs = tuple(rng.standard_normal(s).astype(np.float32)
                 for s in ((b, n, h), (b, n, n, h), (b, h)))
  inputs += (adj, rng.standard_normal((b, n, h)).astype(np.float32))
  key = np.zeros((2,), np.uint32)  # jax.random.PRNGKey(0), without a device op.
  try:
    params = _numpy_params(prog)
    if params is None:
      init = prog.transformed(batch=b, nodes=n, creator=_numpy_creator()).init
      params = jax.device_get(
          jax.jit(init).lower(key, *inputs).compile(_FAST_COMPILE)(key, *inputs))
    forward = jax.jit(model.apply).lower(params, key, *inputs).compile(_FAST_COMPILE)
    nxt_hidden, tri_msgs = jax.device_get(forward(params, key, *inputs))
  except _CallFailure as e:
    raise _StageFailure(f"forward pass (n={n}, batch {b}) failed: {e}") from e
  except Exception as e:
    raise _StageFailure(f"forward pass (n={n}, batch {b}) failed: "
                        f"{_describe(e, prog.path)}") from e
  named = [("nxt_hidden", nxt_hidden), ("tri_msgs", tri_msgs)]
  named += [(f"parameter {_path_str(p)}", leaf)
            for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]
  for name, value in named:
    if value is None:
      continue
    value = np.asarray(value)
    bad = ~np.isfinite(value)
    if bad.any():
      nans = int(np.isnan(value).sum())
      raise _StageFailure(
          f"{name} has {int(bad.sum())} non-finite values of {value.size} (NaN {nans}, Inf "
          f"{int(bad.sum()) - nans}) after one forward pass (n={n}, batch {b}); guard log, "
          "division and sqrt against 0 (e.g. jnp.log(x + 1e-6))")


def _stage_budget(prog: _Program, budget: Budget) -> tuple[int, int]:
  """Processor parameters and MACs (one step, one graph) against the caps."""
  from spark_clrs import macs

  try:
    cost = macs.processor_cost(prog.factory, hidden=prog.hidden,
                               nb_nodes=prog.config.macs_nb_nodes)
  except Exception as e:
    raise _StageFailure(f"counting parameters/MACs failed: {_describe(e, prog.path)}") from e
  assert budget.max_param_count is not None and budget.max_macs is not None
  if cost.param_count > budget.max_param_count:
    raise _StageFailure(f"{cost.param_count:,} processor parameters exceed the cap of "
                        f"{budget.max_param_count:,}; use fewer or narrower layers",
                        cost.param_count, cost.macs)
  if cost.macs > budget.max_macs:
    raise _StageFailure(f"{cost.macs:,} MACs per step (n={prog.config.macs_nb_nodes}) exceed "
                        f"the cap of {budget.max_macs:,}; use cheaper operators",
                        cost.param_count, cost.macs)
  return cost.param_count, cost.macs


def _child_budget(payload: dict, config: CheckConfig, hidden: int) -> Budget:
  """The payload's caps; missing ones (None) default to ``factor`` x the seed's."""
  caps = dict(payload.get("budget") or {})
  if caps.get("max_param_count") is None or caps.get("max_macs") is None:
    seed = payload.get("budget_seed", "triplet_gmpnn")
    factor = float(payload.get("budget_factor", 4.0))
    default = default_budget(seed, hidden, factor, config.nb_triplet_fts, config.macs_nb_nodes)
    caps = {k: caps[k] if caps.get(k) is not None else v
            for k, v in dataclasses.asdict(default).items()}
  return Budget(**caps)


def child_checks(payload: dict) -> dict:
  """Sandbox target: the executing stages for one program (runs in the jailed child).

  Args:
    payload: ``{"program_path": str, "hidden": int, "config": CheckConfig fields,
      "budget": Budget fields (a None field or no budget: the default caps),
      "budget_seed": str, "budget_factor": float}``.

  Returns:
    ``{"feasible", "stage", "reason", "param_count", "macs", "seconds": {stage: s}}``.
  """
  config = CheckConfig(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in payload["config"].items()})
  hidden = int(payload["hidden"])
  prog = _Program(payload["program_path"], hidden, config)
  seconds: dict[str, float] = {}
  param_count = macs_count = 0
  stage = "interface"

  def result(feasible: bool, stage: str, reason: str) -> dict:
    return {"feasible": feasible, "stage": stage, "reason": reason,
            "param_count": param_count, "macs": macs_count, "seconds": seconds}

  try:
    for stage in ("interface", "shape", "finite", "budget"):
      sandbox.report_progress(stage=stage)
      start = time.perf_counter()
      if stage == "interface":
        _stage_interface(prog)
      elif stage == "shape":
        _stage_shape(prog)
      elif stage == "finite":
        _stage_finite(prog)
      else:
        param_count, macs_count = _stage_budget(prog, _child_budget(payload, config, hidden))
      seconds[stage] = time.perf_counter() - start
  except _StageFailure as e:
    if len(e.args) == 3:
      param_count, macs_count = e.args[1], e.args[2]
    return result(False, stage, f"{stage}: {e.args[0]}")
  except Exception as e:  # Anything a stage did not anticipate still names the stage.
    return result(False, stage, f"{stage}: {_describe(e, prog.path)}")
  return result(True, "ok", "")


__all__ = ["Budget", "CHILD_TARGET", "CheckConfig", "DEFAULT_LIMITS", "STAGES", "Verdict",
           "child_checks", "default_budget", "make_worker", "run_checks", "static_checks",
           "verdict_from_child"]
