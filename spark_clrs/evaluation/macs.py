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
step at a given batch and graph size); the trusted process reads the export as data
(:mod:`spark_clrs.evaluation.hlo_cost`, :func:`cost_from_export`), counting the same MACs
from its StableHLO without loading or running the candidate, and
:mod:`spark_clrs.evaluation.cost_grid` checks that exports at several shapes are one program.
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

from spark_clrs.evaluation import hlo_cost
from spark_clrs.evaluation.hlo_cost import MAX_EXPORT_BYTES, ExportError

ProcessorFactory = Callable[[int], Any]
# CLRS trains only the parameters of modules whose name contains this tag
# (clrs.processors.PROCESSOR_TAG, repeated here so that code that must not import CLRS --
# the jailed check child -- can test it; tests/test_macs.py checks the two agree).
PROCESSOR_TAG = "clrs_processor"


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
# The process that runs candidate code calls :func:`export_processor`; the trusted process
# (which never loads the candidate) reads what it returned with ``hlo_cost.read_export``.


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
                     batch_size: int = 1, params: Mapping[str, Any] | None = None,
                     node_fts: int | None = None, edge_fts: int | None = None,
                     graph_fts: int | None = None, seed: int = 0
                     ) -> tuple[dict[str, np.ndarray], bytes]:
  """Parameters and the ``jax.export`` of ONE processor call (runs candidate code).

  The exported function is ``f(params, node_fts, edge_fts, graph_fts, adj_mat, hidden)``
  for ``batch_size`` graphs of ``nb_nodes`` nodes, with the flat parameters as its first
  argument, so that the trusted side can check the computation consumes exactly the
  returned parameters and count its MACs (``hlo_cost.read_export``).

  Args:
    factory: ``factory(out_size) -> processor``.
    hidden: processor width H.
    nb_nodes: N of the exported call.
    batch_size: B of the exported call.
    params: the processor's parameters (Haiku nested or flat ``module/name``); default: a
      real ``init`` at this shape with ``jax.random.PRNGKey(seed)``.
    node_fts: node feature width (default ``hidden``); likewise ``edge_fts``, ``graph_fts``.
    seed: key of the default init (and of the exported call's RNG key, a constant).

  Returns:
    ``({"module/name": np.ndarray}, serialized export)``.
  """
  chex.assert_scalar_positive(hidden)
  chex.assert_scalar_positive(nb_nodes)
  chex.assert_scalar_positive(batch_size)
  net = transform_processor(factory, hidden=hidden)
  inputs = tuple(processor_inputs(hidden=hidden, nb_nodes=nb_nodes, batch_size=batch_size,
                                  node_fts=node_fts, edge_fts=edge_fts,
                                  graph_fts=graph_fts).values())
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


def cost_from_export(serialized: bytes, params: Mapping[str, Any], *,
                     hidden: int | None = None, nb_nodes: int | None = None
                     ) -> ProcessorCost:
  """Parameters and exact MACs of one processor step on one graph, from data only.

  The TRUSTED side of :func:`export_processor` at batch 1: ``hlo_cost.read_export`` checks
  the export against ``params`` (and ``hidden``/``nb_nodes`` if given) and counts its MACs
  without loading or running the candidate.

  Raises:
    ExportError: with a one-line reason if the export is not such a step.
  """
  summary = hlo_cost.read_export(serialized, params, hidden=hidden, nb_nodes=nb_nodes,
                                 batch_size=1)
  return ProcessorCost(param_count=summary.param_count, macs=summary.macs,
                       nb_nodes=summary.nb_nodes)


__all__ = ["ExportError", "MAX_EXPORT_BYTES", "PROCESSOR_TAG", "ProcessorCost",
           "cost_from_export", "count_macs", "export_processor", "flat_params", "nest_params",
           "param_count", "processor_cost", "processor_inputs", "transform_processor",
           "xla_dot_macs"]
