"""The stages that execute candidate code: ``interface``, ``shape``, ``finite``, ``budget``.

Run in order by :func:`spark_clrs.checks.jailed.child_checks` inside the jail. Each raises
:class:`~spark_clrs.checks.program.StageFailure` with a one-line reason to reject.

* ``interface``: the program imports, has ``get_processor_factory(use_ln, nb_triplet_fts,
  ...)``, the factory builds a Haiku module named ``*clrs_processor*`` with CLRS's
  ``inf_bias``/``inf_bias_edge`` and a ``__call__(node_fts, edge_fts, graph_fts, adj_mat,
  hidden, **kwargs)`` (constructed, never called).
* ``shape``: ``jax.make_jaxpr`` of the Haiku ``init`` (abstract tracing, no compute; init
  runs the forward pass) at each traced graph size (default n=64 then n=11, batch 32):
  ``__call__`` must return ``nxt_hidden`` ``[B, N, H]`` float32 and ``tri_msgs`` ``None``
  or ``[B, N, N, H]`` float32, parameter shapes must not depend on N, and no intermediate
  may exceed ``max_array_mb`` (catches ``[B, N, N, N, H]`` blow-ups before allocating).
* ``finite``: one real forward pass (jitted, small batch) at each of ``finite_sizes``
  (default: n=8 and the OOD size) with parameters from the candidate's own initializers
  has no NaN/Inf in its outputs or parameters.
* ``budget``: exports one processor step at every shape of ``CheckConfig.cost_shapes``
  (the parameters once, as an ``.npz``) next to the program. The numbers are NOT computed
  here: this process runs candidate code, so the parent derives them from the files
  (``checks.budget``) and applies the caps.

The contracts of ``shape`` and ``finite`` are stated as chex assertions (``assert_shape``,
``assert_type``, ``assert_tree_all_finite``) with a one-line reason on top.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from spark_clrs.checks import fast_init
from spark_clrs.checks.program import (
  CallFailure,
  LoadedProgram,
  StageFailure,
  abstract_key,
  describe,
  path_str,
  shape_str,
)
from spark_clrs.checks.protocol import PARAMS_FILE, export_file
from spark_clrs.evaluation import macs

_FAST_COMPILE = {"xla_backend_optimization_level": 0}  # About half the CPU compile time.


def interface(prog: LoadedProgram) -> None:
  """Import, factory, module type and name, ``inf_bias*`` and the ``__call__`` signature.

  The processor is only constructed (inside a Haiku transform), never called: what its
  ``__call__`` returns is the ``shape`` stage's business.
  """
  prog.load()
  try:
    jax.eval_shape(hk.transform(prog.processor).init, abstract_key())
  except StageFailure:
    raise
  except Exception as e:
    raise StageFailure(f"building the processor failed: {describe(e, prog.path)}") from e


def _iter_avals(jaxpr: Any) -> Iterator[tuple[Any, Any]]:
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
  want = f"[{', '.join(map(str, expected))}]"
  want = f"None or {want}" if optional else want
  if value is None and optional:
    return
  if getattr(value, "shape", None) is None or getattr(value, "dtype", None) is None:
    raise StageFailure(f"{name} is {shape_str(value)}, expected {want}")
  try:
    chex.assert_shape(value, expected)
  except AssertionError:
    raise StageFailure(f"{name} is {shape_str(value)}, expected {want}") from None
  try:
    chex.assert_type(value, jnp.float32)
  except AssertionError:
    raise StageFailure(f"{name} is {value.dtype} {shape_str(value)}, expected float32 "
                       f"{want}") from None


def _largest_intermediate(closed: Any, prog: LoadedProgram, n: int, batch: int) -> None:
  """Rejects an intermediate over ``max_array_mb`` (naming the op and the candidate line)."""
  cap = prog.config.max_array_mb * 2**20
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
    raise StageFailure(
        f"an intermediate {worst_eqn.primitive.name} result is {worst.dtype} "
        f"{shape_str(worst)} = {worst_bytes / 2**30:.1f} GiB at n={n}, batch {batch}"
        f"{_eqn_line(worst_eqn, prog.path)}, over the {prog.config.max_array_mb} MiB cap; "
        "reduce its rank or width")


def shape(prog: LoadedProgram) -> None:
  """Abstract init (which runs the forward pass) at each configured size (no compute).

  One ``jax.make_jaxpr`` of ``init`` per size gives the parameter shapes, every
  intermediate of the forward pass, and (through the probe) the returned shapes.
  """
  batch = prog.config.shape_batch
  param_shapes: dict[str, tuple[int, ...]] | None = None
  first_n = None
  for n in sorted(prog.config.shape_sizes, reverse=True):  # The largest (OOD) size first.
    probe: list = []
    model = prog.transformed(batch=batch, nodes=n, creator=prog.recording_creator(),
                             probe=probe)
    try:
      closed, params = jax.make_jaxpr(model.init, return_shape=True)(
          abstract_key(), *prog.abstract_inputs(batch, n))
    except StageFailure:
      raise
    except CallFailure as e:
      raise StageFailure(f"tracing at n={n}, batch {batch} failed: {e}") from e
    except Exception as e:
      raise StageFailure(f"tracing at n={n}, batch {batch} failed: "
                         f"{describe(e, prog.path)}") from e
    out = probe[-1]
    if not isinstance(out, (tuple, list)) or len(out) != 2:
      got = f"{len(out)} values" if isinstance(out, (tuple, list)) else f"a {shape_str(out)}"
      raise StageFailure(f"__call__ returned {got}; it must return the pair (nxt_hidden "
                         f"[{batch}, {n}, {prog.hidden}], tri_msgs None or "
                         f"[{batch}, {n}, {n}, {prog.hidden}])")
    nxt_hidden, tri_msgs = out
    _check_output("nxt_hidden", nxt_hidden, (batch, n, prog.hidden), optional=False)
    _check_output("tri_msgs", tri_msgs, (batch, n, n, prog.hidden), optional=True)
    shapes = {path_str(path): tuple(leaf.shape) for path, leaf
              in jax.tree_util.tree_flatten_with_path(params)[0]}
    if param_shapes is None:
      param_shapes, first_n = shapes, n
    elif shapes != param_shapes:
      for key in sorted(set(shapes) | set(param_shapes)):
        a, b = param_shapes.get(key), shapes.get(key)
        if a != b:
          raise StageFailure(f"parameter {key} is {list(a) if a else 'absent'} at n={first_n} "
                             f"but {list(b) if b else 'absent'} at n={n}; parameter shapes "
                             "must not depend on the number of nodes")
    _largest_intermediate(closed, prog, n, batch)


def _finite_inputs(b: int, n: int, h: int) -> tuple[np.ndarray, ...]:
  """Random processor inputs from numpy (no per-op XLA compilation)."""
  rng = np.random.default_rng(0)
  adj = np.maximum((rng.uniform(size=(b, n, n)) < 0.5), np.eye(n)).astype(np.float32)
  inputs = tuple(rng.standard_normal(s).astype(np.float32)
                 for s in ((b, n, h), (b, n, n, h), (b, h)))
  return inputs + (adj, rng.standard_normal((b, n, h)).astype(np.float32))


def _non_finite_reason(named: Sequence[tuple[str, Any]], where: str) -> str:
  for name, value in named:
    value = np.asarray(value)
    bad = ~np.isfinite(value)
    if bad.any():
      nans = int(np.isnan(value).sum())
      return (f"{name} has {int(bad.sum())} non-finite values of {value.size} (NaN {nans}, "
              f"Inf {int(bad.sum()) - nans}) after one forward pass ({where}); guard log, "
              "division and sqrt against 0 (e.g. jnp.log(x + 1e-6))")
  return f"a non-finite value after one forward pass ({where})"


def finite(prog: LoadedProgram) -> None:
  """A real init+forward on a small random batch at each size: everything finite.

  The sizes are ``CheckConfig.finite_node_sizes()`` (the training size and the OOD size
  by default: a NaN that appears only on larger graphs is caught). The parameters come
  from the candidate's own initializers, once (their shapes do not depend on N, which
  ``shape`` checked): drawn with numpy for Haiku's common ones (``fast_init``), else by a
  jitted ``init``. They are kept for the ``budget`` export.
  """
  b, h = prog.config.finite_batch, prog.hidden
  key = np.zeros((2,), np.uint32)  # jax.random.PRNGKey(0), without a device op.
  sizes = prog.config.finite_node_sizes()

  def failure(n: int, e: BaseException) -> StageFailure:
    where = f"n={n}, batch {b}"
    if isinstance(e, CallFailure):
      return StageFailure(f"forward pass ({where}) failed: {e}")
    return StageFailure(f"forward pass ({where}) failed: {describe(e, prog.path)}")

  inputs = {n: _finite_inputs(b, n, h) for n in sizes}
  lowered = {}
  params = fast_init.draw_params(prog.initializers)
  for n in sizes:
    try:
      if params is None:
        init = prog.transformed(batch=b, nodes=n, creator=fast_init.creator()).init
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
      named += [(f"parameter {path_str(p)}", leaf)
                for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]
      named = [(k, v) for k, v in named if v is not None]
      try:
        chex.assert_tree_all_finite([v for _, v in named])
      except AssertionError:
        raise StageFailure(_non_finite_reason(named, f"n={n}, batch {b}")) from None
  prog.params = params


def budget(prog: LoadedProgram) -> None:
  """Writes the parameters and one export per cost shape next to the program, for the parent."""
  out = pathlib.Path(prog.path).parent
  flat = macs.flat_params(prog.params)
  for at in prog.config.cost_shapes():
    try:
      _, serialized = macs.export_processor(prog.factory, hidden=prog.hidden,
                                            nb_nodes=at.nb_nodes, batch_size=at.batch_size,
                                            params=flat)
    except Exception as e:
      raise StageFailure(f"exporting one processor step at {at} failed: "
                         f"{describe(e, prog.path)}") from e
    (out / export_file(at)).write_bytes(serialized)
  with open(out / PARAMS_FILE, "wb") as f:
    np.savez(f, **flat)


__all__ = ["budget", "finite", "interface", "shape"]
