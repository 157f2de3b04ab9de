"""Tests for ``spark_clrs.evaluation.data``: on-the-fly CLRS data, fixed and reproducible eval sets.

Proves that OOD-val and OOD-test are different, disjoint sample sets reproducible from
their seeds, that ``spark``'s OOD-test is exactly CLRS's official test split, and that
training batches follow CLRS's run.py.
"""

import clrs
import numpy as np
from absl.testing import absltest

from spark_clrs.evaluation import data, profiles


def _arrays(eval_set: data.EvalSet) -> list[np.ndarray]:
  out = []
  for batch in eval_set.batches:
    out += [dp.data for dp in (*batch.features.inputs, *batch.features.hints, *batch.outputs)]
    out.append(batch.features.lengths)
  return out


def _input(batch: clrs.Feedback, name: str) -> np.ndarray:
  (dp,) = [dp for dp in batch.features.inputs if dp.name == name]
  return dp.data


def _adjacency(eval_set: data.EvalSet) -> np.ndarray:
  return np.concatenate([_input(b, "adj") for b in eval_set.batches])


class EvalSetsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.profile = profiles.get_profile("quick")
    cls.spec, cls.sets = data.build_eval_sets(cls.profile)

  def test_sizes_and_shapes(self):
    p = self.profile
    for name, length, samples in (("ood_val", p.ood_val_length, p.ood_val_samples),
                                  ("test", p.test_length, p.test_samples),
                                  ("val", p.val_length, p.val_samples)):
      s = self.sets[name]
      self.assertEqual(s.num_samples, samples)
      for batch in s.batches:
        self.assertEqual(batch.features.inputs[0].data.shape[:2], (p.eval_batch_size, length))
    # Sets of one size share one hint length (one predict compile per size).
    self.assertEqual(self.sets["ood_val"].hint_steps, self.sets["test"].hint_steps)

  def test_ood_val_and_ood_test_are_disjoint(self):
    ood_val, test = self.sets["ood_val"], self.sets["test"]
    self.assertNotEqual(ood_val.config.seed, test.config.seed)
    self.assertEqual(data.count_shared_samples(ood_val, test), 0)
    self.assertEqual(data.count_shared_samples(test, test), test.num_samples)
    self.assertFalse(np.array_equal(_adjacency(ood_val), _adjacency(test)))

  def test_reproducible_from_seeds(self):
    _, again = data.build_eval_sets(self.profile)
    for name in data.EVAL_SET_NAMES:
      for a, b in zip(_arrays(self.sets[name]), _arrays(again[name]), strict=True):
        np.testing.assert_array_equal(a, b)

  def test_val_is_drawn_like_training_data_and_test_like_the_test_split(self):
    n = self.profile.test_length
    np.testing.assert_allclose(_input(self.sets["test"].batches[0], "pos")[0],
                               np.arange(n) / n)
    n = self.profile.val_length
    self.assertFalse(np.allclose(_input(self.sets["val"].batches[0], "pos")[0],
                                 np.arange(n) / n))

  def test_spark_ood_test_is_the_official_clrs_test_split(self):
    config = data.eval_set_configs(profiles.get_profile("spark"))["test"]
    _, built = data.build_eval_set("dfs", config, batch_size=32)
    sampler, _ = clrs.build_sampler("dfs", seed=3, num_samples=32, length=64)
    official = sampler.next()
    self.assertEqual(built.num_samples, 32)
    (batch,) = built.batches
    ours_all = (*batch.features.inputs, *batch.features.hints, *batch.outputs)
    theirs_all = (*official.features.inputs, *official.features.hints, *official.outputs)
    for ours, theirs in zip(ours_all, theirs_all, strict=True):
      self.assertEqual(ours.name, theirs.name)
      np.testing.assert_array_equal(ours.data, theirs.data)
    np.testing.assert_array_equal(batch.features.lengths, official.features.lengths)

  def test_pad_hint_steps(self):
    batch = self.sets["val"].batches[0]
    steps = self.sets["val"].hint_steps
    padded = data.pad_hint_steps(batch, steps + 3)
    for old, new in zip(batch.features.hints, padded.features.hints, strict=True):
      self.assertEqual(new.data.shape, (steps + 3,) + old.data.shape[1:])
      np.testing.assert_array_equal(new.data[:steps], old.data)
      self.assertFalse(new.data[steps:].any())
    with self.assertRaisesRegex(ValueError, "cannot pad"):
      data.pad_hint_steps(batch, 1)


class TrainStreamTest(absltest.TestCase):

  def test_deterministic_per_seed_and_fixed_shapes(self):
    _, a = data.make_train_stream("dfs", (5,), 4, seed=0)
    _, b = data.make_train_stream("dfs", (5,), 4, seed=0)
    _, c = data.make_train_stream("dfs", (5,), 4, seed=1)
    first_a, first_b, first_c = next(a), next(b), next(c)
    np.testing.assert_array_equal(_input(first_a, "adj"), _input(first_b, "adj"))
    self.assertFalse(np.array_equal(_input(first_a, "adj"), _input(first_c, "adj")))
    second = next(a)
    self.assertEqual(second.features.hints[0].data.shape,
                     first_a.features.hints[0].data.shape)
    self.assertEqual(_input(second, "adj").shape, (4, 5, 5))

  def test_cycles_through_sizes(self):
    _, stream = data.make_train_stream("dfs", (4, 6), 2, seed=0)
    sizes = [_input(next(stream), "adj").shape[1] for _ in range(4)]
    self.assertEqual(sizes, [4, 6, 4, 6])

  def test_run_py_sampler_settings(self):
    p = data.train_sampler_kwargs("dfs")["p"]
    np.testing.assert_allclose(p, np.arange(1, 10) / 10)
    np.testing.assert_allclose(data.train_sampler_kwargs("bridges")["p"], np.array(p) / 2)
    self.assertEqual(data.train_sampler_kwargs("kmp_matcher")["length_needle"], -8)
    self.assertEqual(data.train_lengths_for("kmp_matcher", (4, 16)), (20,))

  def test_unknown_algorithm(self):
    with self.assertRaisesRegex(ValueError, "unknown algorithm"):
      data.make_train_stream("sorting", (4,), 2, seed=0)


if __name__ == "__main__":
  absltest.main()
