"""Tests for ``spark_clrs.checks`` and the ``spark_clrs.check`` CLI.

The corpus under ``tests/data/candidates/`` (see its ``corpus.py``) holds broken programs
for every stage and valid edits of each factor; every broken one must be rejected at its
expected stage and every valid one must pass. The jailed stages of the whole corpus run
through pre-started single-use jailed check workers (one per candidate).
"""

import collections
import dataclasses
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import haiku as hk
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest

import processors
from spark_clrs import checks
from spark_clrs.checks import program
from spark_clrs.evaluation import cost_grid, macs, profiles
from spark_clrs.isolation import sandbox
from spark_clrs.programs import regions

REPO = pathlib.Path(__file__).resolve().parent.parent
CORPUS_PY = REPO / "tests" / "data" / "candidates" / "corpus.py"
# Generous: a valid candidate takes ~1-4 s on a loaded 2-core machine; the corpus case
# that loops forever at trace time costs exactly this.
CORPUS_LIMITS = sandbox.Limits(timeout_s=30.0, memory_mb=4096, max_output_bytes=1 << 20)


def load_corpus():
  spec = importlib.util.spec_from_file_location("spark_candidate_corpus", CORPUS_PY)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module.load_corpus()


def seed_text(name: str) -> str:
  return processors.resolve(name).read_text()


class StaticChecksTest(absltest.TestCase):
  """parse, scope and policy: text only, no child process."""

  def test_seed_passes_static_stages(self):
    text = seed_text("triplet_gmpnn")
    self.assertIsNone(checks.static_checks(text, parent_text=text, scope=["ACTION"]))

  def test_syntax_error_names_the_line(self):
    text = seed_text("mpnn").replace("hk.Linear(mid_size)", "hk.Linear(mid_size", 1)
    verdict = checks.static_checks(text)
    self.assertEqual(verdict.stage, "parse")
    self.assertRegex(verdict.reason, r"^parse: line \d+: ")
    self.assertFalse(verdict.feasible)

  def test_program_without_regions_is_a_parse_error(self):
    verdict = checks.static_checks("x = 1\n")
    self.assertEqual(verdict.stage, "parse")
    self.assertIn("no factor regions", verdict.reason)

  def test_scope_is_skipped_without_parent(self):
    text = seed_text("pgn").replace("BIG_NUMBER = 1e6", "BIG_NUMBER = 1e7")
    self.assertIsNone(checks.static_checks(text))

  def test_out_of_scope_edit_is_rejected(self):
    parent = seed_text("pgn")
    child = regions.replace_region(parent, "OPERATOR", "    pass\n")
    verdict = checks.static_checks(child, parent_text=parent, scope=["ACTION"])
    self.assertEqual(verdict.stage, "scope")
    self.assertEqual(verdict.reason, "scope: changed outside ACTION: region OPERATOR; edit "
                     "only the selected region")
    self.assertIsNone(checks.static_checks(child, parent_text=parent, scope=["OPERATOR"]))

  def test_without_scope_only_the_skeleton_is_frozen(self):
    parent = seed_text("pgn")
    child = regions.replace_region(parent, "OPERATOR", "    pass\n")
    self.assertIsNone(checks.static_checks(child, parent_text=parent))
    child = child.replace("BIG_NUMBER = 1e6", "BIG_NUMBER = 1e7")
    verdict = checks.static_checks(child, parent_text=parent)
    self.assertEqual(verdict.stage, "scope")
    self.assertIn("read-only line", verdict.reason)

  def test_unknown_scope_is_a_usage_error(self):
    parent = seed_text("pgn")
    with self.assertRaisesRegex(ValueError, "unknown scope GATE; the parent's factors are "
                                "OPERATOR, ACTION"):
      checks.static_checks(parent, parent_text=parent, scope=["GATE"])

  def test_policy_reason_is_the_first_violation(self):
    parent = seed_text("mpnn")
    body = "    import os\n    x = eval('1')\n" + regions.get_region(parent, "ACTION")
    child = regions.replace_region(parent, "ACTION", body)
    verdict = checks.static_checks(child, parent_text=parent, scope=["ACTION"])
    self.assertEqual(verdict.stage, "policy")
    # The first violation's text is the policy's own (tests/test_policy.py); here: its place.
    self.assertRegex(verdict.reason, r"^policy: line \d+: import os\b.* \(\+1 more\)$")


