"""Tests for ``spark_clrs.macs``: exact MACs and parameter counts of one processor step.

A one-``hk.Linear`` processor has hand-computable MACs (and XLA's whole-call flops are
exactly twice them plus the bias adds); Triplet-GMPNN's count matches its operator-by-
operator formula at several sizes, and XLA's per-op costing agrees with the jaxpr count.
"""

import clrs
import haiku as hk
import jax
import jax.numpy as jnp
from absl.testing import absltest, parameterized

import processors
from spark_clrs import macs

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


if __name__ == "__main__":
  absltest.main()
