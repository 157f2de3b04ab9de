"""What one exported processor step costs, read from its StableHLO (the TRUSTED side).

The process that runs candidate code exports processor steps (``macs.export_processor``);
this module reads such an export as data: it never imports or runs the candidate and never
runs the computation. :func:`read_export` checks that the export is one processor step that
consumes exactly the claimed parameters at the claimed shapes, then walks its StableHLO once
and summarises it (:class:`ExportSummary`):

* ``macs``: the sum over every ``dot_general``/``dot``/``convolution`` of its
  multiply-accumulates (calls followed, the dearest ``if``/``case`` branch counted);
* ``signature``: a digest of the op sequence (nesting kept, calls folded in by their own
  digest, constants left out because their values and shapes vary with the sizes while
  computing nothing), so two exports of one program at two shapes have the same digest and
  a program that branches on a shape in Python does not;
* ``products``: each matrix product once, with its operand and result dimensions, so that
  :mod:`spark_clrs.evaluation.cost_grid` can check how each dimension moves with the sizes.

Refused (:class:`ExportError`, one line, never the module's text): effects, disabled safety
checks, several devices, custom calls (host callbacks, LAPACK), infeed/outfeed/send/recv,
``while`` loops (no static trip count) and matrix products inside reduce/sort/scatter bodies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_EXPORT_BYTES = 32 << 20  # A seed's export is ~20 KiB; refuse anything absurd.
INPUT_NAMES = ("node_fts", "edge_fts", "graph_fts", "adj_mat", "hidden")
_COUNTED = ("stablehlo.dot_general", "stablehlo.dot", "stablehlo.convolution")
_REFUSED_OPS = {
    "stablehlo.custom_call": "a custom call (host callback or foreign kernel)",
    "stablehlo.infeed": "host infeed", "stablehlo.outfeed": "host outfeed",
    "stablehlo.send": "a host send", "stablehlo.recv": "a host receive",
    "stablehlo.while": "a while loop, whose trip count is not static (its MACs cannot be "
                       "counted exactly; use a Python loop)",
}
_LOCATION_NAME = re.compile(r'loc\("(?:jit\([^)]*\)/)?([^"]{1,200})"')


class ExportError(ValueError):
  """An export does not describe one processor step with the claimed parameters."""


@dataclasses.dataclass(frozen=True)
class Product:
  """One matrix product or convolution of an export.

  Attributes:
    where: the name JAX recorded for the op (the Haiku module path, e.g.
      ``mpnn_aggr_clrs_processor/linear/dot_general``); candidate-controlled text.
    dims: every operand dimension, then every result dimension.
    macs: its multiply-accumulates (one run).
  """

  where: str
  dims: tuple[int, ...]
  macs: int


@dataclasses.dataclass(frozen=True)
class ExportSummary:
  """One exported processor step, as :func:`read_export` found it.

  Attributes:
    batch_size: B of the inputs.
    nb_nodes: N of the inputs.
    hidden: H of ``hidden`` and ``nxt_hidden``.
    param_count: scalars in the parameters the export consumes.
    macs: multiply-accumulates of the whole call (all B graphs).
    signature: digest of the op sequence (see the module docstring).
    op_count: operations, constants left out (a called function's once per call, every
      branch of a conditional).
    products: each matrix product once, in program order (a called function's once).
  """

  batch_size: int
  nb_nodes: int
  hidden: int
  param_count: int
  macs: int
  signature: str
  op_count: int
  products: tuple[Product, ...]


def param_shapes(params: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
  """``{"module/name": (shape, dtype name)}`` from arrays, (shape, dtype) or shape tuples."""
  out = {}
  for key, value in params.items():
    if hasattr(value, "shape") and hasattr(value, "dtype"):
      out[key] = (tuple(int(d) for d in value.shape), np.dtype(value.dtype).name)
    elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], tuple):
      out[key] = (tuple(int(d) for d in value[0]), np.dtype(value[1]).name)
    elif isinstance(value, tuple) and all(isinstance(d, int) for d in value):
      out[key] = (tuple(value), "float32")
    else:
      raise ExportError(f"parameter {key!r} is a {type(value).__name__}, not an array or a "
                        "shape tuple")
  return out


def _tensor_shape(value: Any, what: str) -> tuple[int, ...]:
  from jaxlib.mlir import ir

  ty = ir.RankedTensorType(value.type)
  if not ty.has_static_shape:
    raise ExportError(f"{what} has a dynamic shape; export with static shapes")
  return tuple(ty.shape)


def _op_macs(op: Any) -> int:
  """MACs of one ``stablehlo.dot_general``, ``stablehlo.dot`` or ``stablehlo.convolution``."""
  from jaxlib.mlir.dialects import stablehlo

  name = op.operation.name
  if name == "stablehlo.dot_general":
    lhs = _tensor_shape(op.operands[0], "a dot_general operand")
    rhs = _tensor_shape(op.operands[1], "a dot_general operand")
    dims = stablehlo.DotDimensionNumbers(op.attributes["dot_dimension_numbers"])
    lb, lc = set(dims.lhs_batching_dimensions), set(dims.lhs_contracting_dimensions)
    rb, rc = set(dims.rhs_batching_dimensions), set(dims.rhs_contracting_dimensions)
    return (math.prod(lhs[d] for d in lb) * math.prod(lhs[d] for d in lc)
            * math.prod(s for d, s in enumerate(lhs) if d not in lb | lc)
            * math.prod(s for d, s in enumerate(rhs) if d not in rb | rc))
  if name == "stablehlo.dot":
    lhs = _tensor_shape(op.operands[0], "a dot operand")
    rhs = _tensor_shape(op.operands[1], "a dot operand")
    return math.prod(lhs) * math.prod(rhs[1:])
  # convolution: output size x kernel size / output features (as macs' jaxpr count).
  rhs = _tensor_shape(op.operands[1], "a convolution kernel")
  out = _tensor_shape(op.results[0], "a convolution result")
  dims = stablehlo.ConvDimensionNumbers(op.attributes["dimension_numbers"])
  return math.prod(out) * math.prod(rhs) // rhs[dims.kernel_output_feature_dimension]


def _product(op: Any) -> Product:
  dims = [d for v in (*op.operands, *op.results) for d in _tensor_shape(v, "a product")]
  match = _LOCATION_NAME.search(str(op.location))
  return Product(where=match.group(1) if match else op.operation.name, dims=tuple(dims),
                 macs=_op_macs(op))


@dataclasses.dataclass
class _Walked:
  """What a function or region costs and looks like (memoised per function)."""

  macs: int = 0
  ops: int = 0
  text: list[str] = dataclasses.field(default_factory=list)


class _Module:
  """Walks the ``main`` function of a StableHLO module (calls followed, each function once)."""

  def __init__(self, module: Any):
    self.module = module  # Its functions live only as long as the module object.
    self.functions = {}
    for op in module.body.operations:
      if op.operation.name == "func.func":
        self.functions[str(op.attributes["sym_name"]).strip('"')] = op
    self.memo: dict[str, tuple[_Walked, str]] = {}
    self.active: set[str] = set()
    self.products: list[Product] = []  # In order of first appearance.

  def function(self, name: str) -> tuple[_Walked, str]:
    """(walked body, digest) of a function."""
    if name not in self.functions:
      raise ExportError(f"the export calls an undefined function {name!r}")
    if name in self.active:
      raise ExportError(f"the export's function {name!r} is recursive")
    if name not in self.memo:
      self.active.add(name)
      walked = _Walked()
      self.regions(self.functions[name].operation.regions, walked)
      self.active.discard(name)
      self.memo[name] = (walked, hashlib.sha256("\n".join(walked.text).encode()).hexdigest())
    return self.memo[name]

  def regions(self, regions: Any, into: _Walked) -> None:
    for region in regions:
      into.text.append("{")
      for block in region:
        for op in block:
          self.op(op, into)
      into.text.append("}")

  def op(self, op: Any, into: _Walked) -> None:
    name = op.operation.name
    if name in _REFUSED_OPS:
      raise ExportError(f"the export contains {_REFUSED_OPS[name]} ({name})")
    if name == "stablehlo.constant":
      return
    if name in ("func.call", "stablehlo.composite"):
      attr = "callee" if name == "func.call" else "decomposition"
      walked, digest = self.function(str(op.attributes[attr]).lstrip("@").strip('"'))
      into.macs += walked.macs
      into.ops += walked.ops + 1
      into.text.append(f"{name} {digest}")
      return
    into.ops += 1
    into.text.append(name)
    if name in _COUNTED:
      product = _product(op)
      self.products.append(product)
      into.macs += product.macs
      return
    regions = op.operation.regions
    if not len(regions):
      return
    if name in ("stablehlo.if", "stablehlo.case"):  # Only one branch runs: the dearest.
      branches = []
      for region in regions:
        branch = _Walked()
        self.regions([region], branch)
        branches.append(branch)
        into.ops += branch.ops
        into.text.extend(branch.text)
      into.macs += max(b.macs for b in branches)
      return
    inner = _Walked()
    self.regions(regions, inner)
    if inner.macs:  # reduce/sort/scatter/map bodies run a per-element number of times.
      raise ExportError(f"the export has a matrix product inside a {name} body, whose "
                        "trip count is not static; its MACs cannot be counted exactly")
    into.ops += inner.ops
    into.text.extend(inner.text)


def _deserialize(serialized: bytes) -> Any:
  import jax

  if not isinstance(serialized, (bytes, bytearray)):
    raise ExportError(f"the export is a {type(serialized).__name__}, not bytes")
  if len(serialized) > MAX_EXPORT_BYTES:
    raise ExportError(f"the export is {len(serialized):,} bytes, over the "
                      f"{MAX_EXPORT_BYTES:,}-byte cap")
  try:
    return jax.export.deserialize(bytearray(serialized))
  except Exception as e:  # Malformed data: one line, no echo of its content.
    raise ExportError(f"the export does not deserialize ({type(e).__name__})") from None


def _check_signature(exported: Any, shapes: Mapping[str, tuple[tuple[int, ...], str]],
                     hidden: int | None, nb_nodes: int | None, batch_size: int | None
                     ) -> tuple[int, int, int]:
  """(B, N, H) of an export that takes (params, five inputs) and returns the step's pair."""
  import jax

  if exported.ordered_effects or exported.unordered_effects:
    raise ExportError("the export has side effects (host callbacks); a processor has none")
  if exported.disabled_safety_checks:
    raise ExportError("the export disables jax.export safety checks")
  if exported.nr_devices != 1 or exported.uses_global_constants:
    raise ExportError("the export is not a single-device computation with static shapes")
  names = sorted(shapes)
  leaf = object()
  want_tree = jax.tree_util.tree_structure(
      ((dict.fromkeys(names, leaf), *(leaf,) * len(INPUT_NAMES)), {}))
  if exported.in_tree != want_tree:
    raise ExportError(f"the export's arguments are not (params with the {len(names)} "
                      "returned parameters, node_fts, edge_fts, graph_fts, adj_mat, hidden)")
  avals = exported.in_avals
  for name, aval in zip(names, avals[:len(names)], strict=True):
    got = (tuple(aval.shape), np.dtype(aval.dtype).name)
    if got != shapes[name]:
      raise ExportError(f"the export's parameter {name} is {got[1]}{list(got[0])} but the "
                        f"returned one is {shapes[name][1]}{list(shapes[name][0])}")
  node, edge, graph, adj, hid = (tuple(a.shape) for a in avals[len(names):])
  if len(hid) != 3:
    raise ExportError(f"the export's hidden input is {list(hid)}, not [B, N, H]")
  b, n, h = hid
  for want, got, what in ((batch_size, b, "B"), (nb_nodes, n, "N"), (hidden, h, "H")):
    if want is not None and got != want:
      raise ExportError(f"the export is for B={b}, N={n}, H={h}, not {what}={want}")
  if (len(node) != 3 or node[:2] != (b, n) or len(edge) != 4 or edge[:3] != (b, n, n)
      or len(graph) != 2 or graph[0] != b or adj != (b, n, n)):
    raise ExportError("the export's inputs are not node [B, N, F], edge [B, N, N, F], "
                      "graph [B, F], adj [B, N, N]")
  outs = [tuple(a.shape) for a in exported.out_avals]
  if outs not in ([(b, n, h)], [(b, n, h), (b, n, n, h)]) or any(
      np.dtype(a.dtype) != np.float32 for a in exported.out_avals):
    raise ExportError(f"the export returns {outs}, not float32 nxt_hidden [{b}, {n}, {h}] "
                      f"and tri_msgs None or [{b}, {n}, {n}, {h}]")
  return b, n, h


def ir_context() -> Any:
  """A fresh MLIR context for :func:`read_export` (one per thread: contexts are not shared
  between threads; reading several exports in one saves creating it each time)."""
  from jax.interpreters import mlir as jax_mlir

  return jax_mlir.make_ir_context()


def read_export(serialized: bytes, params: Mapping[str, Any], *, hidden: int | None = None,
                nb_nodes: int | None = None, batch_size: int | None = 1,
                context: Any = None) -> ExportSummary:
  """Checks one exported processor step against its parameters and summarises its cost.

  Args:
    serialized: ``jax.export`` bytes of ``f(params, node_fts, edge_fts, graph_fts,
      adj_mat, hidden)`` (``macs.export_processor``).
    params: ``{"module/name": array | (shape, dtype) | shape}``: the export must consume
      exactly these keys, shapes and dtypes.
    hidden: if given, the H the export must have been made at; likewise ``nb_nodes`` (N)
      and ``batch_size`` (B; None = any).
    context: an :func:`ir_context` of this thread to parse in (default: a new one).

  Raises:
    ExportError: with a one-line reason when any of the module docstring's rules fails.
  """
  shapes = param_shapes(params)
  exported = _deserialize(serialized)
  b, n, h = _check_signature(exported, shapes, hidden, nb_nodes, batch_size)
  try:
    with context or ir_context():
      walker = _Module(exported.mlir_module(serialized=False))
      main, digest = walker.function("main")
  except ExportError:
    raise
  except Exception as e:  # MLIR errors: the type only, never the module text.
    raise ExportError(f"the export's StableHLO cannot be read ({type(e).__name__})") from None
  count = sum(math.prod(s) for s, _ in shapes.values())
  return ExportSummary(batch_size=b, nb_nodes=n, hidden=h, param_count=int(count),
                       macs=int(main.macs), signature=digest, op_count=main.ops,
                       products=tuple(walker.products))


__all__ = ["ExportError", "ExportSummary", "INPUT_NAMES", "MAX_EXPORT_BYTES", "Product",
           "ir_context", "param_shapes", "read_export"]