class VerdictTest(absltest.TestCase):

  def test_json_has_the_spec_keys(self):
    verdict = checks.Verdict(True, "ok", "", 10, 20)
    self.assertEqual(json.loads(verdict.to_json()), {
        "feasible": True, "stage": "ok", "reason": "", "param_count": 10, "macs": 20})

  def test_a_killed_child_is_attributed_to_its_stage(self):
    result = sandbox.ChildResult(status="timeout", value=None, reason="timeout: still "
                                 "running after 5 s", wall_seconds=5.0, peak_rss_mb=1.0,
                                 stderr_tail="", progress={"stage": "shape"})
    verdict = checks.verdict_from_child(result)
    self.assertEqual(verdict.stage, "shape")
    self.assertFalse(verdict.feasible)
    self.assertEqual(verdict.reason, "shape: the check child stopped (timeout: still running "
                     "after 5 s)")


class WideLinear(hk.Module):
  """A trusted 1-hidden-layer processor of 2H x 8H weights (for forged-verdict tests)."""

  def __init__(self, out_size: int):
    super().__init__(name="wide_clrs_processor")
    self.out_size = out_size

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    z = hk.Linear(8 * self.out_size)(jnp.concatenate([node_fts, hidden], axis=-1))
    return hk.Linear(self.out_size)(z), None


class CheapWide(WideLinear):
  """WideLinear's parameters with half its products: a forged export for one shape."""

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    row = hk.Linear(8 * self.out_size)(jnp.zeros((1, 2 * self.out_size)))  # Same parameters.
    z = jnp.broadcast_to(row, hidden.shape[:2] + row.shape[-1:])
    return hk.Linear(self.out_size)(z), None


SMALL = checks.CheckConfig(shape_sizes=(5, 11), shape_batch=2, macs_nb_nodes=8)


def write_child_files(workdir: pathlib.Path, factory, hidden: int,
                      config: checks.CheckConfig) -> dict[str, np.ndarray]:
  """What the check child's budget stage leaves (exported here, by trusted code)."""
  params = None
  for at in config.cost_shapes():
    params, serialized = macs.export_processor(factory, hidden=hidden, nb_nodes=at.nb_nodes,
                                               batch_size=at.batch_size, params=params)
    (workdir / checks.export_file(at)).write_bytes(serialized)
  with open(workdir / checks.PARAMS_FILE, "wb") as f:
    np.savez(f, **params)
  return params


