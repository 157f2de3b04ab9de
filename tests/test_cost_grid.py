"""Tests for the cost a candidate cannot steer (``evaluation.cost_grid`` + ``hlo_cost``).

The processors here are trusted test code, exported in this process and costed from the
exports exactly as the parent costs a jailed child's files; each attack hides compute from
the reference shape (batch 1, n=8) in a different way and must be refused with a reason
that names the rule and the shape. tests/test_checks.py runs two attacks through the jail.
"""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

import processors
from spark_clrs.evaluation import cost_grid, hlo_cost, macs

H = 8
SHAPES = cost_grid.grid(macs_nb_nodes=8, sizes=(5, 11), batch_sizes=(4,))


class Base(hk.Module):
  """``nxt_hidden = Linear(concat(node_fts, hidden))`` plus what a subclass adds."""

  def __init__(self, out_size: int):
    super().__init__(name="test_clrs_processor")
    self.out_size = out_size

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    out = hk.Linear(self.out_size)(jnp.concatenate([node_fts, hidden], axis=-1))
    return out + self.extra(hidden), None

  def extra(self, hidden):
    return jnp.zeros_like(hidden)


def pair_scores(hidden, width):
  """A [B, N, N] product over ``H + width`` features, folded back to [B, N, H]."""
  pad = jnp.zeros(hidden.shape[:2] + (width,), hidden.dtype)
  x = jnp.concatenate([hidden, pad], axis=-1)
  scores = x @ jnp.swapaxes(x, -1, -2)
  return hidden * jnp.mean(scores, axis=-1, keepdims=True)


class BatchBranch(Base):
  """Extra products only when the batch has more than one graph."""

  def extra(self, hidden):
    if hidden.shape[0] > 1:
      for _ in range(4):
        hidden = jnp.tanh(hidden @ jnp.swapaxes(hidden, -1, -2) @ hidden)
    return hidden


class SizeBranch(Base):
  """Extra products only on graphs larger than the reference size."""

  def extra(self, hidden):
    if hidden.shape[1] > 8:
      hidden = jnp.tanh(hidden @ jnp.swapaxes(hidden, -1, -2) @ hidden)
    return hidden


class BatchWidth(Base):
  """The same ops at every shape, a wider product when batched."""

  def extra(self, hidden):
    return pair_scores(hidden, 1 if hidden.shape[0] == 1 else 4096)


class SizeWidth(Base):
  """The same ops at every shape, a wider product on larger graphs."""

  def extra(self, hidden):
    return pair_scores(hidden, 1 if hidden.shape[1] <= 8 else 4096)


class OneBatchOnly(Base):
  """Extra products at one batch size, the one the largest batch does not show."""

  def extra(self, hidden):
    if hidden.shape[0] == 2:
      hidden = jnp.tanh(hidden @ jnp.swapaxes(hidden, -1, -2) @ hidden)
    return hidden


class ConstantMask(Base):
  """Honest: a [N, N] constant broadcast against [B, N, N] (elided at batch 1) and ``@``."""

  def extra(self, hidden):
    n = hidden.shape[1]
    mask = 1.0 - jnp.eye(n)
    scores = jnp.maximum(hidden @ jnp.swapaxes(hidden, -1, -2), mask[None]) * mask[None]
    return scores @ hidden


class Polynomial(Base):
  """Honest shape arithmetic: a virtual node (N + 1) and the N (N + 1) / 2 node pairs."""

  def extra(self, hidden):
    b, n, h = hidden.shape
    with_virtual = jnp.concatenate([hidden, jnp.mean(hidden, 1, keepdims=True)], axis=1)
    mixed = hk.Linear(h, with_bias=False)(with_virtual)[:, :n]
    rows, cols = jnp.triu_indices(n)
    pairs = hidden[:, rows] * hidden[:, cols]                     # [B, N (N + 1) / 2, H]
    pooled = jnp.einsum("bph,bpk->bhk", pairs, pairs).sum(-1)    # [B, H]
    return mixed + pooled[:, None, :] * 1e-3


