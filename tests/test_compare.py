"""compare: the grid, its tables (final results, paired tests, Pareto fronts), plots and resume.

The grid logic runs on the real search loop with the fake trainer (tests/helpers.py: 2
strategies x 3 seeds, every strategy, a raised budget); one real cell is the session's
tiny real run (``python -m spark_clrs.compare`` with SPARK on seed 0, in the jail). The
full real grid of every strategy is marked slow.
"""

import io
import json
import pathlib
import shutil
import subprocess
import sys
from unittest import mock

import pytest
from absl.testing import absltest

from spark_clrs import config
from spark_clrs.analysis import compare, significance
from spark_clrs.search import archive_db
from spark_clrs.search.summary import OFFLINE_NOTE

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import helpers  # noqa: E402

STRATEGIES = helpers.FAKE_STRATEGIES
SEEDS = helpers.FAKE_SEEDS


def _snapshot(run_dir: pathlib.Path) -> tuple:
  """Everything a re-run would change: candidates, LLM calls, events, summary."""
  db = archive_db.ArchiveDB(run_dir / "archive.sqlite")
  try:
    rows = tuple((c.id, c.status, c.fitness, c.finished_at) for c in db.candidates())
    calls, events = len(db.llm_calls()), len(db.events())
  finally:
    db.close()
  return rows, calls, events, (run_dir / "results" / "summary.json").read_text()


def _summary(run_dir: pathlib.Path) -> dict:
  return json.loads((run_dir / "results" / "summary.json").read_text())


def _final_best(summary: dict) -> dict:
  final = summary["final"]
  return next(c for c in final["candidates"] if c["id"] == final["best_id"])


