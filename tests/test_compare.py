"""compare: a real 2 strategies x 2 seeds grid on a tiny budget, its table, plot and resume."""

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
from unittest import mock

from absl.testing import absltest

from spark_clrs import config
from spark_clrs.analysis import compare, tables
from spark_clrs.search import archive_db

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import tiny_compare  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _snapshot(run_dir: pathlib.Path) -> tuple:
  """Everything a re-run would change: candidates, LLM calls, events, summary."""
  db = archive_db.ArchiveDB(run_dir / "archive.sqlite")
  try:
    rows = tuple((c.id, c.status, c.fitness, c.finished_at) for c in db.candidates())
    calls, events = len(db.llm_calls()), len(db.events())
  finally:
    db.close()
  return rows, calls, events, (run_dir / "results" / "summary.json").read_text()


class CompareTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.result = tiny_compare.run(stream=io.StringIO())

  def test_one_run_per_cell_and_files(self):
    out = self.result.output
    cells = {(c.strategy, c.seed): c for c in self.result.cells}
    self.assertEqual(sorted(cells), sorted((s, k) for s in tiny_compare.STRATEGIES
                                           for k in tiny_compare.SEEDS))
    for (strategy, seed), cell in cells.items():
      self.assertEqual(cell.run_dir, out / strategy / f"seed{seed}")
      summary = json.loads((cell.run_dir / "results" / "summary.json").read_text())
      self.assertEqual((summary["strategy"], summary["seed"]), (strategy, seed))
      self.assertEqual(summary["proposals"], 1)
      self.assertTrue(summary["complete"])
    for name in ("compare.md", "compare.json", "compare_best_so_far.png", "compare_scopes.png",
                 "compare_rates.png"):
      self.assertTrue((out / name).is_file(), name)
    for name in ("compare_best_so_far.png", "compare_scopes.png", "compare_rates.png"):
      self.assertTrue((out / name).read_bytes().startswith(b"\x89PNG"), name)

  def test_table_matches_the_runs_summaries(self):
    out = self.result.output
    data = json.loads((out / "compare.json").read_text())
    self.assertEqual([g["label"] for g in data["groups"]], list(tiny_compare.STRATEGIES))
    self.assertEqual(data["compare"]["strategies"], list(tiny_compare.STRATEGIES))
    self.assertEqual(data["compare"]["iterations"], 1)
    markdown = (out / "compare.md").read_text()
    for group in data["groups"]:
      summaries = [json.loads((out / group["strategy"] / f"seed{k}" / "results" /
                               "summary.json").read_text()) for k in tiny_compare.SEEDS]
      self.assertEqual(group["seeds"], list(tiny_compare.SEEDS))
      expected = {
          "best_ood_val_acc": [s["best_ood_val_acc"] for s in summaries],
          "best_ood_acc": [s["best_ood_acc"] for s in summaries],
          "evaluations_to_best": [s["evaluations_to_best"] for s in summaries],
          "valid_rate": [s["valid_rate"] for s in summaries],
          "entanglement_rate": [s["entanglement_rate"] for s in summaries],
          "total_tokens": [s["llm"]["total_tokens"] for s in summaries],
          "cost_usd": [s["llm"]["cost_usd"] for s in summaries]}
      for key, values in expected.items():
        stat = group["metrics"][key]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        self.assertAlmostEqual(stat["mean"], mean, msg=key)
        self.assertAlmostEqual(stat["std"], std, msg=key)
        self.assertEqual(stat["n"], 2, key)
      # The best-so-far band ends at the mean of the runs' best fitness.
      band = group["best_so_far"]
      self.assertEqual(band["x"][0], 0)
      self.assertAlmostEqual(band["mean"][-1], group["metrics"]["best_ood_val_acc"]["mean"])
      best = group["metrics"]["best_ood_val_acc"]
      self.assertIn(f"{best['mean']:.4f} ± {best['std']:.4f}", markdown)
    self.assertIn("| spark | 0,1 |", markdown)
    self.assertIn("| mutation | 0,1 |", markdown)
    # mutation makes no LLM calls; the offline SPARK roles do (their tokens are estimates).
    rows = data["budget_and_noise"]
    tokens = {r["strategy"]: r["tokens"] for r in rows}
    self.assertGreater(tokens["spark"], 0)
    self.assertEqual(tokens["mutation"], 0)

  def test_offline_header_and_the_budget_and_noise_table(self):
    out = self.result.output
    markdown = (out / "compare.md").read_text()
    data = json.loads((out / "compare.json").read_text())
    header = markdown.split("## Strategies")[0]
    self.assertIn("rule-based", header)
    self.assertIn("compare the search machinery, not the methods", header)
    self.assertEqual(data["compare"]["proposer_note"], tables.OFFLINE_NOTE)
    self.assertIn("budget 1 evaluations (proposals) per run", header)
    self.assertIn("| strategy | seed | best OOD-val (± spread) |", header)
    for row in data["budget_and_noise"]:
      summary = json.loads((pathlib.Path(row["run_dir"]) / "results" / "summary.json")
                           .read_text())
      self.assertEqual(row["evaluations"], summary["evaluations"])
      self.assertEqual(row["proposals"], 1)
      self.assertLessEqual(row["evaluations"], 2)  # The seed and at most one child.
      # The evaluator's bootstrap interval is shown with the fitness, and said to be one.
      self.assertIn("95% CI over graphs", row["best_ood_val_acc_text"])
      self.assertIn(row["best_ood_val_acc_text"], header)
      self.assertEqual(summary["proposer_note"], tables.OFFLINE_NOTE)
      # OOD-test was scored for the best (deferred for the others, --score_test=best).
      self.assertIsNotNone(summary["best_ood_acc"])

  def test_resumed_compare_reruns_nothing(self):
    before = {c.run_dir: _snapshot(c.run_dir) for c in self.result.cells}
    cmd = [sys.executable, "-m", "spark_clrs.compare", *tiny_compare.TINY_FLAGS,
           "--strategies=spark,mutation", "--seeds=0,1", f"--output={self.result.output}"]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **tiny_compare.ENV},
                          capture_output=True, text=True, timeout=300)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertEqual(done.stderr.count("finished before, not re-run"), 4, done.stderr)
    self.assertNotIn(": running", done.stderr)
    self.assertIn("| spark | 0,1 |", done.stdout)
    for run_dir, snapshot in before.items():
      self.assertEqual(_snapshot(run_dir), snapshot, run_dir)
    again = tiny_compare.run(stream=io.StringIO())
    self.assertEqual({c.action for c in again.cells}, {"skipped"})

  def test_run_with_other_settings_is_refused(self):
    with self.assertRaisesRegex(compare.CompareError, r"different settings: --profile"):
      compare.compare(["spark"], [0], output=self.result.output, stream=io.StringIO(),
                      **{**tiny_compare.TINY, "profile": "spark"})


