"""report: tables, plots and pages from run directories agree with their summary.json.

Grouping and pooling over seeds are checked on a comparison run with the fake trainer
(tests/helpers.py: real search loop, proposers, archive and final re-evaluation; no
training); the command line on one run, on the session's real tiny search.
"""

import json
import pathlib
import subprocess
import sys

from absl.testing import absltest

from spark_clrs.analysis import groups, report, significance
from spark_clrs.search.summary import OFFLINE_NOTE

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import helpers  # noqa: E402

STRATEGIES = helpers.FAKE_STRATEGIES
SEEDS = helpers.FAKE_SEEDS


def summary_of(run_dir) -> dict:
  return json.loads((pathlib.Path(run_dir) / "results" / "summary.json").read_text())


class BandTest(absltest.TestCase):
  """Pooling best-so-far step curves of several seeds (pure function)."""

  def test_band_pools_step_curves_without_extrapolating(self):
    b = groups.band([[(0, 0.1), (2, 0.5)], [(0, 0.3), (1, 0.4), (3, 0.6)]])
    self.assertEqual(b.x, (0, 1, 2, 3))
    self.assertEqual(b.n, (2, 2, 2, 1))  # The first run ends at 2.
    self.assertSequenceAlmostEqual(b.mean, (0.2, 0.25, 0.45, 0.6))
    self.assertSequenceAlmostEqual(b.std, (0.1, 0.15, 0.05, 0.0))
    self.assertSequenceAlmostEqual(b.min, (0.1, 0.1, 0.4, 0.6))
    self.assertSequenceAlmostEqual(b.max, (0.3, 0.4, 0.5, 0.6))
    self.assertSequenceAlmostEqual(b.lower("std"), (0.1, 0.1, 0.4, 0.6))
    self.assertSequenceAlmostEqual(b.upper("minmax"), b.max)
    self.assertEqual(groups.band([]).x, ())


class SignificanceTest(absltest.TestCase):
  """Intervals over seeds and the paired tests (pure functions, hand-checked numbers)."""

  def test_interval_over_seeds_is_a_t_interval(self):
    i = significance.Interval.of([0.1, 0.2, 0.3])
    self.assertAlmostEqual(i.mean, 0.2)
    # t(0.975, 2) = 4.3027; sd = 0.1; half-width = 4.3027 * 0.1 / sqrt(3).
    self.assertAlmostEqual(i.half_width, 4.302653 * 0.1 / 3 ** 0.5, places=5)
    self.assertEqual(i.format(), "0.200 ± 0.248 (95% CI over 3 seeds)")
    self.assertIsNone(significance.Interval.of([0.5]).half_width)
    self.assertEqual(significance.Interval.of([None, float("nan")]).n, 0)

  def test_paired_test_over_seeds(self):
    a = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.9}
    b = {0: 0.40, 1: 0.45, 2: 0.50}  # Seed 3 has no pair.
    t = significance.paired(a, b)
    self.assertEqual(t.seeds, (0, 1, 2))
    self.assertSequenceAlmostEqual(t.diffs, (0.10, 0.15, 0.05))
    self.assertAlmostEqual(t.mean, 0.10)
    self.assertAlmostEqual(t.d_z, 0.10 / 0.05)
    # Paired t = 0.1 / (0.05 / sqrt 3) = 3.464 on 2 df: two-sided p = 0.0742.
    self.assertAlmostEqual(t.t_p, 0.0742, places=4)
    # All three differences positive: only "all +" and "all -" reach |mean|: 2/8.
    self.assertEqual(t.sign_flip_p, 0.25)
    self.assertEqual(t.min_p, 0.25)
    self.assertEqual(significance.min_sign_flip_p(6), 2 / 64)
    mixed = significance.paired({0: 0.1, 1: 0.3, 2: 0.2}, {0: 0.2, 1: 0.2, 2: 0.2})
    self.assertEqual(mixed.sign_flip_p, 1.0)  # Mean 0: every flip reaches it.
    none = significance.paired({0: 0.5}, {1: 0.5})
    self.assertIsNone(none.mean)
    self.assertIsNone(none.sign_flip_p)


class ReportOfManyRunsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.compare = helpers.fake_compare()
    cls.runs = [c.run_dir for c in cls.compare.cells]

  def test_many_runs_grouped_by_strategy(self):
    out = pathlib.Path(self.create_tempdir().full_path) / "rep"
    files = report.make_report(self.runs, out, band_kind="minmax")
    for path in (files.markdown, files.json, files.best_so_far, files.scopes, files.rates,
                 files.pareto):
      self.assertTrue(path.is_file(), path)
      self.assertEqual(path.parent, out)
    for path in (files.best_so_far, files.scopes, files.rates, files.pareto):
      self.assertTrue(path.read_bytes().startswith(b"\x89PNG"), path)
    data = json.loads(files.json.read_text())
    self.assertEqual(data["band"], "minmax")
    self.assertLen(data["runs"], 6)
    for row in data["runs"]:
      summary = summary_of(row["run_dir"])
      for key in ("best_ood_val_acc", "best_ood_acc", "evaluations_to_best", "valid_rate",
                  "entanglement_rate", "proposals", "best_program_id", "seed"):
        self.assertEqual(row[key], summary[key], key)
      self.assertEqual(row["total_tokens"], summary["llm"]["total_tokens"])
      self.assertEqual(row["cost_usd"], summary["llm"]["cost_usd"])
    by_strategy = {g["strategy"]: g for g in data["groups"]}
    self.assertEqual(sorted(by_strategy), sorted(STRATEGIES))
    for group in by_strategy.values():
      self.assertEqual(group["seeds"], list(SEEDS))
      bests = [summary_of(d)["best_ood_val_acc"] for d in group["run_dirs"]]
      self.assertAlmostEqual(group["metrics"]["best_ood_val_acc"]["mean"], sum(bests) / 3)
      self.assertEqual(group["metrics"]["best_ood_val_acc"]["min"], min(bests))
      # Scope counts pool the runs' per-scope summaries.
      for scope, counts in group["scopes"].items():
        per_run = [summary_of(d)["per_scope"].get(scope, {}) for d in group["run_dirs"]]
        self.assertEqual(counts["proposals"], sum(p.get("proposals", 0) for p in per_run))
        self.assertEqual(counts["valid"], sum(p.get("valid", 0) for p in per_run))
        self.assertEqual(counts["fallback"], sum(p.get("fallback", 0) for p in per_run))
      self.assertEqual(sum(s["proposals"] for s in group["scopes"].values()), 9)
    # The comparison's own table is the same aggregation of the same runs.
    compare_data = json.loads((self.compare.output / "compare.json").read_text())
    for group in compare_data["groups"]:
      self.assertEqual(group["metrics"], by_strategy[group["strategy"]]["metrics"])
    self.assertEqual(compare_data["final"]["strategies"], data["final"]["strategies"])
    markdown = files.markdown.read_text()
    for heading in ("## Results that say whether a difference is real", "## Strategies",
                    "## Runs", "## Scope choices"):
      self.assertIn(heading, markdown)
    self.assertIn("(report_best_so_far.png)", markdown)
    self.assertIn("(report_pareto.png)", markdown)
    self.assertIn("spark/seed0", markdown)
    self.assertIn(OFFLINE_NOTE, markdown)

  def test_final_results_are_the_runs_re_evaluated_bests(self):
    """Per strategy: mean and 95% t interval over seeds of each run's final best."""
    data = json.loads((self.compare.output / "compare.json").read_text())["final"]
    self.assertEqual(data["reference"], "spark")
    for row in data["strategies"]:
      self.assertEqual(row["source"], "final")
      values = []
      for run in row["runs"]:
        final = summary_of(self.compare.output / row["strategy"] / f"seed{run['seed']}")["final"]
        best = next(c for c in final["candidates"] if c["id"] == final["best_id"])
        self.assertEqual(run["id"], final["best_id"])
        self.assertEqual(run["ood_acc"], best["ood_acc"])
        self.assertEqual(run["ood_val_acc"], best["ood_val_acc"])
        values.append(best["ood_acc"])
      expected = significance.Interval.of(values)
      self.assertAlmostEqual(row["ood_acc"]["mean"], expected.mean)
      self.assertAlmostEqual(row["ood_acc"]["half_width"], expected.half_width)
    (test,) = [t for t in data["paired_tests"] if t["metric"] == "ood_acc"]
    self.assertEqual(test["strategy"], "mutation")
    self.assertEqual(test["seeds"], list(SEEDS))
    runs = {r["strategy"]: {x["seed"]: x["ood_acc"] for x in r["runs"]}
            for r in data["strategies"]}
    self.assertSequenceAlmostEqual(test["diffs"], [runs["mutation"][k] - runs["spark"][k]
                                                   for k in SEEDS])
    self.assertEqual(test["min_sign_flip_p"], 0.25)
    # Pareto: every front member is a program of the strategy, none dominated by another.
    for front in data["pareto"]:
      points = front["points"]
      for p in front["front"]:
        self.assertIn(p, points)
        self.assertFalse(any(q["accuracy"] >= p["accuracy"] and q["macs"] <= p["macs"] and
                             (q["accuracy"], q["macs"]) != (p["accuracy"], p["macs"])
                             for q in points))

  def test_report_of_other_runs_is_not_replaced(self):
    out = pathlib.Path(self.create_tempdir().full_path)
    report.make_report(self.runs[:2], out)
    before = (out / "report.json").read_text()
    report.make_report(self.runs[:2], out)  # Same runs: refreshed in place.
    with self.assertRaisesRegex(report.ReportError, "holds a report of other runs"):
      report.make_report(self.runs[2:], out)
    self.assertEqual(json.loads((out / "report.json").read_text())["runs"],
                     json.loads(before)["runs"])
    report.make_report(self.runs[2:], out, overwrite=True)
    self.assertLen(json.loads((out / "report.json").read_text())["runs"], 4)


class ReportOfTheRealRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.run_dir = helpers.tiny_run().copy(helpers.temp_root() / "report_run")

  def test_cli_on_one_run_writes_into_its_results(self):
    done = subprocess.run([sys.executable, "-m", "spark_clrs.report", str(self.run_dir)],
                          cwd=helpers.ROOT, env=helpers.quiet_env(), capture_output=True,
                          text=True, timeout=300)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    data = json.loads((self.run_dir / "results" / "report.json").read_text())
    summary = summary_of(self.run_dir)
    self.assertLen(data["groups"], 1)
    self.assertEqual(data["groups"][0]["metrics"]["best_ood_val_acc"]["mean"],
                     summary["best_ood_val_acc"])
    # The run's result is its final re-evaluation, as the summary holds it.
    (row,) = data["final"]["strategies"]
    self.assertEqual(row["source"], "final")
    best = next(c for c in summary["final"]["candidates"]
                if c["id"] == summary["final"]["best_id"])
    self.assertEqual(row["ood_acc"]["mean"], best["ood_acc"])
    self.assertTrue((self.run_dir / "results" / "summary.json").is_file())  # Untouched.
    self.assertIn(str(self.run_dir / "results" / "report.md"), done.stdout)
    self.assertIn(str(self.run_dir / "results" / "index.html"), done.stdout)


class ReportErrorsTest(absltest.TestCase):

  def test_not_a_run_directory(self):
    tmp = self.create_tempdir().full_path
    with self.assertRaisesRegex(report.ReportError, "is not a spark_clrs run directory"):
      report.make_report([tmp], tmp)
    done = subprocess.run([sys.executable, "-m", "spark_clrs.report", tmp], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=120)
    self.assertEqual(done.returncode, 2)
    self.assertLen(done.stderr.strip().splitlines(), 1)
    self.assertIn("no archive.sqlite", done.stderr)
    done = subprocess.run([sys.executable, "-m", "spark_clrs.report"], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=120)
    self.assertEqual(done.returncode, 2)
    self.assertIn("usage: python -m spark_clrs.report RUN", done.stderr)
    self.assertLen(done.stderr.strip().splitlines(), 1)
    # A bad flag is a usage error too (cli/scaffold.py: one line, status 2).
    done = subprocess.run([sys.executable, "-m", "spark_clrs.report", "--band=wide", tmp],
                          cwd=helpers.ROOT, capture_output=True, text=True, timeout=120)
    self.assertEqual(done.returncode, 2)
    self.assertEqual(done.stderr.strip().splitlines(),
                     ["error: flag --band=wide: value should be one of <std|minmax>"])


if __name__ == "__main__":
  absltest.main()
