"""Tests for ``spark_clrs.evaluation.macs``: exact MACs and parameter counts of one processor step.

A one-``hk.Linear`` processor has hand-computable MACs (and XLA's whole-call flops are
exactly twice them plus the bias adds); Triplet-GMPNN's count matches its operator-by-
operator formula at several sizes, and XLA's per-op costing agrees with the jaxpr count.
"""

import clrs
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

import processors
from spark_clrs.evaluation import hlo_cost, macs

H = 16


class OneLinear(hk.Module):
  """``nxt_hidden = Linear(concat(node_fts, hidden))``: N x 2H x H MACs per graph."""

  def __init__(self, out_size: int, name: str = "one_linear_clrs_processor"):
    super().__init__(name=name)
    self.out_size = out_size

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    z = jnp.concatenate([node_fts, hidden], axis=-1)
    return hk.Linear(self.out_size)(z), None


class ScannedLinear(hk.Module):
  """Applies one shared ``hk.Linear`` three times through ``hk.scan``."""

  def __init__(self, out_size: int, name: str = "scanned_clrs_processor"):
    super().__init__(name=name)
    self.out_size = out_size

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    linear = hk.Linear(self.out_size, with_bias=False)
    out, _ = hk.scan(lambda h, _: (linear(h), None), hidden, None, length=3)
    return out, None


class WhileLoop(hk.Module):

  def __init__(self, out_size: int, name: str = "while_clrs_processor"):
    super().__init__(name=name)
    self.out_size = out_size

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    linear = hk.Linear(self.out_size)
    hidden = linear(hidden)
    out = jax.lax.while_loop(lambda h: h.sum() > 1e9, lambda h: h * 0.5, hidden)
    return out, None


def triplet_gmpnn_macs(n: int, h: int, t: int = 8) -> int:
  """CLRS Triplet-GMPNN, operator by operator, for one graph of n nodes."""
  z = 2 * h  # concat(node_fts, hidden)
  return (4 * n * z * h        # m_1, m_2 (messages), o1 (skip), gate1
          + n * n * h * h      # m_e (edge messages)
          + h * h              # m_g (graph messages)
          + 2 * n * n * h * h  # message MLP, two layers of width h
          + 3 * n * h * h      # o2, gate2, gate3
          + 3 * n * z * t      # t_1, t_2, t_3 (triplet node terms)
          + 3 * n * n * h * t  # t_e_1, t_e_2, t_e_3 (triplet edge terms)
          + h * t              # t_g (triplet graph term)
          + n * n * t * h)     # o3 (triplet -> edge messages)


class MacsTest(parameterized.TestCase):

  def test_one_linear_is_exact(self):
    n = 5
    cost = macs.processor_cost(OneLinear, hidden=H, nb_nodes=n)
    self.assertEqual(cost.macs, n * 2 * H * H)
    self.assertEqual(cost.param_count, 2 * H * H + H)
    self.assertEqual(cost.nb_nodes, n)

  def test_one_linear_agrees_with_xla_whole_call_flops(self):
    n = 5
    net = macs.transform_processor(OneLinear, hidden=H)
    inputs = tuple(macs.processor_inputs(hidden=H, nb_nodes=n).values())
    key = jax.random.PRNGKey(0)
    params = jax.eval_shape(net.init, key, *inputs)
    fn = jax.jit(lambda p, *xs: net.apply(p, key, *xs)[0])
    flops = fn.lower(params, *inputs).cost_analysis()["flops"]
    mac_count = macs.count_macs(fn, params, *inputs)
    self.assertEqual(flops, 2 * mac_count + n * H)  # + one bias add per output.

  def test_scan_counts_every_iteration(self):
    cost = macs.processor_cost(ScannedLinear, hidden=H, nb_nodes=4)
    self.assertEqual(cost.macs, 3 * 4 * H * H)

  def test_while_loop_is_rejected(self):
    with self.assertRaisesRegex(ValueError, "while_loop.*cannot be counted exactly"):
      macs.processor_cost(WhileLoop, hidden=H, nb_nodes=4)

  @parameterized.parameters(4, 16, 64)
  def test_triplet_gmpnn_matches_its_formula(self, n):
    factory = clrs.get_processor_factory("triplet_gmpnn", use_ln=True, nb_triplet_fts=8)
    cost = macs.processor_cost(factory, hidden=H, nb_nodes=n)
    self.assertEqual(cost.macs, triplet_gmpnn_macs(n, H))

  def test_default_size_and_growth(self):
    factory = processors.load("triplet_gmpnn")
    small = macs.processor_cost(factory, hidden=H)
    self.assertEqual(small.nb_nodes, 16)
    self.assertGreater(small.macs, 0)
    big = macs.processor_cost(factory, hidden=H, nb_nodes=32)
    self.assertGreater(big.macs, 3 * small.macs)  # quadratic edge terms dominate.
    self.assertEqual(big.param_count, small.param_count)  # shapes do not depend on N.

  @parameterized.parameters("triplet_gmpnn", "mpnn", "pgn")
  def test_seed_matches_clrs_and_xla(self, kind):
    ours = macs.processor_cost(processors.load(kind), hidden=H)
    theirs = macs.processor_cost(
        clrs.get_processor_factory(kind, use_ln=True, nb_triplet_fts=8), hidden=H)
    self.assertEqual(ours, theirs)
    net = macs.transform_processor(processors.load(kind), hidden=H)
    inputs = tuple(macs.processor_inputs(hidden=H, nb_nodes=16).values())
    key = jax.random.PRNGKey(0)
    params = jax.eval_shape(net.init, key, *inputs)
    self.assertEqual(sum(x.size for x in jax.tree_util.tree_leaves(params)),
                     ours.param_count)

    def fn(p, *xs):
      return net.apply(p, key, *xs)

    self.assertEqual(macs.xla_dot_macs(fn, params, *inputs), ours.macs)