class CompareExtendTest(absltest.TestCase):

  @absltest.skipUnless(os.environ.get("SPARK_CLRS_SLOW") == "1", "slow")
  def test_raising_iterations_resumes_every_run(self):
    """A larger budget on a finished grid adds exactly the new proposals to each run."""
    first = tiny_compare.run(stream=io.StringIO())
    out = pathlib.Path(self.create_tempdir().full_path) / "compare"
    for cell in first.cells:
      shutil.copytree(cell.run_dir, out / cell.strategy / f"seed{cell.seed}")
    before = {c: _snapshot(out / c.strategy / f"seed{c.seed}")[0] for c in first.cells}
    with mock.patch.dict(os.environ, tiny_compare.ENV):
      result = compare.compare(tiny_compare.STRATEGIES, tiny_compare.SEEDS, output=out,
                               stream=io.StringIO(), **{**tiny_compare.TINY, "iterations": 2})
    self.assertEqual({c.action for c in result.cells}, {"ran"})
    for cell in result.cells:
      rows = _snapshot(cell.run_dir)[0]
      old = next(v for k, v in before.items() if (k.strategy, k.seed) ==
                 (cell.strategy, cell.seed))
      self.assertEqual(rows[:2], old)  # The seed and proposal 1 are untouched.
      self.assertEqual([r[0] for r in rows], [0, 1, 2])
    data = json.loads((out / "compare.json").read_text())
    self.assertEqual(data["compare"]["iterations"], 2)
    self.assertEqual([g["proposals"] for g in data["groups"]], [4, 4])


