"""Tests for ``processors``: loading a seed or a program file as a CLRS factory.

Covers name/path resolution, fresh (uncached) imports, the one-line errors a
user can hit, and the end-to-end contract: the loaded factory goes straight into
``clrs.models.BaselineModel``, builds the same model as CLRS's own factory, and
trains (its processor parameters receive updates).
"""

import pathlib
import shutil
import tempfile
import textwrap

import clrs
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

import processors

SEEDS = ("mpnn", "pgn", "triplet_gmpnn")
HIDDEN = 16

# A tiny valid program: one linear update, tagged as a CLRS processor.
TINY_PROGRAM = textwrap.dedent("""\
    import haiku as hk
    import jax.numpy as jnp

    WIDTH = {width}

    class Tiny(hk.Module):
      def __init__(self, out_size, name="tiny_clrs_processor"):
        super().__init__(name=name)
        self.out_size = out_size

      inf_bias = False
      inf_bias_edge = False

      def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **kwargs):
        z = jnp.concatenate([node_fts, hidden], axis=-1)
        return hk.Linear(self.out_size)(z) + WIDTH * 0, None

    def get_processor_factory(use_ln=True, nb_triplet_fts=8, **unused):
      return lambda out_size: Tiny(out_size)
    """)


def _processor_params(factory: processors.ProcessorFactory, nb_nodes: int = 4) -> hk.Params:
  """Parameters of one processor step of width ``HIDDEN`` on zero inputs ``[1, N, H]``."""

  def step(node_fts, edge_fts, graph_fts, adj_mat, hidden):
    return factory(HIDDEN)(node_fts, edge_fts, graph_fts, adj_mat, hidden)

  n = nb_nodes
  inputs = (np.zeros((1, n, HIDDEN), np.float32), np.zeros((1, n, n, HIDDEN), np.float32),
            np.zeros((1, HIDDEN), np.float32), np.ones((1, n, n), np.float32),
            np.zeros((1, n, HIDDEN), np.float32))
  return hk.transform(step).init(jax.random.PRNGKey(0), *inputs)


def _param_count(params: hk.Params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def _in_processor(module_name: str, name: str, value: jax.Array) -> bool:
  del name, value
  return "clrs_processor" in module_name


class _TempDirTestCase(absltest.TestCase):
  """Gives each test a private folder (absltest's create_tempfile needs parsed absl
  flags, which a pytest run does not provide)."""

  def setUp(self):
    super().setUp()
    self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="spark_clrs_test_"))
    self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

  def write(self, name: str, content: str) -> pathlib.Path:
    path = self.tmp / name
    path.write_text(content)
    return path


class ResolveTest(_TempDirTestCase):

  def test_seed_names_lists_the_shipped_seeds(self):
    names = processors.seed_names()
    self.assertContainsSubset(SEEDS, names)
    self.assertNotIn("__init__", names)
    self.assertEqual(names, sorted(names))

  def test_seed_name_resolves_to_the_seed_file(self):
    for name in SEEDS:
      path = processors.resolve(name)
      self.assertEqual(path, processors.SEEDS_DIR / f"{name}.py")
      self.assertTrue(path.is_file())

  def test_path_resolves_to_itself(self):
    program = self.write("prog.py", TINY_PROGRAM.format(width=1))
    self.assertEqual(processors.resolve(str(program)), program.resolve())
    self.assertEqual(processors.resolve(program), program.resolve())

  def test_unknown_name_names_the_valid_seeds(self):
    with self.assertRaisesRegex(processors.ProgramLoadError,
                                r"unknown program 'no_such_seed'.*triplet_gmpnn"):
      processors.resolve("no_such_seed")

  def test_missing_file_says_it_does_not_exist(self):
    with self.assertRaisesRegex(processors.ProgramLoadError, "does not exist"):
      processors.resolve(self.tmp / "gone.py")

  def test_directory_is_not_a_program(self):
    folder = self.tmp / "prog.py"
    folder.mkdir()
    with self.assertRaisesRegex(processors.ProgramLoadError, "does not exist"):
      processors.resolve(folder)


class LoadTest(_TempDirTestCase):

  def test_seed_by_name_and_by_path_build_the_same_processor(self):
    by_name = _processor_params(processors.load("triplet_gmpnn"))
    by_path = _processor_params(processors.load(str(processors.SEEDS_DIR / "triplet_gmpnn.py")))
    self.assertEqual(sorted(by_name), sorted(by_path))
    self.assertTrue(all(m.startswith("mpnn_aggr_clrs_processor") for m in by_name))
    jax.tree_util.tree_map(np.testing.assert_array_equal, by_name, by_path)

  def test_factory_kwargs_reach_the_program(self):
    with_ln = _processor_params(processors.load("mpnn", use_ln=True))
    without_ln = _processor_params(processors.load("mpnn", use_ln=False))
    self.assertIn("mpnn_aggr_clrs_processor/layer_norm", with_ln)
    self.assertNotIn("mpnn_aggr_clrs_processor/layer_norm", without_ln)
    narrow = _processor_params(processors.load("triplet_gmpnn", nb_triplet_fts=3))
    wide = _processor_params(processors.load("triplet_gmpnn", nb_triplet_fts=8))
    self.assertEqual(narrow["mpnn_aggr_clrs_processor/linear_6"]["w"].shape, (2 * HIDDEN, 3))
    self.assertEqual(wide["mpnn_aggr_clrs_processor/linear_6"]["w"].shape, (2 * HIDDEN, 8))

  def test_each_load_imports_the_file_afresh(self):
    program = self.write("prog.py", TINY_PROGRAM.format(width=1))
    first = processors.load_module(program)
    second = processors.load_module(program)
    self.assertIsNot(first, second)
    program.write_text(TINY_PROGRAM.format(width=7))
    self.assertEqual(processors.load_module(program).WIDTH, 7)
    self.assertEqual(first.WIDTH, 1)

  def test_program_file_with_its_own_processor(self):
    program = self.write("tiny.py", TINY_PROGRAM.format(width=1))
    params = _processor_params(processors.load(program))
    self.assertEqual(list(params), ["tiny_clrs_processor/linear"])
    self.assertEqual(params["tiny_clrs_processor/linear"]["w"].shape, (2 * HIDDEN, HIDDEN))


