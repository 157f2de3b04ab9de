"""Tests for ``spark_clrs.checks`` and the ``spark_clrs.check`` CLI.

The corpus under ``tests/data/candidates/`` (see its ``corpus.py``) holds broken programs
for every stage and valid edits of each factor; every broken one must be rejected at its
expected stage and every valid one must pass. The sandboxed stages of the whole corpus
run through pre-started single-use jailed check workers (one per candidate).
"""

import collections
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import haiku as hk
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest

import processors
from spark_clrs import checks
from spark_clrs.evaluation import macs
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
    self.assertRegex(verdict.reason, r"^policy: line \d+: import os is not allowed; .* \(\+1 "
                     r"more\)$")


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
    params, serialized = macs.export_processor(WideLinear, hidden=h)
    with open(workdir / checks.PARAMS_FILE, "wb") as f:
      np.savez(f, **params)
    (workdir / checks.EXPORT_FILE).write_bytes(serialized)
    real = macs.cost_from_export(serialized, params)
    self.assertEqual(real.param_count, 2 * h * 8 * h + 8 * h + 8 * h * h + h)
    config = checks.CheckConfig()
    verdict = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(100, 100),
                                        workdir=workdir, hidden=h, config=config)
    self.assertEqual((verdict.feasible, verdict.stage), (False, "budget"))
    self.assertEqual((verdict.param_count, verdict.macs), (real.param_count, real.macs))
    ok = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(10**9, 10**9),
                                   workdir=workdir, hidden=h, config=config)
    self.assertEqual((ok.feasible, ok.param_count, ok.macs), (True, real.param_count,
                                                              real.macs))
    # The export must be for the configured width.
    wrong = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(10**9, 10**9),
                                      workdir=workdir, hidden=2 * h, config=config)
    self.assertEqual(wrong.stage, "budget")
    self.assertIn("could not be costed", wrong.reason)

  def test_missing_or_forged_files_are_a_budget_rejection(self):
    workdir = pathlib.Path(self.create_tempdir().full_path)
    verdict = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(10, 10),
                                        workdir=workdir)
    self.assertEqual((verdict.feasible, verdict.stage), (False, "budget"))
    self.assertIn("could not be costed", verdict.reason)
    (workdir / checks.PARAMS_FILE).write_bytes(b"not a zip: secret line\n")
    (workdir / checks.EXPORT_FILE).write_bytes(b"secret line\n")
    verdict = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(10, 10),
                                        workdir=workdir)
    self.assertEqual(verdict.stage, "budget")
    self.assertNotIn("secret", verdict.reason)
    # A symlink to a secret, or a FIFO that would block the parent, is not read.
    secret = workdir / "secret.txt"
    secret.write_text("secret line\n")
    for name in (checks.PARAMS_FILE, checks.EXPORT_FILE):
      (workdir / name).unlink()
    (workdir / checks.EXPORT_FILE).symlink_to(secret)
    os.mkfifo(workdir / checks.PARAMS_FILE)
    verdict = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(10, 10),
                                        workdir=workdir)
    self.assertEqual(verdict.stage, "budget")
    self.assertNotIn("secret", verdict.reason)
    (workdir / checks.EXPORT_FILE).unlink()
    (workdir / checks.EXPORT_FILE).write_bytes(b"x")
    verdict = checks.verdict_from_child(self.forged_result(), budget=checks.Budget(10, 10),
                                        workdir=workdir)  # Reaches the FIFO: must not block.
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

    text = checks._describe(Hostile(), "candidate.py")  # noqa: SLF001
    self.assertLessEqual(len(text), checks.MAX_QUOTE_CHARS + 20)
    self.assertEqual(checks._describe(Broken(), "candidate.py"), "Broken")  # noqa: SLF001

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
    """Default suite: every case the parent rejects, and two per stage that needs the jail.

    Each case that reaches the check child costs a fresh jailed interpreter (JAX import),
    so the whole corpus runs in the slow suite (next test).
    """
    in_parent = {"parse", "scope", "policy"}
    picked, per_stage = [], collections.Counter()
    for case in self.cases:
      key = (case.expect, case.factor if case.expect == "ok" else None)
      if case.expect in in_parent or per_stage[key] < 2:
        picked.append(case)
        per_stage[key] += case.expect not in in_parent
    self.assertEqual({c.expect for c in picked}, set(checks.STAGES) | {"ok"})
    self.assertEqual(self._check_cases(picked), [])

  @pytest.mark.slow
  def test_every_case_stops_at_its_expected_stage(self):
    self.assertEqual(self._check_cases(self.cases), [])


class FreshChildTest(absltest.TestCase):

  def test_seed_passes_in_a_fresh_child_with_the_default_budget(self):
    text = seed_text("triplet_gmpnn")
    verdict = checks.run_checks(text, parent_text=text, scope=["OPERATOR"],
                                workdir=pathlib.Path(self.create_tempdir().full_path))
    self.assertTrue(verdict.feasible, verdict.reason)
    self.assertEqual(verdict.stage, "ok")
    cost = macs.processor_cost(processors.load("triplet_gmpnn"), hidden=128)
    self.assertEqual((verdict.param_count, verdict.macs), (cost.param_count, cost.macs))
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
