"""Tests for the evaluation (``evaluation.evaluate``, ``trainer``, ``in_process``) and its CLI.

End to end on the Triplet-GMPNN seed at a tiny override (3 steps, hidden 16, two
seeds) through the real jailed child: one JSON object with every SPEC §4 metric,
per-graph accuracies that average to each seed's accuracy, and a ``param_count`` equal to
the BaselineModel built with CLRS's own triplet_gmpnn factory. Broken programs give
one-line errors and a non-zero exit; ``--in_process`` runs only when asked for as unsafe,
and says so.

Trusted scoring (slow suite): the jailed evaluation, scored in the parent from the
child's predictions, gives exactly the numbers of the in-process evaluation (which
scores CLRS's predictions on the full sets in memory), also with best-checkpoint
selection and with OOD-test deferred to ``evaluate_test``; a program whose hidden state
is NaN only at the OOD size fails with a ``nonfinite`` reason.
"""

import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap

import clrs
import jax
import pytest
from absl.testing import absltest

import processors
from spark_clrs.evaluation import data, evaluate, in_process, macs, profiles, protocol, trainer

REPO = pathlib.Path(__file__).resolve().parent.parent
SEED = REPO / "seeds" / "triplet_gmpnn.py"
TINY = dict(train_steps=3, hidden=16)
METRIC_KEYS = (
    "ood_val_acc", "ood_acc", "val_acc", "ood_val_acc_std", "ood_acc_std", "val_acc_std",
    "ood_val_acc_per_seed", "ood_acc_per_seed", "val_acc_per_seed", "param_count",
    "processor_param_count", "macs", "macs_nb_nodes", "compile_seconds", "train_seconds",
    "step_seconds", "eval_seconds", "init_seconds", "data_seconds", "total_seconds",
    "peak_rss_mb", "cpu_seconds", "eval_seconds_by_set", "final_loss_per_seed", "seeds",
    "profile", "profile_config", "ood_val_acc_ci", "ood_acc_ci", "val_acc_ci",
    "ood_val_acc_ci_per_seed", "ood_acc_ci_per_seed", "val_acc_ci_per_seed", "macs_source",
    "ood_val_acc_per_graph", "ood_acc_per_graph", "val_acc_per_graph")
ACCURACY_FIELDS = tuple(f"{key}{suffix}" for key in protocol.ACCURACY_KEYS
                        for suffix in ("", "_std", "_per_seed", "_ci", "_ci_per_seed",
                                       "_per_graph"))