class CompareAllStrategiesTest(absltest.TestCase):

  @absltest.skipUnless(os.environ.get("SPARK_CLRS_SLOW") == "1", "slow")
  def test_every_strategy_on_quick_with_spread_and_budget_columns(self):
    """Issue 12's done-when: all strategies on quick, fitness with spread, budget columns."""
    out = pathlib.Path(self.create_tempdir().full_path) / "compare"
    with mock.patch.dict(os.environ, tiny_compare.ENV):
      result = compare.compare(config.STRATEGIES, [0], output=out, stream=io.StringIO(),
                               **{**tiny_compare.TINY, "iterations": 2})
    markdown = (out / "compare.md").read_text()
    data = json.loads((out / "compare.json").read_text())
    header = markdown.split("## Strategies")[0]
    self.assertIn(tables.OFFLINE_NOTE, header)
    for name in ("best OOD-val (± spread)", "evaluations (trainings)", "tokens", "cost (USD)"):
      self.assertIn(name, header)
    rows = {r["strategy"]: r for r in data["budget_and_noise"]}
    self.assertEqual(sorted(rows), sorted(config.STRATEGIES))
    for strategy, row in rows.items():
      self.assertEqual(row["proposals"], 2, strategy)
      self.assertIn("95% CI over graphs", row["best_ood_val_acc_text"], strategy)
      self.assertIn(f"| {strategy} | 0 | {row['best_ood_val_acc_text']} |", header)
    self.assertEqual(rows["mutation"]["llm_calls"], 0)
    self.assertGreater(rows["spark"]["llm_calls"], rows["openevolve"]["llm_calls"])
    self.assertLen(result.cells, len(config.STRATEGIES))


class CompareErrorsTest(absltest.TestCase):
  """Bad grids fail in one line before any run starts."""

  def test_unknown_strategy_lists_valid_ones(self):
    with self.assertRaisesRegex(compare.CompareError,
                                "unknown strategy sparc; valid: spark, asr_only"):
      compare.parse_strategies("spark,sparc")
    done = subprocess.run([sys.executable, "-m", "spark_clrs.compare", "--strategies=sparc",
                           f"--output={self.create_tempdir().full_path}/c"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    self.assertEqual(done.returncode, 2)
    # Our error is one line, the last; lines above it are JAX / TensorFlow start-up logs.
    lines = done.stderr.strip().splitlines()
    self.assertLen([line for line in lines if line.startswith("error:")], 1)
    self.assertEqual(lines[-1], "error: unknown strategy sparc; valid: " +
                     ", ".join(config.STRATEGIES))
    self.assertNotIn("Traceback", done.stderr)

  def test_bad_seeds_and_duplicates(self):
    with self.assertRaisesRegex(compare.CompareError, "must be an integer"):
      compare.parse_seeds("0,x")
    with self.assertRaisesRegex(compare.CompareError, "twice"):
      compare.parse_seeds([1, 1])
    with self.assertRaisesRegex(compare.CompareError, "twice"):
      compare.parse_strategies(["spark", "spark"])
    self.assertEqual(compare.parse_seeds("0, 2"), (0, 2))

  def test_output_inside_a_search_run_is_refused(self):
    run = pathlib.Path(self.create_tempdir().full_path)
    (run / "config.flags").write_text("--strategy=spark\n")
    with self.assertRaisesRegex(compare.CompareError, "is a search run directory"):
      compare.compare(["spark"], [0], output=run, stream=io.StringIO())


if __name__ == "__main__":
  absltest.main()