class TrustedBudgetTest(absltest.TestCase):
  """The budget numbers come from the exported files, never from the child's word."""

  def forged_result(self, **fields):
    value = {"feasible": True, "stage": "ok", "reason": "", "param_count": 1, "macs": 1,
             **fields}
    return sandbox.ChildResult(status="ok", value=value, reason="", wall_seconds=0.0,
                               peak_rss_mb=0.0, stderr_tail="")

  def test_a_forged_feasible_verdict_gets_the_real_numbers(self):
    workdir = pathlib.Path(self.create_tempdir().full_path)
    h = 16
    params = write_child_files(workdir, WideLinear, h, SMALL)
    real = macs.processor_cost(WideLinear, hidden=h, nb_nodes=8)
    self.assertEqual(real.param_count, 2 * h * 8 * h + 8 * h + 8 * h * h + h)
    self.assertEqual(sum(v.size for v in params.values()), real.param_count)
    verdict = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(100, 100),
                                        workdir=workdir, hidden=h, config=SMALL)
    self.assertEqual((verdict.feasible, verdict.stage), (False, "budget"))
    self.assertEqual((verdict.param_count, verdict.macs), (real.param_count, real.macs))
    ok = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(10**9, 10**9),
                                   workdir=workdir, hidden=h, config=SMALL)
    self.assertEqual((ok.feasible, ok.param_count, ok.macs, ok.macs_nb_nodes),
                     (True, real.param_count, real.macs, 8))
    per_graph = {n: macs.processor_cost(WideLinear, hidden=h, nb_nodes=n).macs
                 for n in (5, 8, 11)}
    self.assertEqual(ok.macs_by_shape, {"b1_n8": real.macs, "b2_n5": 2 * per_graph[5],
                                        "b2_n8": 2 * per_graph[8], "b2_n11": 2 * per_graph[11]})
    self.assertEqual(ok.cost(), cost_grid.GridCost(real.param_count, real.macs, 8,
                                                   ok.macs_by_shape))
    self.assertEqual(ok.cost_metrics(), {
        "check_param_count": real.param_count, "check_macs": real.macs,
        "check_macs_nb_nodes": 8, "check_macs_by_shape": ok.macs_by_shape})
    # The exports must be for the configured width, and every shape must be there.
    wrong = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(10**9, 10**9),
                                      workdir=workdir, hidden=2 * h, config=SMALL)
    self.assertEqual(wrong.stage, "budget")
    self.assertIn("could not be costed", wrong.reason)
    (workdir / checks.export_file(SMALL.cost_shapes()[-1])).unlink()
    missing = checks.verdict_from_child(self.forged_result(),
                                        budget=checks.Budget(10**9, 10**9), workdir=workdir,
                                        hidden=h, config=SMALL)
    self.assertRegex(missing.reason, r"^budget: the processor's export could not be costed: "
                     r"processor_b2_n11.export is missing")

  def test_exports_of_another_program_at_one_shape_are_refused(self):
    # A child that writes a cheap export where the dear one belongs: not one program.
    workdir = pathlib.Path(self.create_tempdir().full_path)
    params = write_child_files(workdir, WideLinear, 16, SMALL)
    at = SMALL.cost_shapes()[-1]
    _, cheap = macs.export_processor(CheapWide, hidden=16, nb_nodes=at.nb_nodes,
                                     batch_size=at.batch_size, params=params)
    (workdir / checks.export_file(at)).write_bytes(cheap)
    verdict = checks.verdict_from_child(self.forged_result(),
                                        budget=checks.Budget(10**9, 10**9), workdir=workdir,
                                        hidden=16, config=SMALL)
    self.assertEqual((verdict.feasible, verdict.stage), (False, "budget"))
    self.assertRegex(verdict.reason, r"^budget: the processor runs a different computation "
                     r"at batch 2, n=11 than at batch 2, n=5")

  def test_missing_or_forged_files_are_a_budget_rejection(self):
    workdir = pathlib.Path(self.create_tempdir().full_path)
    budget = checks.Budget(10, 10)
    verdict = checks.verdict_from_child(self.forged_result(), budget=budget, workdir=workdir,
                                        config=SMALL)
    self.assertEqual((verdict.feasible, verdict.stage), (False, "budget"))
    self.assertIn("could not be costed", verdict.reason)
    names = [checks.export_file(at) for at in SMALL.cost_shapes()]
    (workdir / checks.PARAMS_FILE).write_bytes(b"not a zip: secret line\n")
    for name in names:
      (workdir / name).write_bytes(b"secret line\n")
    verdict = checks.verdict_from_child(self.forged_result(), budget=budget, workdir=workdir,
                                        config=SMALL)
    self.assertEqual(verdict.stage, "budget")
    self.assertNotIn("secret", verdict.reason)
    # A symlink to a secret, or a FIFO that would block the parent, is not read.
    secret = workdir / "secret.txt"
    secret.write_text("secret line\n")
    write_child_files(workdir, WideLinear, 16, SMALL)
    (workdir / names[0]).unlink()
    (workdir / names[0]).symlink_to(secret)
    verdict = checks.verdict_from_child(self.forged_result(), budget=budget, workdir=workdir,
                                        hidden=16, config=SMALL)
    self.assertEqual(verdict.stage, "budget")
    self.assertIn("could not be costed", verdict.reason)
    self.assertNotIn("secret", verdict.reason)
    (workdir / names[0]).unlink()
    os.mkfifo(workdir / names[0])
    verdict = checks.verdict_from_child(self.forged_result(), budget=budget, workdir=workdir,
                                        hidden=16, config=SMALL)  # Must not block.
    self.assertIn("not a regular file", verdict.reason)

  def test_child_reasons_are_sanitised(self):
    hostile = "shape: \x1b[31m" + "line\nwith\tcontrol\x00" * 500
    verdict = checks.verdict_from_child(self.forged_result(feasible=False, stage="shape",
                                                           reason=hostile))
    self.assertEqual(verdict.stage, "shape")
    self.assertLessEqual(len(verdict.reason), checks.MAX_REASON_CHARS)
    self.assertTrue(verdict.reason.isprintable() and verdict.reason.isascii())
    self.assertTrue(verdict.reason.startswith("shape: ") and "shape: shape" not in
                    verdict.reason)
    odd = checks.verdict_from_child(self.forged_result(feasible=False, stage="ok!"))
    self.assertEqual((odd.feasible, odd.stage), (False, "interface"))

  def test_exception_text_is_quoted_short(self):
    class Hostile(Exception):
      def __str__(self):
        return "A" * 10_000

    class Broken(Exception):
      def __str__(self):
        raise RuntimeError("no")

    text = program.describe(Hostile(), "candidate.py")
    self.assertLessEqual(len(text), checks.MAX_QUOTE_CHARS + 20)
    self.assertEqual(program.describe(Broken(), "candidate.py"), "Broken")

  def test_finite_sizes_include_the_ood_size(self):
    self.assertEqual(checks.CheckConfig().finite_node_sizes(), (8, 64))
    small = checks.CheckConfig(shape_sizes=(5, 11), finite_nodes=5)
    self.assertEqual(small.finite_node_sizes(), (5, 11))
    self.assertEqual(checks.CheckConfig(finite_sizes=(16, 4)).finite_node_sizes(), (4, 16))


class CorpusTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cases = load_corpus()

  def test_corpus_covers_every_stage_and_both_factors(self):
    broken = [c for c in self.cases if c.expect != "ok"]
    self.assertGreaterEqual(len(broken), 30)
    self.assertEqual(set(c.expect for c in broken), set(checks.STAGES))
    valid = collections.Counter(c.factor for c in self.cases if c.expect == "ok")
    self.assertGreaterEqual(valid["OPERATOR"], 10)
    self.assertGreaterEqual(valid["ACTION"], 10)
    for case in self.cases:
      if case.expect == "ok":  # A valid edit changes exactly its own factor.
        diff = regions.diff_factors(case.parent, case.candidate)
        self.assertEqual(diff.changed, (case.factor,), case.name)
        self.assertFalse(diff.outside_changed, case.name)

  def _check_cases(self, cases) -> list[str]:
    budget = checks.default_budget()
    tmp = pathlib.Path(self.create_tempdir().full_path)
    mismatches = []
    with checks.make_worker(tmp / "worker") as worker:
      for case in cases:
        verdict = checks.run_checks(case.candidate, parent_text=case.parent, scope=case.scope,
                                    budget=budget, workdir=tmp / case.name,
                                    limits=CORPUS_LIMITS, worker=worker)
        ok = verdict.stage == case.expect and verdict.feasible == (case.expect == "ok")
        if case.expect == "ok":
          ok = ok and verdict.param_count > 0 and verdict.macs > 0 and not verdict.reason
        else:
          ok = ok and verdict.reason.startswith(f"{case.expect}: ") and "\n" not in verdict.reason
        if not ok:
          mismatches.append(f"{case.name} ({case.why}): expected {case.expect}, got "
                            f"{verdict.stage}: {verdict.reason}")
    return mismatches

  def test_sampled_cases_stop_at_their_expected_stage(self):
    """Default suite: every case the parent rejects, and one per stage that needs the jail.

    Each case that reaches the check child costs a fresh jailed interpreter (JAX import),
    so the whole corpus runs in the slow suite (next test).
    """
    in_parent = {"parse", "scope", "policy"}
    picked, per_stage = [], collections.Counter()
    for case in self.cases:
      key = (case.expect, case.factor if case.expect == "ok" else None)
      if case.expect in in_parent or per_stage[key] < 1:
        picked.append(case)
        per_stage[key] += case.expect not in in_parent
    self.assertEqual({c.expect for c in picked}, set(checks.STAGES) | {"ok"})
    self.assertEqual(self._check_cases(picked), [])

  @pytest.mark.slow
  def test_every_case_stops_at_its_expected_stage(self):
    self.assertEqual(self._check_cases(self.cases), [])


