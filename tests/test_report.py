"""report: tables and plots from real run directories agree with their summary.json."""

import io
import json
import os
import pathlib
import subprocess
import sys

from absl.testing import absltest

from spark_clrs.analysis import report

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import tiny_compare  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


class BandTest(absltest.TestCase):
  """Pooling best-so-far step curves of several seeds (pure function)."""

  def test_band_pools_step_curves_without_extrapolating(self):
    b = report.band([[(0, 0.1), (2, 0.5)], [(0, 0.3), (1, 0.4), (3, 0.6)]])
    self.assertEqual(b.x, (0, 1, 2, 3))
    self.assertEqual(b.n, (2, 2, 2, 1))  # The first run ends at 2.
    self.assertSequenceAlmostEqual(b.mean, (0.2, 0.25, 0.45, 0.6))
    self.assertSequenceAlmostEqual(b.std, (0.1, 0.15, 0.05, 0.0))
    self.assertSequenceAlmostEqual(b.min, (0.1, 0.1, 0.4, 0.6))
    self.assertSequenceAlmostEqual(b.max, (0.3, 0.4, 0.5, 0.6))
    self.assertSequenceAlmostEqual(b.lower("std"), (0.1, 0.1, 0.4, 0.6))
    self.assertSequenceAlmostEqual(b.upper("minmax"), b.max)
    self.assertEqual(report.band([]).x, ())


class ReportTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.compare = tiny_compare.run(stream=io.StringIO())
    cls.runs = [c.run_dir for c in cls.compare.cells]

  def _summary(self, run_dir) -> dict:
    return json.loads((pathlib.Path(run_dir) / "results" / "summary.json").read_text())

  def test_many_runs_grouped_by_strategy(self):
    out = pathlib.Path(self.create_tempdir().full_path) / "rep"
    files = report.make_report(self.runs, out, band_kind="minmax")
    for path in (files.markdown, files.json, files.best_so_far, files.scopes, files.rates):
      self.assertTrue(path.is_file(), path)
      self.assertEqual(path.parent, out)
    for path in (files.best_so_far, files.scopes, files.rates):
      self.assertTrue(path.read_bytes().startswith(b"\x89PNG"), path)
    data = json.loads(files.json.read_text())
    self.assertEqual(data["band"], "minmax")
    self.assertLen(data["runs"], 4)
    for row in data["runs"]:
      summary = self._summary(row["run_dir"])
      for key in ("best_ood_val_acc", "best_ood_acc", "evaluations_to_best", "valid_rate",
                  "entanglement_rate", "proposals", "best_program_id", "seed"):
        self.assertEqual(row[key], summary[key], key)
      self.assertEqual(row["total_tokens"], summary["llm"]["total_tokens"])
      self.assertEqual(row["cost_usd"], summary["llm"]["cost_usd"])
    groups = {g["strategy"]: g for g in data["groups"]}
    self.assertEqual(sorted(groups), sorted(tiny_compare.STRATEGIES))
    for group in groups.values():
      self.assertEqual(group["seeds"], list(tiny_compare.SEEDS))
      bests = [self._summary(d)["best_ood_val_acc"] for d in group["run_dirs"]]
      self.assertAlmostEqual(group["metrics"]["best_ood_val_acc"]["mean"], sum(bests) / 2)
      self.assertEqual(group["metrics"]["best_ood_val_acc"]["min"], min(bests))
      self.assertEqual(group["best_so_far"]["max"][-1], max(bests))
      # Scope counts pool the runs' per-scope summaries.
      for scope, counts in group["scopes"].items():
        per_run = [self._summary(d)["per_scope"].get(scope, {}) for d in group["run_dirs"]]
        self.assertEqual(counts["proposals"], sum(p.get("proposals", 0) for p in per_run))
        self.assertEqual(counts["valid"], sum(p.get("valid", 0) for p in per_run))
        self.assertEqual(counts["fallback"], sum(p.get("fallback", 0) for p in per_run))
      self.assertEqual(sum(s["proposals"] for s in group["scopes"].values()), 2)
    # The comparison's own table is the same aggregation of the same runs.
    compare_data = json.loads((self.compare.output / "compare.json").read_text())
    for group in compare_data["groups"]:
      self.assertEqual(group["metrics"], groups[group["strategy"]]["metrics"])
    markdown = files.markdown.read_text()
    for heading in ("## Strategies", "## Runs", "## Scope choices"):
      self.assertIn(heading, markdown)
    self.assertIn("(report_best_so_far.png)", markdown)
    self.assertIn("spark/seed0", markdown)

  def test_cli_on_one_run_writes_into_its_results(self):
    run = self.runs[0]
    done = subprocess.run([sys.executable, "-m", "spark_clrs.report", str(run)], cwd=ROOT,
                          env={**os.environ, **tiny_compare.ENV}, capture_output=True,
                          text=True, timeout=300)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    data = json.loads((run / "results" / "report.json").read_text())
    summary = self._summary(run)
    self.assertLen(data["groups"], 1)
    self.assertEqual(data["groups"][0]["metrics"]["best_ood_val_acc"]["mean"],
                     summary["best_ood_val_acc"])
    self.assertTrue((run / "results" / "summary.json").is_file())  # Untouched by the report.
    self.assertIn(str(run / "results" / "report.md"), done.stdout)

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
    self.assertLen(json.loads((out / "report.json").read_text())["runs"], 2)


class ReportErrorsTest(absltest.TestCase):

  def test_not_a_run_directory(self):
    tmp = self.create_tempdir().full_path
    with self.assertRaisesRegex(report.ReportError, "is not a spark_clrs run directory"):
      report.load_run(tmp)
    done = subprocess.run([sys.executable, "-m", "spark_clrs.report", tmp], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    self.assertEqual(done.returncode, 2)
    self.assertLen(done.stderr.strip().splitlines(), 1)
    self.assertIn("no archive.sqlite", done.stderr)
    done = subprocess.run([sys.executable, "-m", "spark_clrs.report"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    self.assertEqual(done.returncode, 2)
    self.assertIn("usage: python -m spark_clrs.report RUN", done.stderr)


if __name__ == "__main__":
  absltest.main()
