"""Tests for ``seeds/``: each seed is the CLRS processor it claims to be.

A seed is built with ``processors.load`` and the matching processor with
``clrs.get_processor_factory(kind, use_ln=True, nb_triplet_fts=8)``, both under
``hk.transform``. The two must have the same parameter tree (names, shapes and,
for the same key, values) and, with the same randomised parameters, the same
outputs on random inputs at two graph sizes. The tests also check what the
search relies on: the two factor regions, what each one holds, and that a seed
is a standalone program.
"""

import ast
import re

import chex
import clrs
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

import processors
from spark_clrs.programs import regions

HIDDEN = 16
BATCH = 2
SIZES = (5, 11)
# seed name -> matching CLRS processor kind.
SEED_KINDS = {"triplet_gmpnn": "triplet_gmpnn", "mpnn": "mpnn", "pgn": "pgn"}
ALLOWED_IMPORTS = {"jax", "haiku", "chex", "numpy", "typing", "collections", "functools", "math"}
OPERATOR_CONSTRUCTORS = re.compile(r"\bhk\.(Linear|LayerNorm|nets\.MLP|Conv\w*|get_parameter)\(")


def _transformed(factory: processors.ProcessorFactory) -> hk.Transformed:
  """``hk.transform`` of one processor step at width ``HIDDEN``."""

  def step(node_fts, edge_fts, graph_fts, adj_mat, hidden):
    b, n, _ = node_fts.shape
    return factory(HIDDEN)(node_fts, edge_fts, graph_fts, adj_mat, hidden,
                           batch_size=b, nb_nodes=n)

  return hk.transform(step)


def _inputs(nb_nodes: int, seed: int) -> tuple[np.ndarray, ...]:
  """Random processor inputs as CLRS builds them: features of width H and an
  adjacency with self-loops.

  Returns:
    ``node_fts [B, N, H]``, ``edge_fts [B, N, N, H]``, ``graph_fts [B, H]``,
    ``adj_mat [B, N, N]``, ``hidden [B, N, H]``, all float32.
  """
  rng = np.random.default_rng(seed)
  shape = (BATCH, nb_nodes)
  adj = (rng.random(shape + (nb_nodes,)) < 0.3) | np.eye(nb_nodes, dtype=bool)[None]
  return (rng.normal(size=shape + (HIDDEN,)).astype(np.float32),
          rng.normal(size=shape + (nb_nodes, HIDDEN)).astype(np.float32),
          rng.normal(size=(BATCH, HIDDEN)).astype(np.float32),
          adj.astype(np.float32),
          rng.normal(size=shape + (HIDDEN,)).astype(np.float32))


