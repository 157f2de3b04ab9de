"""Tests for ``spark_clrs.evaluator`` and its CLI ``python -m spark_clrs.evaluate``.

End to end on the Triplet-GMPNN seed at a tiny override (3 steps, hidden 16, two
seeds) through the real sandboxed child: one JSON object with every SPEC §4 metric, and
a ``param_count`` equal to the BaselineModel built with CLRS's own triplet_gmpnn
factory. Broken programs give one-line errors and a non-zero exit.
"""

import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

import clrs
import jax
import pytest
from absl.testing import absltest

import processors
from spark_clrs import data, evaluator, macs, profiles

REPO = pathlib.Path(__file__).resolve().parent.parent
SEED = REPO / "seeds" / "triplet_gmpnn.py"
TINY = dict(train_steps=3, hidden=16)
METRIC_KEYS = (
    "ood_val_acc", "ood_acc", "val_acc", "ood_val_acc_std", "ood_acc_std", "val_acc_std",
    "ood_val_acc_per_seed", "ood_acc_per_seed", "val_acc_per_seed", "param_count",
    "processor_param_count", "macs", "macs_nb_nodes", "compile_seconds", "train_seconds",
    "step_seconds", "eval_seconds", "init_seconds", "data_seconds", "total_seconds",
    "peak_rss_mb", "cpu_seconds", "eval_seconds_by_set", "final_loss_per_seed", "seeds",
    "profile", "profile_config")


def reference_param_count(profile: profiles.EvalProfile) -> int:
  """Parameters of the BaselineModel built with CLRS's own triplet_gmpnn factory."""
  spec, sets = data.build_eval_sets(profile)
  dummy = sets["val"].batches[0]
  factory = clrs.get_processor_factory("triplet_gmpnn", use_ln=True, nb_triplet_fts=8)
  model = evaluator.build_model(profile, factory, spec, dummy, checkpoint_path="/tmp")
  params = jax.eval_shape(
      lambda key: model.net_fn.init(key, [dummy.features], True, algorithm_index=-1,
                                    return_hints=False, return_all_outputs=False),
      jax.random.PRNGKey(0))
  return macs.param_count(params)


def run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "spark_clrs.evaluate", *args],
                        capture_output=True, text=True, cwd=REPO, timeout=900, check=False)


class EvaluatorTest(absltest.TestCase):

  def check_metrics(self, metrics: dict, profile: profiles.EvalProfile, seeds: list[int]):
    for key in METRIC_KEYS:
      self.assertIn(key, metrics)
    self.assertEqual(metrics["seeds"], seeds)
    for key in evaluator.ACCURACY_KEYS:
      self.assertBetween(metrics[key], 0.0, 1.0)
      self.assertLen(metrics[f"{key}_per_seed"], len(seeds))
      self.assertGreaterEqual(metrics[f"{key}_std"], 0.0)
    self.assertTrue(all(math.isfinite(x) for x in metrics["final_loss_per_seed"]))
    self.assertEqual(metrics["param_count"], reference_param_count(profile))
    cost = macs.processor_cost(processors.load("triplet_gmpnn"), hidden=profile.hidden)
    self.assertEqual(metrics["processor_param_count"], cost.param_count)
    self.assertEqual((metrics["macs"], metrics["macs_nb_nodes"]), (cost.macs, 16))
    self.assertGreater(metrics["param_count"], metrics["processor_param_count"])
    self.assertGreater(metrics["compile_seconds"], 0.0)
    self.assertGreater(metrics["peak_rss_mb"], 0.0)
    for key in ("train_seconds", "eval_seconds", "init_seconds", "data_seconds"):
      self.assertGreaterEqual(metrics[key], 0.0)

  def test_cli_prints_one_json_object(self):
    proc = run_cli(str(SEED), "--profile=quick", "--seeds=0,1", "--train_steps=3",
                   "--hidden=16")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    lines = proc.stdout.strip().splitlines()
    self.assertLen(lines, 1)
    metrics = json.loads(lines[0])
    self.assertIsInstance(metrics, dict)
    self.check_metrics(metrics, profiles.get_profile("quick", **TINY), [0, 1])
    self.assertGreater(metrics["startup_seconds"], 0.0)
    self.assertEqual(metrics["device"], "cpu")

  def test_cli_program_without_factory(self):
    with tempfile.TemporaryDirectory() as tmp:
      program = pathlib.Path(tmp) / "no_factory.py"
      program.write_text("import haiku as hk\n")
      proc = run_cli(str(program), "--train_steps=1")
    self.assertEqual(proc.returncode, 2)
    self.assertEqual(proc.stdout, "")
    last = proc.stderr.strip().splitlines()[-1]
    self.assertRegex(last, r"^error: .*no_factory\.py has no get_processor_factory\(\)")

  def test_cli_unknown_profile(self):
    proc = run_cli("triplet_gmpnn", "--profile=fast")
    self.assertEqual(proc.returncode, 2)
    self.assertRegex(proc.stderr.strip().splitlines()[-1],
                     r"^error: unknown profile 'fast'; use one of")

  def test_missing_program_is_refused_before_any_child_starts(self):
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(processors.ProgramLoadError, "does not exist"):
        evaluator.evaluate(pathlib.Path(tmp) / "missing.py", profiles.get_profile("quick"),
                           [0], workdir=pathlib.Path(tmp))

  def test_sandboxed_program_that_raises(self):
    with tempfile.TemporaryDirectory() as tmp:
      program = pathlib.Path(tmp) / "raises.py"
      program.write_text(textwrap.dedent("""\
          raise RuntimeError("broken on purpose")
          """))
      result = evaluator.evaluate(program, profiles.get_profile("quick", **TINY), [0],
                                  workdir=pathlib.Path(tmp) / "work")
    self.assertEqual(result.status, "error")
    self.assertTrue(result.is_program_error)
    self.assertIn("RuntimeError: broken on purpose", result.reason)
    self.assertNotIn("\n", result.reason)
    self.assertIsNone(result.metrics)

  def test_one_device_is_enforced(self):
    script = textwrap.dedent("""\
        import jax
        from spark_clrs import evaluator
        evaluator.configure_jax()
        print(jax.local_device_count())
        """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, cwd=REPO, timeout=300, check=False)
    self.assertEqual(proc.stdout.strip(), "1", proc.stderr[-2000:])

  def test_no_seeds(self):
    with self.assertRaisesRegex(ValueError, "no training seeds"):
      evaluator.evaluate_program(str(SEED), profiles.get_profile("quick"), [])

  @pytest.mark.slow
  def test_in_process_with_best_checkpoint_selection(self):
    profile = profiles.get_profile("quick", train_steps=4, hidden=16, eval_every=2)
    metrics = evaluator.evaluate_program(str(SEED), profile, [0])
    self.check_metrics(metrics, profile, [0])


if __name__ == "__main__":
  absltest.main()