def summaries(factory, shapes=SHAPES, hidden=H):
  """``{shape: ExportSummary}``, exported in-process with zero parameters."""
  net = macs.transform_processor(factory, hidden=hidden)
  inputs = tuple(macs.processor_inputs(hidden=hidden, nb_nodes=shapes[0].nb_nodes).values())
  params = macs.flat_params(jax.tree_util.tree_map(
      lambda x: np.zeros(x.shape, x.dtype),
      jax.eval_shape(net.init, jax.random.PRNGKey(0), *inputs)))
  out = {}
  for at in shapes:
    _, blob = macs.export_processor(factory, hidden=hidden, nb_nodes=at.nb_nodes,
                                    batch_size=at.batch_size, params=params)
    out[at] = hlo_cost.read_export(blob, params, hidden=hidden, nb_nodes=at.nb_nodes,
                                   batch_size=at.batch_size)
  return out


class GridTest(absltest.TestCase):

  def test_grid_puts_the_reference_first(self):
    self.assertEqual([tuple(s) for s in SHAPES], [(1, 8), (4, 5), (4, 8), (4, 11)])
    self.assertEqual(str(SHAPES[3]), "batch 4, n=11")
    self.assertEqual(SHAPES[3].key, "b4_n11")
    spark = cost_grid.grid(macs_nb_nodes=16, sizes=(11, 64), batch_sizes=(32,))
    self.assertEqual([tuple(s) for s in spark], [(1, 16), (32, 11), (32, 16), (32, 64)])
    quick = cost_grid.grid(macs_nb_nodes=16, sizes=(8, 16), batch_sizes=(16, 8, 16))
    self.assertEqual([tuple(s) for s in quick], [(1, 16), (8, 8), (8, 16), (16, 8), (16, 16)])
    self.assertEqual(cost_grid.grid(macs_nb_nodes=4, sizes=(4,), batch_sizes=(1,)),
                     (cost_grid.Shape(1, 4),))


class PolynomialRuleTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("n", lambda n: n), ("n_plus_1", lambda n: n + 1), ("n_minus_1", lambda n: n - 1),
      ("two_n_plus_3", lambda n: 2 * n + 3), ("n_squared", lambda n: n * n),
      ("pairs", lambda n: n * (n + 1) // 2), ("edges_flat", lambda n: 32 * n * n * 128),
      ("cube", lambda n: 8 * n**3), ("constant", lambda n: 128),
      ("nodes_and_edges", lambda n: n * n + n))
  def test_shape_arithmetic_fits(self, dim):
    for sizes in ((11, 16, 64), (8, 16), (5, 11, 16), (4, 7, 11, 13, 16, 64)):
      self.assertTrue(cost_grid._fits([(n, dim(n)) for n in sizes], [10**6]), sizes)  # noqa: SLF001

  @parameterized.named_parameters(
      ("threshold", lambda n: 16 if n <= 16 else 4096),
      ("degree_jump", lambda n: n if n <= 16 else n * n),
      ("quartic", lambda n: n**4), ("shrinks", lambda n: 1000 - n))
  def test_size_dependent_choices_do_not_fit(self, dim):
    self.assertFalse(cost_grid._fits([(n, dim(n)) for n in (11, 16, 64)], [10**6]))  # noqa: SLF001

  def test_two_sizes_bind_less_than_three(self):
    # Nothing runs above 16 in a profile measured at 8 and 16, so nothing is hidden there.
    threshold = [(8, 16), (16, 16)]
    self.assertTrue(cost_grid._fits(threshold, [10**6]))  # noqa: SLF001
    self.assertFalse(cost_grid._fits([(8, 5), (16, 4096)], [10**6]))  # noqa: SLF001

  def test_the_search_is_bounded(self):
    with self.assertRaisesRegex(cost_grid.InconsistentCost, "too many distinct dimensions"):
      cost_grid._fits([(5, 10**9 + 7), (11, 3)], [10])  # noqa: SLF001


