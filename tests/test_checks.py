"""Tests for ``spark_clrs.checks`` and the ``spark_clrs.check`` CLI.

The corpus under ``tests/data/candidates/`` (see its ``corpus.py``) holds broken programs
for every stage and valid edits of each factor; every broken one must be rejected at its
expected stage and every valid one must pass. The sandboxed stages of the whole corpus
run in one warm check worker (JAX imported once, one forked child per candidate).
"""

import collections
import importlib.util
import json
import pathlib
import subprocess
import sys

from absl.testing import absltest

import processors
from spark_clrs import checks, macs, regions, sandbox

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

  def test_every_case_stops_at_its_expected_stage(self):
    budget = checks.default_budget()
    tmp = pathlib.Path(self.create_tempdir().full_path)
    mismatches = []
    with checks.make_worker(tmp / "worker") as worker:
      for case in self.cases:
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
    self.assertEqual(mismatches, [])


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