class CompareGridTest(absltest.TestCase):
  """Two strategies x three seeds on the real search loop with the fake trainer."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.result = helpers.fake_compare()

  def test_one_run_per_cell_and_files(self):
    out = self.result.output
    cells = {(c.strategy, c.seed): c for c in self.result.cells}
    self.assertEqual(sorted(cells), sorted((s, k) for s in STRATEGIES for k in SEEDS))
    for (strategy, seed), cell in cells.items():
      self.assertEqual(cell.run_dir, out / strategy / f"seed{seed}")
      summary = _summary(cell.run_dir)
      self.assertEqual((summary["strategy"], summary["seed"]), (strategy, seed))
      self.assertEqual(summary["proposals"], helpers.FAKE_COMPARE["iterations"])
      self.assertTrue(summary["complete"])
      self.assertEqual(summary["final"]["status"], "complete")
    for name in ("compare.md", "compare.json", "index.html", "compare_best_so_far.png",
                 "compare_scopes.png", "compare_rates.png", "compare_pareto.png"):
      self.assertTrue((out / name).is_file(), name)
    for name in ("compare_best_so_far.png", "compare_scopes.png", "compare_rates.png",
                 "compare_pareto.png"):
      self.assertTrue((out / name).read_bytes().startswith(b"\x89PNG"), name)

  def test_search_time_table_matches_the_runs_summaries(self):
    out = self.result.output
    data = json.loads((out / "compare.json").read_text())
    self.assertEqual([g["label"] for g in data["groups"]], list(STRATEGIES))
    self.assertEqual(data["compare"]["strategies"], list(STRATEGIES))
    self.assertEqual(data["compare"]["iterations"], helpers.FAKE_COMPARE["iterations"])
    markdown = (out / "compare.md").read_text()
    for group in data["groups"]:
      summaries = [_summary(out / group["strategy"] / f"seed{k}") for k in SEEDS]
      self.assertEqual(group["seeds"], list(SEEDS))
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
        self.assertEqual(stat["n"], 3, key)
      # The best-so-far band ends at the mean of the runs' best so far.
      band = group["best_so_far"]
      self.assertEqual(band["x"][0], 0)
      self.assertAlmostEqual(band["mean"][-1], group["metrics"]["best_ood_val_acc"]["mean"])
      best = group["metrics"]["best_ood_val_acc"]
      self.assertIn(f"{best['mean']:.4f} ± {best['std']:.4f}", markdown)
    self.assertIn("| spark | 0,1,2 |", markdown)
    self.assertIn("| mutation | 0,1,2 |", markdown)
    # mutation makes no LLM calls; the offline SPARK roles do (their tokens are estimates).
    tokens = {r["strategy"]: r["tokens"] for r in data["budget_and_noise"]}
    self.assertGreater(tokens["spark"], 0)
    self.assertEqual(tokens["mutation"], 0)

  def test_final_results_paired_tests_and_fronts_in_the_table(self):
    """The done-when of issue 18: re-evaluated bests with intervals and the paired test."""
    out = self.result.output
    markdown = (out / "compare.md").read_text()
    data = json.loads((out / "compare.json").read_text())["final"]
    head = markdown.split("## What each run spent")[0]
    self.assertIn("## Results that say whether a difference is real", head)
    self.assertIn("fresh training seeds never used in the search", head)
    self.assertIn("paired t over run seeds", head)
    self.assertIn("exact sign-flip permutation test", head)
    self.assertIn("0.25 for 3 seeds", head)
    for strategy in STRATEGIES:
      row = next(r for r in data["strategies"] if r["strategy"] == strategy)
      bests = [_final_best(_summary(out / strategy / f"seed{k}")) for k in SEEDS]
      for key in ("ood_acc", "ood_val_acc"):
        interval = significance.Interval.of([b[key] for b in bests])
        self.assertAlmostEqual(row[key]["mean"], interval.mean)
        self.assertIn(interval.format(), head)
      self.assertIn(f"| {strategy} | 0,1,2 | final |", head)
    tests = {t["metric"]: t for t in data["paired_tests"]}
    self.assertEqual(sorted(tests), ["ood_acc", "ood_val_acc"])
    for key, t in tests.items():
      self.assertEqual((t["strategy"], t["reference"]), ("mutation", "spark"))
      diffs = [_final_best(_summary(out / "mutation" / f"seed{k}"))[key]
               - _final_best(_summary(out / "spark" / f"seed{k}"))[key] for k in SEEDS]
      self.assertSequenceAlmostEqual(t["diffs"], diffs)
      expected = significance.paired(dict(zip(SEEDS, diffs, strict=True)),
                                     dict.fromkeys(SEEDS, 0.0))
      self.assertAlmostEqual(t["sign_flip_p"], expected.sign_flip_p)
      self.assertEqual(t["min_sign_flip_p"], 0.25)
      self.assertIn(f"| mutation | {t['metric_label']} | 0,1,2 | {t['mean']:+.3f}", head)
    fronts = {f["strategy"]: f for f in data["pareto"]}
    self.assertEqual(sorted(fronts), sorted(STRATEGIES))
    for strategy, front in fronts.items():
      self.assertTrue(front["front"], strategy)
      for p in front["front"]:
        self.assertIn(p["source"], ("final", "search"))
        self.assertIn(f"seed {p['seed']} #{p['id']}: {p['accuracy']:.3f}", head)

  def test_offline_header_and_the_budget_table(self):
    out = self.result.output
    markdown = (out / "compare.md").read_text()
    data = json.loads((out / "compare.json").read_text())
    header = markdown.split("## Strategies")[0]
    self.assertIn("rule-based", header)
    self.assertIn("compare the search machinery, not the methods", header)
    self.assertEqual(data["compare"]["proposer_note"], OFFLINE_NOTE)
    self.assertIn("budget 3 evaluations (proposals) per run", header)
    self.assertIn("| strategy | seed | search-time best OOD-val (95% CI) |", header)
    for row in data["budget_and_noise"]:
      summary = json.loads((pathlib.Path(row["run_dir"]) / "results" / "summary.json")
                           .read_text())
      self.assertEqual(row["evaluations"], summary["evaluations"])
      self.assertEqual(row["proposals"], 3)
      # The interval is shown with the fitness and says what it is.
      self.assertIn("95% CI", row["best_ood_val_acc_text"])
      self.assertIn(row["best_ood_val_acc_text"], header)
      self.assertEqual(summary["proposer_note"], OFFLINE_NOTE)
      self.assertIsNotNone(summary["best_ood_acc"])

  def test_page_shows_results_tests_fronts_and_fixed_colours(self):
    data = helpers.page_data((self.result.output / "index.html").read_text())
    self.assertEqual(data["kind"], "compare")
    self.assertEqual([s["strategy"] for s in data["final"]["strategies"]], list(STRATEGIES))
    self.assertLen(data["final"]["paired_tests"], 2)
    self.assertLen(data["final"]["pareto"], 2)
    colours = {g["strategy"]: g["color"] for g in data["groups"]}
    self.assertEqual(colours, {"spark": "#1f77b4", "mutation": "#d62728"})
    self.assertEqual(sorted(data["strategy_notes"]), sorted(STRATEGIES))

  def test_resumed_compare_reruns_nothing(self):
    before = {c.run_dir: _snapshot(c.run_dir) for c in self.result.cells}
    trainer = helpers.FakeTrainer()
    again = compare.compare(STRATEGIES, SEEDS, output=self.result.output, stream=io.StringIO(),
                            evaluate=trainer, **helpers.FAKE_COMPARE)
    self.assertEqual({c.action for c in again.cells}, {"skipped"})
    self.assertEqual(trainer.calls, [])
    for run_dir, snapshot in before.items():
      self.assertEqual(_snapshot(run_dir), snapshot, run_dir)

  def test_raising_iterations_resumes_every_run(self):
    """A larger budget on a finished grid adds exactly the new proposals to each run."""
    out = pathlib.Path(self.create_tempdir().full_path) / "compare"
    for cell in self.result.cells:
      shutil.copytree(cell.run_dir, out / cell.strategy / f"seed{cell.seed}")
    before = {(c.strategy, c.seed): _snapshot(out / c.strategy / f"seed{c.seed}")[0]
              for c in self.result.cells}
    n = helpers.FAKE_COMPARE["iterations"]
    result = compare.compare(STRATEGIES, SEEDS, output=out, stream=io.StringIO(),
                             evaluate=helpers.FakeTrainer(),
                             **{**helpers.FAKE_COMPARE, "iterations": n + 1})
    self.assertEqual({c.action for c in result.cells}, {"ran"})
    for cell in result.cells:
      rows = _snapshot(cell.run_dir)[0]
      old = before[(cell.strategy, cell.seed)]
      self.assertEqual(rows[:n + 1], old)  # The seed and the first proposals are untouched.
      self.assertEqual([r[0] for r in rows], list(range(n + 2)))
    data = json.loads((out / "compare.json").read_text())
    self.assertEqual(data["compare"]["iterations"], n + 1)
    self.assertEqual([g["proposals"] for g in data["groups"]], [3 * (n + 1)] * 2)

  def test_run_with_other_settings_is_refused(self):
    with self.assertRaisesRegex(compare.CompareError, r"different settings: --profile"):
      compare.compare(["spark"], [0], output=self.result.output, stream=io.StringIO(),
                      evaluate=helpers.FakeTrainer(),
                      **{**helpers.FAKE_COMPARE, "profile": "spark"})


class EveryStrategyTest(absltest.TestCase):

  def test_every_strategy_with_intervals_and_budget_columns(self):
    """Every strategy on the real loop (fake trainer): fitness with its interval, spend."""
    out = pathlib.Path(self.create_tempdir().full_path) / "compare"
    result = compare.compare(config.STRATEGIES, [0], output=out, stream=io.StringIO(),
                             evaluate=helpers.FakeTrainer(),
                             **{**helpers.FAKE_COMPARE, "iterations": 2})
    markdown = (out / "compare.md").read_text()
    data = json.loads((out / "compare.json").read_text())
    header = markdown.split("## Strategies")[0]
    self.assertIn(OFFLINE_NOTE, header)
    for name in ("search-time best OOD-val (95% CI)", "evaluations (trainings)", "tokens",
                 "cost (USD)", "re-evaluated best OOD-test"):
      self.assertIn(name, header)
    rows = {r["strategy"]: r for r in data["budget_and_noise"]}
    self.assertEqual(sorted(rows), sorted(config.STRATEGIES))
    for strategy, row in rows.items():
      self.assertEqual(row["proposals"], 2, strategy)
      self.assertIn("95% CI", row["best_ood_val_acc_text"], strategy)
      self.assertIn(f"| {strategy} | 0 | {row['best_ood_val_acc_text']} |", header)
    self.assertEqual(rows["mutation"]["llm_calls"], 0)
    self.assertGreater(rows["spark"]["llm_calls"], rows["openevolve"]["llm_calls"])
    self.assertLen(result.cells, len(config.STRATEGIES))
    # Each strategy is tested against SPARK (one seed: no interval, the smallest p is 1).
    tests = [t for t in data["final"]["paired_tests"] if t["metric"] == "ood_acc"]
    self.assertEqual(sorted(t["strategy"] for t in tests),
                     sorted(s for s in config.STRATEGIES if s != "spark"))
    self.assertTrue(all(t["min_sign_flip_p"] == 1.0 for t in tests))


class RealCellTest(absltest.TestCase):
  """The session's real run: ``python -m spark_clrs.compare`` with one jailed cell."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tiny = helpers.tiny_run()

  def test_the_real_cell_ran_and_its_final_result_is_the_table(self):
    out, run = self.tiny.compare_dir, self.tiny.run_dir
    err = self.tiny.process.stderr
    self.assertIn("[1/1] spark seed 0", err)
    self.assertIn(": running", err)
    summary = _summary(run)
    self.assertEqual(summary["proposals"], helpers.TINY["iterations"])
    self.assertLen(summary["final"]["seeds"], helpers.TINY["final_seeds"])
    best = _final_best(summary)
    data = json.loads((out / "compare.json").read_text())
    (row,) = data["final"]["strategies"]
    self.assertEqual(row["source"], "final")
    self.assertEqual(row["ood_acc"]["mean"], best["ood_acc"])
    # What compare printed is compare.md, final result first.
    markdown = (out / "compare.md").read_text()
    self.assertIn(markdown.strip(), self.tiny.process.stdout)
    self.assertIn(best["ood_acc_interval"]["text"], markdown)
    self.assertIn("| spark | 0 | final |", markdown)

  def test_the_same_command_resumes_and_reruns_nothing(self):
    out = pathlib.Path(self.create_tempdir().full_path) / "compare"
    shutil.copytree(self.tiny.compare_dir, out)
    run = out / helpers.TINY_STRATEGY / f"seed{helpers.TINY_SEED}"
    before = _snapshot(run)
    done = subprocess.run(helpers.tiny_compare_command(out), cwd=helpers.ROOT,
                          env=helpers.quiet_env(), capture_output=True, text=True, timeout=300)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertEqual(done.stderr.count("finished before, not re-run"), 1, done.stderr)
    self.assertNotIn(": running", done.stderr)
    self.assertIn("| spark | 0 | final |", done.stdout)
    self.assertEqual(_snapshot(run), before)