def reference_param_count(profile: profiles.EvalProfile) -> int:
  """Parameters of the BaselineModel built with CLRS's own triplet_gmpnn factory."""
  spec, sets = data.build_eval_sets(profile)
  dummy = sets["val"].batches[0]
  factory = clrs.get_processor_factory("triplet_gmpnn", use_ln=True, nb_triplet_fts=8)
  model = trainer.build_model(profile, factory, spec, dummy, checkpoint_path="/tmp")
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
    sizes = {c.name: c.num_samples for c in data.eval_set_configs(profile).values()}
    for key in protocol.ACCURACY_KEYS:
      self.assertBetween(metrics[key], 0.0, 1.0)
      self.assertLen(metrics[f"{key}_per_seed"], len(seeds))
      rows = metrics[f"{key}_per_graph"]
      self.assertEqual([len(r) for r in rows], [sizes[protocol.SET_FOR_KEY[key]]] * len(seeds))
      for row, value in zip(rows, metrics[f"{key}_per_seed"], strict=True):
        self.assertAlmostEqual(sum(row) / len(row), value, places=6)
      self.assertGreaterEqual(metrics[f"{key}_std"], 0.0)
      self.assertBetween(metrics[f"{key}_ci"], 0.0, 0.5)
      self.assertLen(metrics[f"{key}_ci_per_seed"], len(seeds))
    self.assertIn(metrics["macs_source"], ("check", "in_process_jaxpr"))
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
                   "--hidden=16", "--algorithm=bfs")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    lines = proc.stdout.strip().splitlines()
    self.assertLen(lines, 1)
    metrics = json.loads(lines[0])
    self.assertIsInstance(metrics, dict)
    self.check_metrics(metrics, profiles.get_profile("quick", algorithm="bfs", **TINY),
                       [0, 1])
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

  def test_cli_in_process_only_when_asked_for_as_unsafe(self):
    refused = run_cli(str(SEED), "--in_process", "--train_steps=1", "--hidden=8")
    self.assertEqual(refused.returncode, 2)
    self.assertEqual(refused.stdout, "")
    self.assertRegex(refused.stderr.strip().splitlines()[-1],
                     r"^error: --in_process runs the program in this process with no jail; "
                     r"add --unsafe_no_jail")
    proc = run_cli(str(SEED), "--in_process", "--unsafe_no_jail", "--train_steps=1",
                   "--hidden=8", "--algorithm=bfs")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    warnings = [line for line in proc.stderr.splitlines() if "UNSAFE" in line]
    self.assertEqual(warnings, ["warning: UNSAFE: triplet_gmpnn.py runs in this process "
                                "WITHOUT the jail (--in_process --unsafe_no_jail)"])
    self.assertEqual(json.loads(proc.stdout)["macs_source"], "in_process_jaxpr")

  def test_cli_unknown_profile(self):
    proc = run_cli("triplet_gmpnn", "--profile=fast")
    self.assertEqual(proc.returncode, 2)
    self.assertRegex(proc.stderr.strip().splitlines()[-1],
                     r"^error: unknown profile 'fast'; use one of")

  def test_missing_program_is_refused_before_any_child_starts(self):
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(processors.ProgramLoadError, "does not exist"):
        evaluate.evaluate(pathlib.Path(tmp) / "missing.py", profiles.get_profile("quick"),
                           [0], workdir=pathlib.Path(tmp))

  def test_sandboxed_program_that_raises(self):
    with tempfile.TemporaryDirectory() as tmp:
      program = pathlib.Path(tmp) / "raises.py"
      program.write_text(textwrap.dedent("""\
          raise RuntimeError("broken on purpose")
          """))
      result = evaluate.evaluate(program, profiles.get_profile("quick", **TINY), [0],
                                  workdir=pathlib.Path(tmp) / "work")
    self.assertEqual(result.status, "error")
    self.assertTrue(result.is_program_error)
    self.assertIn("RuntimeError: broken on purpose", result.reason)
    self.assertNotIn("\n", result.reason)
    self.assertIsNone(result.metrics)

  def test_one_device_is_enforced(self):
    script = textwrap.dedent("""\
        import jax
        from spark_clrs.evaluation import trainer
        trainer.configure_jax()
        print(jax.local_device_count())
        """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, cwd=REPO, timeout=300, check=False)
    self.assertEqual(proc.stdout.strip(), "1", proc.stderr[-2000:])

  def test_the_jail_side_imports_no_llm_or_search_code(self):
    script = ("import sys, spark_clrs.evaluation.trainer\n"
              "print(sorted(m for m in sys.modules if m.startswith(('spark_clrs.llm', "
              "'spark_clrs.proposers', 'spark_clrs.search', 'spark_clrs.analysis', 'litellm'))))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=300, check=False)
    self.assertEqual(proc.stdout.strip(), "[]", proc.stderr[-2000:])

  def test_no_seeds(self):
    with self.assertRaisesRegex(ValueError, "no training seeds"):
      in_process.evaluate_program(str(SEED), profiles.get_profile("quick"), [])

  @pytest.mark.slow
  def test_in_process_with_best_checkpoint_selection(self):
    profile = profiles.get_profile("quick", train_steps=4, hidden=16, eval_every=2)
    metrics = in_process.evaluate_program(str(SEED), profile, [0])
    self.check_metrics(metrics, profile, [0])

  def test_evaluate_test_needs_saved_parameters(self):
    with tempfile.TemporaryDirectory() as tmp:
      result = evaluate.evaluate_test(SEED, profiles.get_profile("quick", **TINY), [0, 1],
                                       workdir=pathlib.Path(tmp))
    self.assertEqual(result.status, "error")
    self.assertRegex(result.reason, r"^error: no saved parameters for seed\(s\) \[0, 1\] .*"
                     r"score_test=False")
    self.assertIsNone(result.metrics)


def unjailed_metrics(*flags: str) -> dict:
  """``--in_process --unsafe_no_jail`` metrics from a fresh interpreter: JAX configured
  there exactly as in a jailed child (fast compilation, one device), which this test
  process, whose JAX other tests started, cannot promise."""
  proc = run_cli(str(SEED), "--profile=quick", "--in_process", "--unsafe_no_jail", *flags)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout)