class ConsistentCostTest(parameterized.TestCase):

  @parameterized.parameters("triplet_gmpnn", "mpnn", "pgn")
  def test_seeds_are_one_program_at_every_shape(self, seed):
    factory = processors.load(seed)
    found = summaries(factory)
    cost = cost_grid.consistent_cost(found)
    self.assertEqual(cost.macs, macs.processor_cost(factory, hidden=H, nb_nodes=8).macs)
    self.assertEqual(cost.nb_nodes, 8)
    self.assertEqual(cost.macs_by_shape["b1_n8"], cost.macs)
    self.assertEqual(cost.macs_by_shape["b4_n8"], 4 * cost.macs)
    for at in SHAPES[1:]:  # Each measured figure is that shape's real count.
      self.assertEqual(cost.macs_by_shape[at.key], at.batch_size * macs.processor_cost(
          factory, hidden=H, nb_nodes=at.nb_nodes).macs)
    self.assertLen({s.signature for s in found.values()}, 1)

  def test_what_jax_lowers_differently_at_batch_1_passes(self):
    found = summaries(ConstantMask)
    self.assertNotEqual(found[SHAPES[0]].op_count, found[SHAPES[2]].op_count)
    cost = cost_grid.consistent_cost(found)
    self.assertEqual(cost.macs_by_shape["b4_n8"], 4 * cost.macs)

  def test_a_branch_on_one_of_several_batch_sizes_is_refused(self):
    shapes = cost_grid.grid(macs_nb_nodes=8, sizes=(5, 11), batch_sizes=(2, 4))
    with self.assertRaisesRegex(cost_grid.InconsistentCost, r"^the processor runs a "
                                r"different computation at batch 4, n=5 than at batch 2, n=5"):
      cost_grid.consistent_cost(summaries(OneBatchOnly, shapes))

  def test_honest_shape_arithmetic_passes(self):
    cost = cost_grid.consistent_cost(summaries(Polynomial))
    self.assertGreater(cost.macs_by_shape["b4_n11"], cost.macs_by_shape["b4_n8"])

  def test_a_branch_on_the_batch_size_is_refused(self):
    with self.assertRaises(cost_grid.InconsistentCost) as ctx:
      cost_grid.consistent_cost(summaries(BatchBranch))
    self.assertEqual(str(ctx.exception), "the processor runs a different computation at "
                     "batch 4, n=8 than at batch 1, n=8 (9 vs 1 matrix products); what it "
                     "computes must not depend on the batch size (no Python branch on shapes)")

  def test_a_branch_on_the_graph_size_is_refused(self):
    with self.assertRaises(cost_grid.InconsistentCost) as ctx:
      cost_grid.consistent_cost(summaries(SizeBranch))
    self.assertRegex(str(ctx.exception), r"^the processor runs a different computation at "
                     r"batch 4, n=11 than at batch 4, n=5 \([\d,]+ vs [\d,]+ operations, 3 vs 1 "
                     r"matrix products\); .*must not depend on the batch or graph size")

  def test_a_width_chosen_from_the_batch_is_refused(self):
    with self.assertRaises(cost_grid.InconsistentCost) as ctx:
      cost_grid.consistent_cost(summaries(BatchWidth))
    self.assertRegex(str(ctx.exception), r"^MACs are not linear in the batch: [\d,]+ at "
                     r"batch 4, n=8 is not 4 x [\d,]+ \(at batch 1, n=8\)")

  def test_a_width_chosen_from_the_graph_size_is_refused(self):
    with self.assertRaises(cost_grid.InconsistentCost) as ctx:
      cost_grid.consistent_cost(summaries(SizeWidth))
    self.assertRegex(str(ctx.exception), r"^the matrix product test_clrs_processor/\S+ has "
                     r"a dimension of 9 at n=5, 9 at n=8, 4,104 at n=11: not a polynomial")

  def test_without_the_reference_shape_branches_would_pass(self):
    # What the check guards against: at the reference shape alone the attack looks cheap.
    honest = summaries(Base, SHAPES[:1])[SHAPES[0]]
    attack = summaries(BatchBranch, SHAPES[:1])[SHAPES[0]]
    self.assertEqual(attack.macs, honest.macs)
    attack_batched = summaries(BatchBranch, (cost_grid.Shape(4, 8),))
    self.assertGreater(attack_batched[cost_grid.Shape(4, 8)].macs, 4 * 4 * honest.macs)


if __name__ == "__main__":
  absltest.main()