class CondBranches(hk.Module):
  """A ``lax.cond`` between a wide and a narrow product: the dearer branch is counted."""

  def __init__(self, out_size: int, name: str = "cond_clrs_processor"):
    super().__init__(name=name)
    self.out_size = out_size

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    w = hk.get_parameter("w", (self.out_size, self.out_size), init=jnp.ones)
    out = jax.lax.cond(hidden.sum() > 0, lambda h: (h @ w) @ w, lambda h: h @ w, hidden)
    return out, None


class Twice(hk.Module):
  """One jitted product applied twice: the export calls one function two times."""

  def __init__(self, out_size: int, name: str = "twice_clrs_processor"):
    super().__init__(name=name)
    self.out_size = out_size

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    w = hk.get_parameter("w", (self.out_size, self.out_size), init=jnp.ones)
    product = jax.jit(lambda h, w: h @ w)
    return product(product(hidden, w), w), None


class HostCallback(hk.Module):

  def __init__(self, out_size: int, name: str = "callback_clrs_processor"):
    super().__init__(name=name)
    self.out_size = out_size

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    out = jax.pure_callback(lambda h: h, jax.ShapeDtypeStruct(hidden.shape, hidden.dtype),
                            hidden)
    return hk.Linear(self.out_size)(out), None


class LapackCall(hk.Module):
  """QR via LAPACK: a custom call that ``jax.export`` itself allows."""

  def __init__(self, out_size: int, name: str = "qr_clrs_processor"):
    super().__init__(name=name)
    self.out_size = out_size

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    q, _ = jnp.linalg.qr(hidden)
    return hk.Linear(self.out_size)(q), None


def abstract_params(factory, hidden, nb_nodes=16):
  """Zero parameters of the right shapes (no XLA RNG compile)."""
  net = macs.transform_processor(factory, hidden=hidden)
  inputs = tuple(macs.processor_inputs(hidden=hidden, nb_nodes=nb_nodes).values())
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), *inputs)
  return jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), shapes)