def _same_numbers(test: absltest.TestCase, got: dict, want: dict, keys) -> None:
  for key in keys:
    test.assertEqual(got[key], want[key], key)


@pytest.mark.slow
class TrustedScoringTest(absltest.TestCase):
  """The jailed, parent-scored evaluation against the in-process one (same seeds)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix="trusted_scoring_"))
    cls.profile = profiles.get_profile("quick", **TINY)
    cls.seeds = [0, 1]
    cls.jailed = evaluate.evaluate(SEED, cls.profile, cls.seeds, workdir=cls.tmp / "full")
    cls.deferred = evaluate.evaluate(SEED, cls.profile, cls.seeds, workdir=cls.tmp / "defer",
                                      score_test=False)
    cls.test_only = evaluate.evaluate_test(SEED, cls.profile, cls.seeds,
                                            workdir=cls.tmp / "defer")
    cls.in_process = unjailed_metrics("--seeds=0,1", "--train_steps=3", "--hidden=16")

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_jailed_numbers_equal_in_process_numbers(self):
    self.assertTrue(self.jailed.ok, self.jailed.reason)
    _same_numbers(self, self.jailed.metrics, self.in_process,
                  ACCURACY_FIELDS + ("param_count", "processor_param_count", "macs",
                                     "macs_nb_nodes", "final_loss_per_seed"))
    self.assertEqual(self.jailed.metrics["macs_source"], "check")

  def test_deferred_test_scoring(self):
    self.assertTrue(self.deferred.ok, self.deferred.reason)
    self.assertIsNone(self.deferred.metrics["ood_acc"])
    self.assertIsNone(self.deferred.metrics["ood_acc_ci"])
    self.assertNotIn("test", self.deferred.metrics["eval_seconds_by_set"])
    _same_numbers(self, self.deferred.metrics, self.in_process,
                  [f for f in ACCURACY_FIELDS if not f.startswith("ood_acc")])
    self.assertTrue(self.test_only.ok, self.test_only.reason)
    _same_numbers(self, self.test_only.metrics, self.in_process,
                  [f for f in ACCURACY_FIELDS if f.startswith("ood_acc")])
    self.assertEqual(list(self.test_only.metrics["eval_seconds_by_set"]), ["test"])

  def test_best_checkpoint_selection_without_val_labels_in_the_jail(self):
    profile = profiles.get_profile("quick", train_steps=3, hidden=16, eval_every=1)
    work = self.tmp / "select"
    jailed = evaluate.evaluate(SEED, profile, [0], workdir=work)
    unjailed = unjailed_metrics("--seeds=0", "--train_steps=3", "--hidden=16", "--eval_every=1")
    self.assertTrue(jailed.ok, jailed.reason)
    _same_numbers(self, jailed.metrics, unjailed, ACCURACY_FIELDS + ("param_count",))
    (step,) = jailed.metrics["best_step_per_seed"]
    self.assertEqual(sorted(os.listdir(work / "exchange" / "ckpt")),
                     [f"seed0_step{step}.params.npz"])

  def test_nan_hidden_state_at_the_ood_size_fails(self):
    program = self.tmp / "nan_at_16.py"
    program.write_text(SEED.read_text().replace(
        "    # ===== END ACTION REGION =====",
        "    nxt_hidden = nxt_hidden * (jnp.nan if n >= 16 else 1.0)\n"
        "    # ===== END ACTION REGION =====", 1))
    result = evaluate.evaluate(program, profiles.get_profile("quick", train_steps=1,
                                                              hidden=16), [0],
                                workdir=self.tmp / "nan")
    self.assertEqual(result.status, "error")
    self.assertRegex(result.reason, r"^error: nonfinite: the model's raw outputs are NaN "
                     r"or infinite \(set\|seed: ood_val\|0, test\|0\)$")
    self.assertNotIn("ood_val_acc", result.metrics)


if __name__ == "__main__":
  absltest.main()
