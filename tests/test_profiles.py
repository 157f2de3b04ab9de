"""Tests for ``spark_clrs.evaluation.profiles``: the SPEC §4 protocols, overrides and their errors."""

import json

from absl.testing import absltest

from spark_clrs.evaluation import profiles


class ProfilesTest(absltest.TestCase):

  def test_three_named_profiles(self):
    self.assertEqual(sorted(profiles.PROFILES), ["clrs", "quick", "spark"])
    for name, profile in profiles.PROFILES.items():
      self.assertEqual(profile.name, name)
      self.assertEqual(profiles.get_profile(name), profile)

  def test_spark_is_the_paper_setting(self):
    p = profiles.get_profile("spark")
    self.assertEqual((p.algorithm, p.train_lengths, p.train_steps, p.hidden, p.batch_size),
                     ("dfs", (11,), 300, 128, 32))
    self.assertEqual((p.ood_val_length, p.ood_val_samples), (64, 32))
    # OOD-test is the official CLRS test split: seed 3, 32 graphs, n=64.
    self.assertEqual((p.test_length, p.test_samples, p.test_seed), (64, 32, 3))
    self.assertNotEqual(p.ood_val_seed, p.test_seed)
    self.assertEqual((p.learning_rate, p.grad_clip, p.hint_mode),
                     (1e-3, 1.0, "encoded_decoded"))

  def test_clrs_is_the_ibarz_protocol(self):
    p = profiles.get_profile("clrs")
    self.assertEqual(p.train_lengths, (4, 7, 11, 13, 16))
    self.assertEqual((p.train_steps, p.hidden, p.batch_size), (10000, 128, 32))
    self.assertEqual((p.val_length, p.test_length, p.test_seed), (16, 64, 3))
    self.assertGreater(p.eval_every, 0)
    self.assertTrue(p.scale_eval_samples)

  def test_quick_is_small(self):
    p = profiles.get_profile("quick")
    self.assertLessEqual(p.train_steps, 100)
    self.assertLessEqual(p.hidden, 32)
    self.assertLess(max(p.train_lengths), p.ood_val_length)
    self.assertNotEqual(p.ood_val_seed, p.test_seed)

  def test_quick_sets_are_sized_against_the_seed_noise(self):
    # Measured (issue 12): the seed program's 95% bootstrap half-width over 16 graphs was
    # 0.023 against a std over 5 training seeds of 0.007; 128 graphs give 0.0092 <= 0.0094.
    p = profiles.get_profile("quick")
    self.assertGreaterEqual(p.ood_val_samples, 128)
    self.assertGreaterEqual(p.test_samples, 128)
    self.assertEqual(p.ood_val_length, 16)  # Small graphs keep the larger sets cheap.

  def test_overrides(self):
    p = profiles.get_profile("quick", train_steps=3, hidden=8, train_lengths=[5, 6],
                             batch_size=None)
    self.assertEqual((p.train_steps, p.hidden, p.train_lengths), (3, 8, (5, 6)))
    self.assertEqual(p.batch_size, profiles.PROFILES["quick"].batch_size)
    self.assertEqual(p.name, "quick")

  def test_unknown_profile(self):
    with self.assertRaisesRegex(ValueError, r"unknown profile 'fast'.*clrs.*quick.*spark"):
      profiles.get_profile("fast")

  def test_unknown_field_names_the_valid_ones(self):
    with self.assertRaisesRegex(ValueError, r"unknown profile field\(s\) \['hiden'\].*hidden"):
      profiles.get_profile("quick", hiden=3)

  def test_invalid_values(self):
    with self.assertRaisesRegex(ValueError, "eval_batch_size"):
      profiles.get_profile("quick", eval_batch_size=5)
    with self.assertRaisesRegex(ValueError, "train_steps=0 must be >= 1"):
      profiles.get_profile("quick", train_steps=0)
    with self.assertRaisesRegex(ValueError, "OOD-val and OOD-test would be the same set"):
      profiles.get_profile("spark", ood_val_seed=3)
    with self.assertRaisesRegex(ValueError, "train_lengths"):
      profiles.get_profile("quick", train_lengths=())
    with self.assertRaisesRegex(ValueError, "hint_mode"):
      profiles.get_profile("quick", hint_mode="all")

  def test_unknown_algorithm(self):
    with self.assertRaisesRegex(ValueError, "unknown algorithm 'dfss'"):
      profiles.get_profile("quick", algorithm="dfss")
    self.assertEqual(profiles.get_profile("quick", algorithm="bfs").algorithm, "bfs")

  def test_json_round_trip(self):
    for profile in profiles.PROFILES.values():
      restored = profiles.EvalProfile(**json.loads(json.dumps(profile.to_dict())))
      self.assertEqual(restored, profile)


if __name__ == "__main__":
  absltest.main()
