"""Exact cost of a processor: parameters and multiply-accumulates of one step.

The MAC count is a structural feature of the search archive (MAP-Elites) and a budget
cap, so it must be exact and comparable across candidates: it is read off the program,
never estimated from the parameter count.

What is counted: one un-scanned processor call (one message-passing step) on one graph
(batch 1) of ``nb_nodes`` nodes, with node/edge/graph features of width ``hidden`` as
CLRS's ``nets.Net`` feeds them. MACs = sum over every ``dot_general`` of
batch x contracting x lhs-free x rhs-free sizes, plus every convolution's
output-size x kernel-size, found by walking the jaxpr of the forward pass (nested jaxprs
included; a ``scan`` body counts ``length`` times, a ``cond`` counts its most expensive
branch; a ``while_loop`` has no static trip count and is rejected).

Why not ``flops / 2`` of XLA's cost analysis of the whole call: XLA also counts every
elementwise op (bias adds, LayerNorm, ReLU, masking, max aggregation) as flops, so half
its total overstates the MACs; and on the whole BaselineModel it counts the scan body
once. The two agree where they should: :func:`xla_dot_macs` asks XLA's cost analysis
for each dot/conv of the jaxpr separately (flops = 2 x MACs) and the tests check it
equals :func:`count_macs` on the seeds, and that for a single ``hk.Linear`` the whole-call
XLA flops are exactly 2 x MACs + the bias adds.

For untrusted programs the count is split across a trust boundary: the jailed process
that runs the candidate calls :func:`export_processor` (parameters + ``jax.export`` of one
step); the trusted process calls :func:`cost_from_export`, which never loads or runs the
candidate and counts the same MACs from the exported StableHLO (``dot_general``/``dot``/
``convolution``; calls followed, the dearest ``if``/``case`` branch, while loops refused).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

ProcessorFactory = Callable[[int], Any]


@dataclasses.dataclass(frozen=True)
class ProcessorCost:
  """Size and per-step compute of a processor.

  Attributes:
    param_count: number of scalars in the processor's parameters.
    macs: multiply-accumulates of one processor call on one graph.
    nb_nodes: graph size the MACs were counted at.
  """

  param_count: int
  macs: int
  nb_nodes: int = 16


def _sub_jaxprs(params: dict[str, Any]) -> Iterator[jax.extend.core.Jaxpr]:
  for value in params.values():
    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def _dot_general_macs(eqn: Any) -> int:
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
  batch = math.prod(lhs[d] for d in lhs_batch)
  contract = math.prod(lhs[d] for d in lhs_contract)
  lhs_free = math.prod(s for d, s in enumerate(lhs)
                       if d not in lhs_contract and d not in lhs_batch)
  rhs_free = math.prod(s for d, s in enumerate(rhs)
                       if d not in rhs_contract and d not in rhs_batch)
  return batch * contract * lhs_free * rhs_free


def _conv_macs(eqn: Any) -> int:
  rhs = eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
  return math.prod(out) * math.prod(rhs) // rhs[out_feature_dim]


def _walk(jaxpr: jax.extend.core.Jaxpr, multiplier: int, visit: Callable[[Any, int], None]
          ) -> None:
  """Calls ``visit(eqn, times)`` for each dot/conv, ``times`` = how often it runs."""
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name in ("dot_general", "conv_general_dilated"):
      visit(eqn, multiplier)
    elif name == "while":
      raise ValueError("the processor uses lax.while_loop, whose trip count is not static, "
                       "so its MACs cannot be counted exactly; use a Python loop or "
                       "lax.scan/fori_loop with static bounds")
    elif name == "cond":
      costs = []
      for branch in eqn.params["branches"]:
        found: list[tuple[Any, int]] = []
        _walk(branch.jaxpr, multiplier, lambda e, t, found=found: found.append((e, t)))
        costs.append((sum(_eqn_macs(e) * t for e, t in found), found))
      for e, t in max(costs, key=lambda c: c[0])[1]:
        visit(e, t)
    else:
      times = multiplier * int(eqn.params.get("length", 1)) if name == "scan" else multiplier
      for sub in _sub_jaxprs(eqn.params):
        _walk(sub, times, visit)


def _eqn_macs(eqn: Any) -> int:
  if eqn.primitive.name == "dot_general":
    return _dot_general_macs(eqn)
  return _conv_macs(eqn)


def count_macs(fn: Callable[..., Any], *args: Any) -> int:
  """Exact MACs of ``fn(*args)`` from its jaxpr (args may be ShapeDtypeStructs)."""
  closed = jax.make_jaxpr(fn)(*args)
  total = 0

  def visit(eqn: Any, times: int) -> None:
    nonlocal total
    total += _eqn_macs(eqn) * times

  _walk(closed.jaxpr, 1, visit)
  return total


def xla_dot_macs(fn: Callable[..., Any], *args: Any) -> int:
  """The same MACs as :func:`count_macs`, each dot/conv costed by XLA (flops / 2).

  Every ``dot_general``/``conv_general_dilated`` of the jaxpr is lowered on its own and
  XLA's HLO cost analysis gives its flops; used to cross-check :func:`count_macs`.
  """
  closed = jax.make_jaxpr(fn)(*args)
  total = 0

  def visit(eqn: Any, times: int) -> None:
    nonlocal total
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
    op = jax.jit(lambda *xs: eqn.primitive.bind(*xs, **eqn.params))
    flops = op.lower(*avals).cost_analysis()["flops"]
    total += int(round(flops / 2)) * times

  _walk(closed.jaxpr, 1, visit)
  return total


def processor_inputs(*, hidden: int, nb_nodes: int, batch_size: int = 1,
                     node_fts: int | None = None, edge_fts: int | None = None,
                     graph_fts: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
  """Abstract processor inputs: node [B,N,Fn], edge [B,N,N,Fe], graph [B,Fg], adj [B,N,N],
  hidden [B,N,H] (feature widths default to ``hidden``, as in CLRS's ``nets.Net``)."""
  f32 = jnp.float32
  b, n = batch_size, nb_nodes
  return {
      "node_fts": jax.ShapeDtypeStruct((b, n, node_fts or hidden), f32),
      "edge_fts": jax.ShapeDtypeStruct((b, n, n, edge_fts or hidden), f32),
      "graph_fts": jax.ShapeDtypeStruct((b, graph_fts or hidden), f32),
      "adj_mat": jax.ShapeDtypeStruct((b, n, n), f32),
      "hidden": jax.ShapeDtypeStruct((b, n, hidden), f32),
  }


def transform_processor(factory: ProcessorFactory, *, hidden: int) -> hk.Transformed:
  """``hk.transform`` of one processor call, called as CLRS's ``nets.Net`` calls it."""
  def forward(node_fts, edge_fts, graph_fts, adj_mat, hidden_state):
    batch_size, nb_nodes = hidden_state.shape[:2]
    return factory(hidden)(node_fts, edge_fts, graph_fts, adj_mat, hidden_state,
                           batch_size=batch_size, nb_nodes=nb_nodes)
  return hk.transform(forward)


def param_count(params: Any) -> int:
  """Number of scalars in a parameter pytree (arrays or ShapeDtypeStructs)."""
  return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def processor_cost(factory: ProcessorFactory, *, hidden: int, nb_nodes: int = 16,
                   node_fts: int | None = None, edge_fts: int | None = None,
                   graph_fts: int | None = None) -> ProcessorCost:
  """Parameter count and exact MACs of one processor step on one graph of ``nb_nodes``.

  Nothing is executed: parameters come from ``jax.eval_shape`` of the init and the MACs
  from the jaxpr of the apply.
  """
  chex.assert_scalar_positive(hidden)
  chex.assert_scalar_positive(nb_nodes)
  net = transform_processor(factory, hidden=hidden)
  inputs = tuple(processor_inputs(hidden=hidden, nb_nodes=nb_nodes, node_fts=node_fts,
                                  edge_fts=edge_fts, graph_fts=graph_fts).values())
  key = jax.random.PRNGKey(0)
  params = jax.eval_shape(net.init, key, *inputs)
  macs = count_macs(lambda p, *xs: net.apply(p, key, *xs), params, *inputs)
  return ProcessorCost(param_count=param_count(params), macs=macs, nb_nodes=nb_nodes)


# ------------------------------------------------------------- cost from an export
#
# The check child (which runs candidate code) calls :func:`export_processor`; the parent
# (which never loads the candidate) calls :func:`cost_from_export` on what it returned.

MAX_EXPORT_BYTES = 32 << 20  # A seed's export is ~20 KiB; refuse anything absurd.
_INPUT_NAMES = ("node_fts", "edge_fts", "graph_fts", "adj_mat", "hidden")
# StableHLO ops whose regions run a data-dependent or per-element number of times.
_REFUSED_OPS = {
    "stablehlo.custom_call": "a custom call (host callback or foreign kernel)",
    "stablehlo.infeed": "host infeed", "stablehlo.outfeed": "host outfeed",
    "stablehlo.send": "a host send", "stablehlo.recv": "a host receive",
    "stablehlo.while": "a while loop, whose trip count is not static (its MACs cannot be "
                       "counted exactly; use a Python loop)",
}


class ExportError(ValueError):
  """An export does not describe one processor step with the claimed parameters."""


def flat_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Haiku ``{module: {name: array}}`` -> ``{"module/name": np.ndarray}`` (flat dict as is)."""
  flat: dict[str, np.ndarray] = {}
  for module, value in params.items():
    if isinstance(value, Mapping):
      for name, leaf in value.items():
        flat[f"{module}/{name}"] = np.asarray(leaf)
    else:
      flat[module] = np.asarray(value)
  return flat


def nest_params(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """``{"module/name": x}`` -> Haiku ``{module: {name: x}}`` (the name has no ``/``)."""
  nested: dict[str, dict[str, Any]] = {}
  for key, value in flat.items():
    module, _, name = key.rpartition("/")
    nested.setdefault(module, {})[name] = value
  return nested


def export_processor(factory: ProcessorFactory, *, hidden: int, nb_nodes: int = 16,
                     params: Mapping[str, Any] | None = None, node_fts: int | None = None,
                     edge_fts: int | None = None, graph_fts: int | None = None,
                     seed: int = 0) -> tuple[dict[str, np.ndarray], bytes]:
  """Parameters and the ``jax.export`` of ONE processor call (runs candidate code).

  The exported function is ``f(params, node_fts, edge_fts, graph_fts, adj_mat, hidden)``
  for one graph (batch 1) of ``nb_nodes`` nodes, with the flat parameters as its first
  argument, so that the trusted side can check the computation consumes exactly the
  returned parameters and count its MACs (:func:`cost_from_export`).

  Args:
    factory: ``factory(out_size) -> processor``.
    hidden: processor width H.
    nb_nodes: N of the exported call.
    params: the processor's parameters (Haiku nested or flat ``module/name``); default: a
      real ``init`` at batch 1 with ``jax.random.PRNGKey(seed)``.
    node_fts: node feature width (default ``hidden``); likewise ``edge_fts``, ``graph_fts``.
    seed: key of the default init (and of the exported call's RNG key, a constant).

  Returns:
    ``({"module/name": np.ndarray}, serialized export)``.
  """
  chex.assert_scalar_positive(hidden)
  chex.assert_scalar_positive(nb_nodes)
  net = transform_processor(factory, hidden=hidden)
  inputs = tuple(processor_inputs(hidden=hidden, nb_nodes=nb_nodes, node_fts=node_fts,
                                  edge_fts=edge_fts, graph_fts=graph_fts).values())
  key = jax.random.PRNGKey(seed)
  if params is None:
    zeros = [np.zeros(x.shape, x.dtype) for x in inputs]
    params = jax.device_get(jax.jit(net.init)(key, *zeros))
  flat = flat_params(params)

  def step(p, node, edge, graph, adj, hid):
    return net.apply(nest_params(p), key, node, edge, graph, adj, hid)

  abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}
  exported = jax.export.export(jax.jit(step), platforms=("cpu",))(abstract, *inputs)
  return flat, bytes(exported.serialize())


def _param_shapes(params: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
  """``{"module/name": (shape, dtype name)}`` from arrays, (shape, dtype) or shape tuples."""
  out = {}
  for key, value in params.items():
    if hasattr(value, "shape") and hasattr(value, "dtype"):
      out[key] = (tuple(int(d) for d in value.shape), np.dtype(value.dtype).name)
    elif (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], tuple)):
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
  """MACs of one ``stablehlo.dot_general`` or ``stablehlo.convolution``."""
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
  # convolution: output size x kernel size / output features (as :func:`_conv_macs`).
  rhs = _tensor_shape(op.operands[1], "a convolution kernel")
  out = _tensor_shape(op.results[0], "a convolution result")
  dims = stablehlo.ConvDimensionNumbers(op.attributes["dimension_numbers"])
  return math.prod(out) * math.prod(rhs) // rhs[dims.kernel_output_feature_dimension]


class _ModuleMacs:
  """Exact MACs of the ``main`` function of a StableHLO module (calls followed)."""

  _COUNTED = ("stablehlo.dot_general", "stablehlo.dot", "stablehlo.convolution")

  def __init__(self, module: Any):
    self.functions = {}
    for op in module.body.operations:
      if op.operation.name == "func.func":
        self.functions[str(op.attributes["sym_name"]).strip('"')] = op
    self.memo: dict[str, int] = {}
    self.active: set[str] = set()

  def function(self, name: str) -> int:
    if name not in self.functions:
      raise ExportError(f"the export calls an undefined function {name!r}")
    if name in self.active:
      raise ExportError(f"the export's function {name!r} is recursive")
    if name not in self.memo:
      self.active.add(name)
      self.memo[name] = self.regions(self.functions[name].operation.regions)
      self.active.discard(name)
    return self.memo[name]

  def regions(self, regions: Any) -> int:
    return sum(self.op(op) for region in regions for block in region for op in block)

  def op(self, op: Any) -> int:
    name = op.operation.name
    if name in _REFUSED_OPS:
      raise ExportError(f"the export contains {_REFUSED_OPS[name]} ({name})")
    if name in self._COUNTED:
      return _op_macs(op)
    if name == "func.call":
      return self.function(str(op.attributes["callee"]).lstrip("@").strip('"'))
    if name == "stablehlo.composite":
      return self.function(str(op.attributes["decomposition"]).lstrip("@").strip('"'))
    regions = op.operation.regions
    if not len(regions):
      return 0
    if name in ("stablehlo.if", "stablehlo.case"):  # Only one branch runs: the dearest.
      return max((self.regions([r]) for r in regions), default=0)
    inner = self.regions(regions)
    if inner:  # reduce/sort/scatter/map bodies run a per-element number of times.
      raise ExportError(f"the export has a matrix product inside a {name} body, whose "
                        "trip count is not static; its MACs cannot be counted exactly")
    return 0


def _parse_export(serialized: bytes) -> Any:
  if not isinstance(serialized, (bytes, bytearray)):
    raise ExportError(f"the export is a {type(serialized).__name__}, not bytes")
  if len(serialized) > MAX_EXPORT_BYTES:
    raise ExportError(f"the export is {len(serialized):,} bytes, over the "
                      f"{MAX_EXPORT_BYTES:,}-byte cap")
  try:
    return jax.export.deserialize(bytearray(serialized))
  except Exception as e:  # Malformed data: one line, no echo of its content.
    raise ExportError(f"the export does not deserialize ({type(e).__name__})") from None


def cost_from_export(serialized: bytes, params: Mapping[str, Any], *,
                     hidden: int | None = None, nb_nodes: int | None = None
                     ) -> ProcessorCost:
  """Parameters and exact MACs of one processor step, from data only (the TRUSTED side).

  Never imports or runs the candidate, and never runs the computation: the export is
  deserialised (size-capped), must take ``(params, node_fts, edge_fts, graph_fts,
  adj_mat, hidden)`` for one graph with ``params`` of exactly the given keys, shapes and
  dtypes, must return ``(nxt_hidden [1, N, H], tri_msgs None or [1, N, N, H])``, may
  have no effects, custom calls (host callbacks) or disabled safety checks; MACs are
  summed over its StableHLO ``dot_general``/``convolution`` ops (calls followed, the
  dearest ``if``/``case`` branch).

  Args:
    serialized: ``jax.export`` bytes from :func:`export_processor`.
    params: ``{"module/name": array | (shape, dtype) | shape}`` from the same call.
    hidden: if given, the H the export must have been made at.
    nb_nodes: if given, the N the export must have been made at.

  Raises:
    ExportError: with a one-line reason if any of the above does not hold.
  """
  from jax.interpreters import mlir as jax_mlir

  shapes = _param_shapes(params)
  exported = _parse_export(serialized)
  if exported.ordered_effects or exported.unordered_effects:
    raise ExportError("the export has side effects (host callbacks); a processor has none")
  if exported.disabled_safety_checks:
    raise ExportError("the export disables jax.export safety checks")
  if exported.nr_devices != 1 or exported.uses_global_constants:
    raise ExportError("the export is not a single-device computation with static shapes")
  names = sorted(shapes)
  leaf = object()
  want_tree = jax.tree_util.tree_structure(
      ((dict.fromkeys(names, leaf), *(leaf,) * len(_INPUT_NAMES)), {}))
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
  if len(hid) != 3 or hid[0] != 1:
    raise ExportError(f"the export's hidden input is {list(hid)}, not [1, N, H]")
  _, n, h = hid
  if (hidden is not None and h != hidden) or (nb_nodes is not None and n != nb_nodes):
    raise ExportError(f"the export is for H={h}, N={n}, not H={hidden}, N={nb_nodes}")
  if (len(node) != 3 or node[:2] != (1, n) or len(edge) != 4 or edge[:3] != (1, n, n)
      or len(graph) != 2 or graph[0] != 1 or adj != (1, n, n)):
    raise ExportError("the export's inputs are not node [1, N, F], edge [1, N, N, F], "
                      "graph [1, F], adj [1, N, N]")
  outs = [tuple(a.shape) for a in exported.out_avals]
  if outs not in ([(1, n, h)], [(1, n, h), (1, n, n, h)]) or any(
      np.dtype(a.dtype) != np.float32 for a in exported.out_avals):
    raise ExportError(f"the export returns {outs}, not float32 nxt_hidden [1, {n}, {h}] "
                      f"and tri_msgs None or [1, {n}, {n}, {h}]")
  try:
    with jax_mlir.make_ir_context():
      module = exported.mlir_module(serialized=False)
      total = _ModuleMacs(module).function("main")
  except ExportError:
    raise
  except Exception as e:  # MLIR errors: the type only, never the module text.
    raise ExportError(f"the export's StableHLO cannot be read ({type(e).__name__})") from None
  count = sum(math.prod(s) for s, _ in shapes.values())
  return ProcessorCost(param_count=int(count), macs=int(total), nb_nodes=n)


__all__ = ["ExportError", "MAX_EXPORT_BYTES", "ProcessorCost", "cost_from_export",
           "count_macs", "export_processor", "flat_params", "nest_params", "param_count",
           "processor_cost", "processor_inputs", "transform_processor", "xla_dot_macs"]