class ExportCostTest(parameterized.TestCase):
  """``cost_from_export``: the trusted side's numbers, from the export's data alone."""

  def test_triplet_gmpnn_reference_numbers(self):
    factory = processors.load("triplet_gmpnn")
    params, serialized = macs.export_processor(factory, hidden=128)  # A real init.
    self.assertTrue(all(isinstance(v, np.ndarray) for v in params.values()))
    cost = macs.cost_from_export(serialized, params, hidden=128, nb_nodes=16)
    self.assertEqual(cost, macs.ProcessorCost(param_count=258_872, macs=16_630_784,
                                              nb_nodes=16))
    self.assertEqual(cost.macs, triplet_gmpnn_macs(16, 128))
    self.assertEqual(cost, macs.processor_cost(factory, hidden=128))

  @parameterized.parameters("triplet_gmpnn", "mpnn", "pgn")
  def test_seed_equals_processor_cost(self, seed):
    factory = processors.load(seed)
    for n in (5, 16):
      params, serialized = macs.export_processor(factory, hidden=H, nb_nodes=n,
                                                 params=abstract_params(factory, H, n))
      shapes = {k: (v.shape, v.dtype) for k, v in params.items()}  # Shapes suffice.
      self.assertEqual(macs.cost_from_export(serialized, shapes),
                       macs.processor_cost(factory, hidden=H, nb_nodes=n))

  def test_one_linear_and_dearest_cond_branch(self):
    n = 5
    params, serialized = macs.export_processor(OneLinear, hidden=H, nb_nodes=n)
    self.assertEqual(macs.cost_from_export(serialized, params).macs, n * 2 * H * H)
    params, serialized = macs.export_processor(CondBranches, hidden=H, nb_nodes=n)
    self.assertEqual(macs.cost_from_export(serialized, params).macs, 2 * n * H * H)

  def test_parameters_must_match_the_export(self):
    factory = processors.load("mpnn")
    params, serialized = macs.export_processor(factory, hidden=H,
                                               params=abstract_params(factory, H))
    key = sorted(params)[0]
    cases = {
        "resized": {**params, key: np.zeros(params[key].shape + (2,), np.float32)},
        "retyped": {**params, key: params[key].astype(np.float16)},
        "missing": {k: v for k, v in params.items() if k != key},
        "extra": {**params, "x_clrs_processor/extra/w": np.zeros((1,), np.float32)},
    }
    for what, claimed in cases.items():
      with self.subTest(what):
        with self.assertRaises(macs.ExportError):
          macs.cost_from_export(serialized, claimed)
    with self.assertRaisesRegex(macs.ExportError, r"is for B=1, N=16, H=16, not H=32$"):
      macs.cost_from_export(serialized, params, hidden=32, nb_nodes=16)

  def test_a_batched_export_costs_the_whole_batch(self):
    factory = processors.load("triplet_gmpnn")
    params = macs.flat_params(abstract_params(factory, H))
    one = hlo_cost.read_export(macs.export_processor(factory, hidden=H, params=params)[1],
                               params, hidden=H, nb_nodes=16)
    _, blob = macs.export_processor(factory, hidden=H, batch_size=3, params=params)
    three = hlo_cost.read_export(blob, params, hidden=H, nb_nodes=16, batch_size=3)
    self.assertEqual((three.batch_size, three.nb_nodes, three.hidden), (3, 16, H))
    self.assertEqual(three.macs, 3 * one.macs)
    self.assertEqual(one.macs, triplet_gmpnn_macs(16, H))
    self.assertEqual(three.signature, one.signature)  # One program at both shapes.
    self.assertEqual(len(three.products), len(one.products))
    self.assertEqual(sum(p.macs for p in one.products), one.macs)  # No call or branch here.
    self.assertIn("mpnn_aggr_clrs_processor/linear", one.products[0].where)
    with self.assertRaisesRegex(macs.ExportError, "is for B=3, N=16, H=16, not B=1"):
      macs.cost_from_export(blob, params)  # The budget's number is per graph.

  def test_calls_and_branches_are_summarised_once_and_counted_per_run(self):
    params, serialized = macs.export_processor(Twice, hidden=H, nb_nodes=4)
    summary = hlo_cost.read_export(serialized, params)
    self.assertEqual(summary.macs, 2 * 4 * H * H)  # The jitted function runs twice,
    self.assertLen(summary.products, 1)  # but its product is listed once.
    params, serialized = macs.export_processor(CondBranches, hidden=H, nb_nodes=4)
    summary = hlo_cost.read_export(serialized, params)
    self.assertEqual(summary.macs, 2 * 4 * H * H)  # The dearer branch.
    self.assertLen(summary.products, 3)  # Both branches' products.

  def test_processor_tag_is_clrs_s(self):
    self.assertEqual(macs.PROCESSOR_TAG, clrs.processors.PROCESSOR_TAG)

  def test_refuses_callbacks_loops_and_garbage(self):
    with self.assertRaisesRegex(NotImplementedError, "host_callbacks"):
      macs.export_processor(HostCallback, hidden=H, nb_nodes=4)  # jax refuses to export it.
    params, serialized = macs.export_processor(LapackCall, hidden=H, nb_nodes=4)
    with self.assertRaisesRegex(macs.ExportError, "custom call"):
      macs.cost_from_export(serialized, params)
    params, serialized = macs.export_processor(WhileLoop, hidden=H, nb_nodes=4)
    with self.assertRaisesRegex(macs.ExportError, "while loop"):
      macs.cost_from_export(serialized, params)
    with self.assertRaisesRegex(macs.ExportError, "does not deserialize"):
      macs.cost_from_export(b"secret file content\n" * 10, params)
    with self.assertRaisesRegex(macs.ExportError, "over the"):
      macs.cost_from_export(b"\0" * (macs.MAX_EXPORT_BYTES + 1), params)


if __name__ == "__main__":
  absltest.main()