@pytest.mark.slow
class RealGridTest(absltest.TestCase):

  def test_every_strategy_for_real_on_quick(self):
    """Issue 12's done-when, trained for real: all strategies, intervals, budget columns."""
    out = pathlib.Path(self.create_tempdir().full_path) / "compare"
    with mock.patch.dict("os.environ", helpers.ENV):
      compare.compare(config.STRATEGIES, [0], output=out, stream=io.StringIO(),
                      **{**helpers.TINY, "iterations": 2})
    data = json.loads((out / "compare.json").read_text())
    rows = {r["strategy"]: r for r in data["budget_and_noise"]}
    self.assertEqual(sorted(rows), sorted(config.STRATEGIES))
    for strategy, row in rows.items():
      self.assertEqual(row["proposals"], 2, strategy)
      self.assertIn("95% CI", row["best_ood_val_acc_text"], strategy)
    self.assertTrue(all(s["source"] == "final" for s in data["final"]["strategies"]))


class CompareErrorsTest(absltest.TestCase):
  """Bad grids fail in one line before any run starts."""

  def test_unknown_strategy_lists_valid_ones(self):
    with self.assertRaisesRegex(compare.CompareError,
                                "unknown strategy sparc; valid: spark, asr_only"):
      compare.parse_strategies("spark,sparc")
    done = subprocess.run([sys.executable, "-m", "spark_clrs.compare", "--strategies=sparc",
                           f"--output={self.create_tempdir().full_path}/c"], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=120)
    self.assertEqual(done.returncode, 2)
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