def _randomised(params: hk.Params, seed: int) -> hk.Params:
  """Every parameter replaced by N(0, 0.5^2) noise, so zero biases, unit
  LayerNorm scales and the gate's constant bias cannot hide a swapped operator."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  noisy = [0.5 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
  return jax.tree_util.tree_unflatten(treedef, noisy)


def _seed_text(name: str) -> str:
  return processors.resolve(name).read_text()


class SeedEquivalenceTest(parameterized.TestCase):
  """Each seed computes exactly what its CLRS counterpart computes."""

  @parameterized.named_parameters(
      *[(f"{name}_ln{use_ln}", name, use_ln) for name in SEED_KINDS for use_ln in (True, False)])
  def test_parameter_tree_matches_clrs(self, name: str, use_ln: bool):
    ref = _transformed(clrs.get_processor_factory(SEED_KINDS[name], use_ln=use_ln,
                                                  nb_triplet_fts=8))
    seed = _transformed(processors.load(name, use_ln=use_ln, nb_triplet_fts=8))
    key = jax.random.PRNGKey(42)
    ref_params = ref.init(key, *_inputs(SIZES[0], seed=0))
    seed_params = seed.init(key, *_inputs(SIZES[0], seed=0))

    self.assertEqual(sorted(seed_params), sorted(ref_params))
    self.assertTrue(all(m.startswith("mpnn_aggr_clrs_processor") for m in seed_params))
    self.assertEqual("layer_norm" in " ".join(seed_params), use_ln)
    chex.assert_trees_all_equal_structs(seed_params, ref_params)
    chex.assert_trees_all_equal_shapes_and_dtypes(seed_params, ref_params)
    # Same key, same values: the seed creates and calls its operators in CLRS's order,
    # so training the seed with a given seed reproduces CLRS's initialisation.
    chex.assert_trees_all_equal(seed_params, ref_params)

  @parameterized.named_parameters(*[(name, name) for name in SEED_KINDS])
  def test_outputs_match_clrs_at_two_graph_sizes(self, name: str):
    ref = _transformed(clrs.get_processor_factory(SEED_KINDS[name], use_ln=True,
                                                  nb_triplet_fts=8))
    seed = _transformed(processors.load(name))
    params = _randomised(ref.init(jax.random.PRNGKey(0), *_inputs(SIZES[0], seed=0)), seed=1)
    for nb_nodes in SIZES:
      inputs = _inputs(nb_nodes, seed=nb_nodes)
      ref_hidden, ref_tri = ref.apply(params, None, *inputs)
      seed_hidden, seed_tri = seed.apply(params, None, *inputs)

      chex.assert_shape(seed_hidden, (BATCH, nb_nodes, HIDDEN))
      chex.assert_type(seed_hidden, jnp.float32)
      chex.assert_trees_all_close(seed_hidden, ref_hidden, rtol=1e-5, atol=1e-5)
      self.assertEqual(seed_tri is None, ref_tri is None)
      if ref_tri is not None:
        chex.assert_shape(seed_tri, (BATCH, nb_nodes, nb_nodes, HIDDEN))
        chex.assert_trees_all_close(seed_tri, ref_tri, rtol=1e-5, atol=1e-5)
      # The inputs matter: a processor that ignored them would pass trivially.
      other_hidden, _ = ref.apply(params, None, *_inputs(nb_nodes, seed=nb_nodes + 100))
      self.assertFalse(np.allclose(ref_hidden, other_hidden))

  def test_pgn_respects_the_adjacency_and_mpnn_does_not(self):
    inputs = _inputs(SIZES[0], seed=3)
    full = inputs[:3] + (np.ones_like(inputs[3]),) + inputs[4:]
    for name, uses_adjacency in (("pgn", True), ("mpnn", False), ("triplet_gmpnn", False)):
      with self.subTest(name):
        seed = _transformed(processors.load(name))
        params = _randomised(seed.init(jax.random.PRNGKey(0), *inputs), seed=2)
        sparse_out, _ = seed.apply(params, None, *inputs)
        full_out, _ = seed.apply(params, None, *full)
        self.assertEqual(not np.allclose(sparse_out, full_out), uses_adjacency)


class SeedProgramTest(parameterized.TestCase):
  """The seed files are well-formed search starting points."""

  def test_the_three_seeds_are_shipped(self):
    self.assertContainsSubset(set(SEED_KINDS), set(processors.seed_names()))

  @parameterized.named_parameters(*[(name, name) for name in SEED_KINDS])
  def test_regions_are_operator_then_action(self, name: str):
    text = _seed_text(name)
    found = regions.parse_regions(text)
    self.assertEqual(list(found), ["OPERATOR", "ACTION"])
    for marker in ("# ===== BEGIN OPERATOR REGION =====", "# ===== END OPERATOR REGION =====",
                   "# ===== BEGIN ACTION REGION =====", "# ===== END ACTION REGION ====="):
      self.assertEqual([line.strip() for line in text.splitlines()].count(marker), 1, marker)

  @parameterized.named_parameters(*[(name, name) for name in SEED_KINDS])
  def test_operator_defines_and_action_uses_every_operator(self, name: str):
    text = _seed_text(name)
    operator = regions.get_region(text, "OPERATOR")
    action = regions.get_region(text, "ACTION")
    outside = regions.skeleton(text, keep=["OPERATOR", "ACTION"])
    # Every parameterised operator is constructed in OPERATOR, none elsewhere.
    self.assertGreaterEqual(len(OPERATOR_CONSTRUCTORS.findall(operator)), 7)
    self.assertEmpty(OPERATOR_CONSTRUCTORS.findall(action))
    self.assertEmpty(OPERATOR_CONSTRUCTORS.findall(outside))
    # ACTION invokes every operator that OPERATOR binds to a name.
    operator_names = re.findall(r"^\s*(\w+) = \(?hk\.", operator, flags=re.MULTILINE)
    self.assertNotEmpty(operator_names)
    for op in operator_names:
      self.assertRegex(action, rf"\b{op}\b", f"{op} is defined in OPERATOR but never used")
    # ACTION holds the combination, masking and aggregation, and produces the outputs.
    for needle in ("adj_mat", "jnp.max(", "nxt_hidden =", "tri_msgs ="):
      self.assertIn(needle, action)
    self.assertGreaterEqual(len(action.strip().splitlines()), 12)

  @parameterized.named_parameters(*[(name, name) for name in SEED_KINDS])
  def test_seed_is_a_standalone_program(self, name: str):
    text = _seed_text(name)
    imported = set()
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, ast.Import):
        imported.update(alias.name.split(".")[0] for alias in node.names)
      elif isinstance(node, ast.ImportFrom):
        self.assertEqual(node.level, 0, "relative import")
        imported.add(node.module.split(".")[0])
    self.assertContainsSubset(imported, ALLOWED_IMPORTS)
    self.assertIn("def get_processor_factory(", text)


if __name__ == "__main__":
  absltest.main()