class LoadErrorTest(_TempDirTestCase):
  """Every failure is a ``ProgramLoadError`` with a one-line message naming the fix."""

  def _load_error(self, source: str, **kwargs) -> str:
    program = self.write("bad.py", source)
    with self.assertRaises(processors.ProgramLoadError) as caught:
      processors.load(program, **kwargs)
    message = str(caught.exception)
    self.assertNotIn("\n", message)
    self.assertNotIn("Traceback", message)
    return message

  def test_program_that_raises_on_import(self):
    message = self._load_error("raise RuntimeError('boom at import')\n")
    self.assertEqual(message, "importing bad.py failed: RuntimeError: boom at import")

  def test_syntax_error(self):
    message = self._load_error("def get_processor_factory(:\n  pass\n")
    self.assertStartsWith(message, "importing bad.py failed: SyntaxError")

  def test_missing_get_processor_factory(self):
    message = self._load_error("import haiku as hk\nFACTORY = None\n")
    self.assertIn("bad.py has no get_processor_factory()", message)
    self.assertIn("factory(out_size) -> Processor", message)

  def test_get_processor_factory_that_is_not_callable(self):
    message = self._load_error("get_processor_factory = 3\n")
    self.assertIn("has no get_processor_factory()", message)

  def test_unaccepted_factory_kwargs(self):
    message = self._load_error("def get_processor_factory(use_ln=True):\n"
                               "  return lambda out_size: None\n", nb_triplet_fts=8)
    self.assertIn("does not accept ['nb_triplet_fts']", message)

  def test_factory_that_is_not_callable(self):
    message = self._load_error("def get_processor_factory(**kwargs):\n  return 42\n")
    self.assertIn("must return a callable factory(out_size)", message)

  def test_non_python_file(self):
    program = self.write("notes.txt", "x = 1\n")
    with self.assertRaisesRegex(processors.ProgramLoadError, "not a Python source file"):
      processors.load(program)


class BaselineModelTest(_TempDirTestCase):
  """The loaded factory is usable directly as ``BaselineModel(processor_factory=...)``."""

  def test_seed_builds_the_clrs_model_and_trains(self):
    sampler, spec = clrs.build_sampler("bfs", num_samples=4, length=5, seed=0)
    feedback = sampler.next(2)

    def build(factory: processors.ProcessorFactory) -> clrs.models.BaselineModel:
      model = clrs.models.BaselineModel(
          spec=spec, dummy_trajectory=feedback, processor_factory=factory,
          hidden_dim=HIDDEN, encode_hints=True, decode_hints=True, learning_rate=1e-3,
          grad_clip_max_norm=1.0, checkpoint_path=str(self.tmp))
      model.init(feedback.features, 0)
      return model

    ours = build(processors.load("triplet_gmpnn"))
    reference = build(clrs.get_processor_factory("triplet_gmpnn", use_ln=True,
                                                 nb_triplet_fts=8))
    # Same whole-model parameter tree, count and (same seed) values as CLRS's own model.
    self.assertEqual(sorted(ours.params), sorted(reference.params))
    self.assertEqual(_param_count(ours.params), _param_count(reference.params))
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours.params, reference.params)

    # One training step updates the processor's parameters (CLRS keeps gradients only
    # for modules tagged clrs_processor). BFS has no graph features, so graph_fts is zero
    # and only the weights of the two graph projections (msg_graph = linear_3 and
    # tri_graph = linear_12) get a zero gradient.
    before = hk.data_structures.filter(_in_processor, ours.params)
    self.assertLen(before, 20)  # linear ... linear_16, mlp/~/linear_0, linear_1, layer_norm
    loss = ours.feedback(jax.random.PRNGKey(1), feedback)
    after = hk.data_structures.filter(_in_processor, ours.params)
    self.assertTrue(np.isfinite(loss))
    unchanged = sorted(f"{module.split('/')[-1]}/{name}" for module, params in before.items()
                       for name, value in params.items()
                       if not bool(jnp.any(value != after[module][name])))
    self.assertEqual(unchanged, ["linear_12/w", "linear_3/w"])


if __name__ == "__main__":
  absltest.main()