def with_hidden_compute(condition: str) -> str:
  """The mpnn seed with extra message passing in ACTION whenever ``condition`` holds."""
  parent = seed_text("mpnn")
  extra = (f"    if {condition}:  # Compute the reference shape never shows.\n"
           "      for _ in range(4):\n"
           "        nxt_hidden = nxt_hidden + jnp.max(jnp.tanh(msg_mlp(\n"
           "            jnp.expand_dims(nxt_hidden, 1) + m_edge)), axis=1)\n")
  return regions.replace_region(parent, "ACTION", regions.get_region(parent, "ACTION") + extra)


TINY_PROGRAM = """
import haiku as hk
import jax.numpy as jnp


class Tiny(hk.Module):

  def __init__(self, out_size):
    super().__init__(name="tiny_clrs_processor")
    self.out_size = out_size

  @property
  def inf_bias(self):
    return False

  @property
  def inf_bias_edge(self):
    return False

  def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused):
    return hk.Linear(self.out_size)(jnp.concatenate([node_fts, hidden], -1)), None


def get_processor_factory(use_ln=True, nb_triplet_fts=8, **unused):
  return Tiny
"""


class JailedCostTest(absltest.TestCase):
  """The budget's cost through the jail: hidden compute refused, unchecked programs costed."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix="jailed_cost_"))
    cls.worker = checks.make_worker(cls.tmp / "worker")
    cls.worker.start()

  @classmethod
  def tearDownClass(cls):
    cls.worker.close()
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_branches_on_the_batch_or_the_graph_size_are_refused(self):
    # Issue 16 item 5, end to end, at the spark sizes (batch 32; n=11, 16, 64).
    parent = seed_text("mpnn")
    expected = {
        "node_fts.shape[0] > 1": "batch 32, n=16 than at batch 1, n=16",
        "node_fts.shape[1] > 16": "batch 32, n=64 than at batch 32, n=11",  # OOD size only.
    }
    for i, (condition, where) in enumerate(expected.items()):
      verdict = checks.run_checks(
          with_hidden_compute(condition), parent_text=parent, scope=["ACTION"],
          budget=checks.Budget(10**12, 10**12), workdir=self.tmp / f"c{i}", hidden=16,
          limits=CORPUS_LIMITS, worker=self.worker)
      self.assertEqual((verdict.feasible, verdict.stage), (False, "budget"), condition)
      self.assertRegex(verdict.reason, rf"^budget: the processor runs a different "
                       rf"computation at {where} \(.*\d+ vs \d+ matrix products\); what "
                       r"it computes must not depend on the (batch|batch or graph) size")

  def test_an_unchecked_program_is_measured_without_caps(self):
    config = checks.CheckConfig(shape_sizes=(5, 11), shape_batch=4, cost_batches=(2, 4),
                                finite_nodes=5, macs_nb_nodes=8)
    verdict = checks.measure_cost(TINY_PROGRAM, workdir=self.tmp / "tiny", hidden=16,
                                  config=config, limits=CORPUS_LIMITS, worker=self.worker)
    self.assertTrue(verdict.feasible, verdict.reason)  # No region markers needed.
    per_graph = {n: n * 2 * 16 * 16 for n in (5, 8, 11)}
    self.assertEqual(verdict.cost(), cost_grid.GridCost(
        param_count=2 * 16 * 16 + 16, macs=per_graph[8], nb_nodes=8,
        macs_by_shape={"b1_n8": per_graph[8],
                       **{f"b{b}_n{n}": b * m for b in (2, 4) for n, m in per_graph.items()}}))
    broken = checks.measure_cost(TINY_PROGRAM.replace("return Tiny", "return None"),
                                 workdir=self.tmp / "broken", hidden=16, config=config,
                                 limits=CORPUS_LIMITS, worker=self.worker)
    self.assertEqual((broken.feasible, broken.stage, broken.cost()), (False, "interface", None))


class ConfigTest(absltest.TestCase):

  def test_profiles_give_the_sizes_and_batches_they_run_at(self):
    spark = checks.CheckConfig.for_profile(profiles.get_profile("spark"))
    self.assertEqual((spark.shape_sizes, spark.shape_batch, spark.cost_batches),
                     ((11, 64), 32, (32,)))
    self.assertEqual([tuple(s) for s in spark.cost_shapes()],
                     [(1, 16), (32, 11), (32, 16), (32, 64)])
    self.assertEqual(spark.finite_node_sizes(), (8, 64))
    quick = checks.CheckConfig.for_profile(profiles.get_profile("quick"))
    self.assertEqual([tuple(s) for s in quick.cost_shapes()],
                     [(1, 16), (8, 8), (8, 16), (16, 8), (16, 16)])
    clrs_sizes = checks.CheckConfig.for_profile(profiles.get_profile("clrs")).shape_sizes
    self.assertEqual(clrs_sizes, (4, 7, 11, 13, 16, 64))  # Every training size.
    self.assertEqual(checks.CheckConfig.from_dict(json.loads(json.dumps(
        dataclasses.asdict(quick)))), quick)


class FreshChildTest(absltest.TestCase):

  def test_seed_passes_in_a_fresh_child_with_the_default_budget(self):
    text = seed_text("triplet_gmpnn")
    verdict = checks.run_checks(text, parent_text=text, scope=["OPERATOR"],
                                workdir=pathlib.Path(self.create_tempdir().full_path))
    self.assertTrue(verdict.feasible, verdict.reason)
    self.assertEqual(verdict.stage, "ok")
    cost = macs.processor_cost(processors.load("triplet_gmpnn"), hidden=128)
    self.assertEqual((verdict.param_count, verdict.macs), (cost.param_count, cost.macs))
    self.assertEqual((verdict.param_count, verdict.macs), (258_872, 16_630_784))
    self.assertEqual(set(verdict.macs_by_shape), {"b1_n16", "b32_n11", "b32_n16", "b32_n64"})
    self.assertEqual(verdict.macs_by_shape["b32_n16"], 32 * verdict.macs)
    self.assertEqual(checks.default_budget(),
                     checks.Budget(4 * cost.param_count, 4 * cost.macs))


class CliTest(absltest.TestCase):

  def cli(self, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spark_clrs.check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)

  def test_feasible_exits_0_with_json(self):
    seed = str(processors.resolve("pgn"))
    out = self.cli(seed, "--parent", seed, "--scope", "ACTION", "--hidden", "16")
    self.assertEqual(out.returncode, 0, out.stderr)
    verdict = json.loads(out.stdout)
    self.assertEqual(set(verdict), {"feasible", "stage", "reason", "param_count", "macs"})
    self.assertTrue(verdict["feasible"])
    self.assertGreater(verdict["param_count"], 0)

  def test_rejected_exits_1(self):
    parent = seed_text("pgn")
    child = regions.replace_region(parent, "ACTION", "    import os\n")
    path = pathlib.Path(self.create_tempdir().full_path) / "child.py"
    path.write_text(child)
    out = self.cli(str(path), "--parent", "pgn", "--scope", "ACTION")
    self.assertEqual(out.returncode, 1, out.stderr)
    verdict = json.loads(out.stdout)
    self.assertEqual((verdict["feasible"], verdict["stage"]), (False, "policy"))

  def test_usage_errors_exit_2_with_one_line(self):
    seed = str(processors.resolve("pgn"))
    unknown = self.cli(seed, "--parent", seed, "--scope", "GATE")
    self.assertEqual(unknown.returncode, 2)
    self.assertEqual(unknown.stderr.strip(), "error: unknown --scope GATE; the parent's "
                     "factors are OPERATOR, ACTION")
    missing = self.cli("/nonexistent/candidate.py")
    self.assertEqual(missing.returncode, 2)
    self.assertIn("does not exist", missing.stderr)
    no_parent = self.cli(seed, "--scope", "ACTION")
    self.assertEqual(no_parent.returncode, 2)
    self.assertIn("--scope needs --parent", no_parent.stderr)
    bad_parent = self.cli(seed, "--parent", "no_such_seed")
    self.assertEqual(bad_parent.returncode, 2)
    self.assertIn("--parent", bad_parent.stderr)


if __name__ == "__main__":
  absltest.main()
