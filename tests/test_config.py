"""Config tests: absl flags round-trip through config.flags; validation; the shipped flagfiles."""

import pathlib
import tempfile

from absl import flags
from absl.testing import absltest

from spark_clrs import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent


class ConfigTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = pathlib.Path(tmp.name)

  def test_flags_round_trip_through_config_flags(self):
    cfg = config_lib.SearchConfig(
        strategy="spark", iterations=7, seed=3, output=str(self.tmp / "run"),
        factors=("ACTION", "OPERATOR"), profile="quick",
        profile_overrides=("train_steps=5", "hidden=8"), eval_seeds=(1, 2),
        freeze_non_selected_region=False, sar_output="region", llm_temperature=0.25,
        llm_model="openai/x", feature_dims=("macs",), migration_rate=0.3)
    path = self.tmp / "config.flags"
    path.write_text(cfg.to_flags())
    self.assertEqual(config_lib.parse_flagfile(str(path)), cfg)
    # And through a real absl FlagValues with a command-line override after the file.
    fv = flags.FlagValues()
    config_lib.define_flags(fv)
    fv(["prog", f"--flagfile={path}", "--iterations=9"])
    self.assertEqual(config_lib.from_flags(fv), cfg.replace(iterations=9))

  def test_every_field_has_a_flag_with_help(self):
    fv = flags.FlagValues()
    config_lib.define_flags(fv)
    for name in config_lib.SearchConfig.__dataclass_fields__:
      self.assertIn(name, fv)
      self.assertGreater(len(fv[name].help), 20, name)
    self.assertEqual(config_lib.from_flags(_parsed(fv)), config_lib.SearchConfig())

  def test_validation_is_one_line_naming_the_flag(self):
    cases = {
        "exploration_ratio": dict(exploration_ratio=0.5),
        "--factors": dict(factors=("action",)),
        "--num_islands": dict(num_islands=0),
        "--strategy": dict(strategy="nope"),
        "--profile_overrides": dict(profile_overrides=("train_steps",)),
        "--parallel_evaluations": dict(parallel_evaluations=0),
    }
    for needle, kwargs in cases.items():
      with self.assertRaises(config_lib.ConfigError) as ctx:
        config_lib.SearchConfig(**kwargs)
      self.assertIn(needle, str(ctx.exception))
      self.assertNotIn("\n", str(ctx.exception))
    with self.assertRaisesRegex(config_lib.ConfigError, "unknown setting.*iteration"):
      config_lib.from_mapping({"iteration": 3})

  def test_from_mapping_converts_lists_and_numbers(self):
    cfg = config_lib.from_mapping({"factors": ["ACTION"], "eval_seeds": "0,1",
                                   "llm_temperature": 1, "profile_overrides": ["hidden=8"]})
    self.assertEqual(cfg.factors, ("ACTION",))
    self.assertEqual(cfg.eval_seeds, (0, 1))
    self.assertEqual(cfg.training_seeds, (0, 1))
    self.assertIsInstance(cfg.llm_temperature, float)

  def test_run_defining_differences(self):
    a = config_lib.SearchConfig()
    b = a.replace(seed=5, iterations=3, profile="quick", llm_timeout=5.0)
    diffs = config_lib.run_defining_differences(a, b)
    self.assertLen(diffs, 2)
    self.assertTrue(any(d.startswith("--seed") for d in diffs))
    self.assertTrue(any(d.startswith("--profile") for d in diffs))

  def test_seed_program_and_final_seeds(self):
    from spark_clrs.search import resolve

    cfg = config_lib.SearchConfig()
    self.assertEqual((cfg.seed_program_seeds, cfg.final_top_k, cfg.final_seeds), (3, 3, 3))
    self.assertEqual(resolve.seed_program_seeds(cfg), (0, 1, 2))
    self.assertEqual(resolve.seed_program_seeds(cfg.replace(seed=5, seed_program_seeds=2)),
                     (5, 6))
    # The candidates' seeds come first; with enough of them nothing is added.
    self.assertEqual(resolve.seed_program_seeds(cfg.replace(eval_seeds=(7, 3))), (7, 3, 8))
    self.assertEqual(resolve.seed_program_seeds(cfg.replace(fitness_seeds=4)), (0, 1, 2, 3))
    with self.assertRaisesRegex(config_lib.ConfigError, "--seed_program_seeds=0 must be at"):
      config_lib.SearchConfig(seed_program_seeds=0)
    with self.assertRaisesRegex(config_lib.ConfigError, "--final_top_k=-1 must be 0 or more"):
      config_lib.SearchConfig(final_top_k=-1)
    # Changing the final re-evaluation between invocations is allowed (a resume re-plans it).
    self.assertEqual(config_lib.run_defining_differences(cfg, cfg.replace(final_top_k=5,
                                                                          final_seeds=2)), [])
    self.assertLen(config_lib.run_defining_differences(cfg, cfg.replace(seed_program_seeds=5)),
                   1)

  def test_profile_overrides_resolve_in_one_place(self):
    from spark_clrs.search import resolve

    profile = resolve.profile_of(config_lib.SearchConfig(
        profile="quick", profile_overrides=("train_steps=5", "train_lengths=4:8")))
    self.assertEqual((profile.train_steps, profile.train_lengths), (5, (4, 8)))
    with self.assertRaisesRegex(config_lib.ConfigError, "train_stepz.*train_steps"):
      resolve.profile_of(config_lib.SearchConfig(profile_overrides=("train_stepz=3",)))
    with self.assertRaisesRegex(config_lib.ConfigError, "'x' is not a valid int"):
      resolve.profile_of(config_lib.SearchConfig(profile_overrides=("train_steps=x",)))

  def test_shipped_flagfiles(self):
    with _chdir(ROOT):
      dfs = config_lib.parse_flagfile("dfs.flags")
      quick = config_lib.parse_flagfile("quick.flags")
    self.assertEqual((dfs.profile, dfs.iterations, dfs.strategy), ("spark", 100, "spark"))
    self.assertEqual(quick.profile, "quick")
    self.assertGreaterEqual(quick.iterations, 8)
    self.assertEqual(quick.strategy, dfs.strategy)
    self.assertNotEqual(quick.output, dfs.output)


def _parsed(fv):
  fv(["prog"])
  return fv


class _chdir:

  def __init__(self, path):
    self.path = path

  def __enter__(self):
    import os
    self.old = os.getcwd()
    os.chdir(self.path)

  def __exit__(self, *exc):
    import os
    os.chdir(self.old)


if __name__ == "__main__":
  absltest.main()
