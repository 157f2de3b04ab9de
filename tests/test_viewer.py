"""The HTML viewer (no browser), the quiet console and the tqdm progress, in subprocesses.

Most archives here are synthetic but real: built through ``ArchiveDB`` by
benchmarks/viewer_size.py (real programs edited region by region, LLM calls, a mix of
verdicts), so no training runs. The final re-evaluation and Pareto sections are checked on
the session's real tiny search (tests/helpers.py), which tests/test_viewer_browser.py also
loads in Chromium.
"""

import io
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest

from spark_clrs import config as config_lib
from spark_clrs.analysis import palette, report, runs, viewer
from spark_clrs.cli import quiet
from spark_clrs.search import api, archive_db, rundir
from spark_clrs.search.summary import pareto_front

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
import helpers  # noqa: E402
import viewer_size  # noqa: E402

HOSTILE = viewer_size.HOSTILE
page_data = helpers.page_data


def _tmpdir(test: absltest.TestCase) -> pathlib.Path:
  tmp = tempfile.TemporaryDirectory()
  test.addCleanup(tmp.cleanup)
  return pathlib.Path(tmp.name)


def write_page(run_dir: pathlib.Path, **kwargs) -> pathlib.Path:
  """The run page of a run directory, from what report.py reads back."""
  run = runs.load_run(run_dir)
  return viewer.write_run_page(run.root, candidates=run.candidates, calls=run.llm_calls(),
                               summary=dict(run.summary), **kwargs)


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
  """``python -c code`` without the variables that would make the console verbose."""
  base = {k: v for k, v in os.environ.items()
          if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, env={**base, **(env or {})})


class SafeJsonTest(absltest.TestCase):

  def test_script_breakers_are_escaped_and_round_trip(self):
    data = {"reply": HOSTILE, "nan": math.nan, "inf": [math.inf, 1.5], "seps": "a\u2028b\u2029c",
            "nested": {"k": ("</script>", "<!--")}}
    text = viewer.safe_json(data)
    for char in ("<", ">", "&", "\u2028", "\u2029"):
      self.assertNotIn(char, text)
    back = json.loads(text)
    self.assertEqual(back["reply"], HOSTILE)
    self.assertIsNone(back["nan"])  # JSON.parse rejects NaN: it travels as null.
    self.assertEqual(back["inf"], [None, 1.5])
    self.assertEqual(back["seps"], "a\u2028b\u2029c")
    self.assertEqual(back["nested"]["k"], ["</script>", "<!--"])
    page = viewer.render({"kind": "run", "x": HOSTILE}, title="<b>t</b>")
    self.assertEqual(page.count("</script>"), 2)  # The data element's and the script's own.
    self.assertNotIn("<img", page)
    self.assertIn("<title>&lt;b&gt;t&lt;/b&gt;</title>", page)
    # Nothing the browser would fetch: no src/href to a URL, no CSS import or url().
    self.assertIsNone(re.search(r"""(src|href|action)\s*=\s*["']?(https?:)?//|@import|url\(""",
                                page))
    self.assertLen(re.findall(r"https?://", page), 1)  # The SVG namespace name only.


class RunPageTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.run_dir = viewer_size.build_archive(pathlib.Path(cls.tmp.name) / "run", 30, hostile=True)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_page_holds_candidates_diffs_calls_and_tables(self):
    path = write_page(self.run_dir)
    self.assertEqual(path, self.run_dir.resolve() / "results" / "index.html")
    page = path.read_text()
    self.assertNotIn("http-equiv=\"refresh\"", page)  # Not live: no reload.
    self.assertEqual(page.count("</script>"), 2)
    self.assertNotIn("<img src=x", page)
    data = page_data(page)
    db = archive_db.ArchiveDB(self.run_dir / "archive.sqlite")
    try:
      cands = {c.id: c for c in db.candidates()}
      calls = db.llm_calls()
    finally:
      db.close()
    rows = {r["id"]: r for r in data["candidates"]}
    self.assertEqual(sorted(rows), sorted(cands))
    texts = data["texts"]
    one = rows[1]
    diff = texts[one["diff"]].splitlines()
    self.assertEqual(diff[:2], ["--- programs/0000.py", "+++ programs/0001.py"])
    self.assertIn("+    # edit 1: scale the", "\n".join(diff))
    self.assertEqual(one["rationale"], cands[1].decision["rationale"])
    self.assertEqual(one["chosen_by"], "router (LLM)")
    self.assertEqual(one["answered_by"], "llm")
    self.assertIn(HOSTILE, one["directive"])
    self.assertEqual([k["role"] for k in one["calls"]], ["router", "refiner", "rewriter"])
    self.assertEqual(texts[one["calls"][2]["reply"]], HOSTILE)
    self.assertEqual(len(texts), len(set(texts)))  # Interned: the system prompt once.
    # Uncertainty: the synthetic metrics have 3 training seeds and a CI.
    ok = next(r for r in rows.values() if r["id"] > 0 and r["status"] == "evaluated")
    self.assertRegex(ok["fitness_text"], r"^\d\.\d{3} ± \d\.\d{3} \(95% CI, 3 seeds")
    self.assertLess(ok["fitness_lo"], ok["fitness"])
    self.assertIn("lo", data["seed_noise"])
    # Rejected candidates keep their stage; the seed is shown as a listing.
    rejected = [r for r in rows.values() if r["status"] == "rejected"]
    self.assertTrue(rejected)
    self.assertTrue(all(r["stage"] and r["fitness"] is None for r in rejected))
    self.assertTrue(rows[0]["diff_is_listing"])
    # Tokens and cost by role and model agree with the archive.
    usage = {(u["role"], u["model"]): u for u in data["llm_usage"]}
    self.assertEqual(sum(u["calls"] for u in usage.values()), len(calls))
    self.assertEqual(usage[("rewriter", "openai/gpt-4o-mini")]["tokens"],
                     sum(k["prompt_tokens"] + k["completion_tokens"] for k in calls
                         if k["role"] == "rewriter"))
    gains = {g["factor"]: g for g in data["factor_gains"]}
    self.assertEqual(sum(g["proposals"] for g in gains.values()),
                     sum(1 for c in cands.values() if c.is_proposal))
    self.assertEqual(data["best_so_far"][0], [0, cands[0].fitness])
    # Colours are fixed by factor name, whatever the order factors appear in.
    self.assertEqual(data["factor_colors"]["OPERATOR"], "#ff7f0e")
    self.assertEqual(data["factor_colors"]["ACTION"], "#1f77b4")
    self.assertEqual(sorted(data["factor_colors"]), sorted({r["factor"] for r in rows.values()}))
    # No final re-evaluation in this archive: the page says so; the front is search-time.
    self.assertIsNone(data["final"])
    self.assertTrue(data["pareto"]["front"])
    self.assertTrue(all(p["source"] == "search" for p in data["pareto"]["front"]))

  def test_factor_colours_do_not_depend_on_the_run(self):
    self.assertEqual(palette.factor_color("OPERATOR"), "#ff7f0e")
    self.assertEqual(palette.factor_color("OPERATOR,ACTION"),
                     palette.factor_color("ACTION+OPERATOR"))
    self.assertEqual(palette.factor_color("NEW_FACTOR"), palette.factor_color("NEW_FACTOR"))
    self.assertRegex(palette.factor_color("NEW_FACTOR"), r"^#[0-9a-f]{6}$")
    self.assertEqual(palette.strategy_color("spark"), "#1f77b4")
    # A run whose first proposal edits ACTION (not OPERATOR) colours them the same way.
    tmp = _tmpdir(self)
    other = viewer_size.build_archive(tmp / "other", 6, seed=3)
    data = page_data(write_page(other).read_text())
    self.assertEqual(data["factor_colors"]["OPERATOR"], "#ff7f0e")
    self.assertEqual(data["factor_colors"]["ACTION"], "#1f77b4")

  def test_live_page_reloads_itself(self):
    page = write_page(self.run_dir, live=True, refresh_s=7).read_text()
    self.assertIn('<meta http-equiv="refresh" content="7">', page)
    self.assertTrue(page_data(page)["live"])

  def test_report_cli_writes_the_run_page(self):
    done = subprocess.run([sys.executable, "-m", "spark_clrs.report", str(self.run_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    page = self.run_dir / "results" / "index.html"
    self.assertIn(str(page), done.stdout)
    self.assertEqual(page_data(page.read_text())["kind"], "run")


class ComparePageTest(absltest.TestCase):

  def test_one_band_per_strategy_and_run_links(self):
    tmp = _tmpdir(self)
    run_dirs = [viewer_size.build_archive(tmp / "spark" / f"seed{s}", 12, seed=s) for s in (0, 1)]
    rep = report.Report.of(runs.load_runs(run_dirs))
    files = report.write(rep, tmp, prefix="compare", title="two seeds <of> spark")
    self.assertEqual(files.html, tmp / "index.html")
    data = page_data(files.html.read_text())
    self.assertEqual(data["kind"], "compare")
    self.assertLen(data["groups"], 1)
    group = data["groups"][0]
    self.assertEqual(group["seeds"], ["0", "1"])
    self.assertEqual(max(group["band"]["n"]), 2)
    self.assertTrue(all(lo <= hi for lo, hi in zip(group["band"]["lo"], group["band"]["hi"],
                                                   strict=True)))
    self.assertEqual(group["cells"]["best_ood_val_acc"]["v"],
                     rep.groups[0].stat("best_ood_val_acc").mean)
    self.assertEqual(sorted(r["page"] for r in data["runs"]),
                     ["spark/seed0/results/index.html", "spark/seed1/results/index.html"])
    for run in run_dirs:  # Each run got its own page to link to.
      self.assertEqual(page_data((run / "results" / "index.html").read_text())["kind"], "run")
    self.assertTrue(data["scopes"])
    self.assertEqual(group["color"], palette.strategy_color("spark"))
    self.assertEqual({s["scope"]: s["color"] for s in data["scopes"]},
                     {s["scope"]: palette.factor_color(s["scope"]) for s in data["scopes"]})
    # The final-results section is there, labelled as search-time numbers (no final here).
    self.assertEqual([s["source"] for s in data["final"]["strategies"]], ["search"])
    self.assertLen(data["final"]["pareto"], 1)


class RealRunPageTest(absltest.TestCase):
  """The page of the session's real tiny search: final re-evaluation and Pareto front."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tiny = helpers.tiny_run()
    cls.data = page_data(cls.tiny.page.read_text())

  def test_final_re_evaluation_is_shown_labelled(self):
    summary = json.loads((self.tiny.run_dir / "results" / "summary.json").read_text())
    final = self.data["final"]
    self.assertEqual(final["seeds"], summary["final"]["seeds"])
    self.assertIn("fresh seeds never used in the search", final["label"])
    by_id = {c["id"]: c for c in summary["final"]["candidates"]}
    self.assertEqual(sorted(r["id"] for r in final["rows"]), sorted(by_id))
    (result,) = [r for r in final["rows"] if r["best"]]
    self.assertEqual(result["id"], summary["final"]["best_id"])
    for key in ("ood_val_acc", "ood_acc"):
      self.assertEqual(result[key], by_id[result["id"]][key])
      self.assertEqual(result[f"{key}_text"], by_id[result["id"]][f"{key}_interval"]["text"])
    self.assertIn("re-evaluated", viewer.run_title(summary))

  def test_pareto_front_is_the_summarys(self):
    run = runs.load_run(self.tiny.run_dir)
    front = pareto_front(run.candidates, run.summary.get("final"))
    self.assertEqual([(p["id"], p["accuracy"], p["macs"]) for p in self.data["pareto"]["front"]],
                     [(p["id"], p["accuracy"], p["macs"]) for p in front])
    self.assertIn("final", {p["source"] for p in self.data["pareto"]["points"]})
    self.assertIn("final", {p["source"] for p in self.data["pareto"]["front"]})


class LiveRefreshTest(absltest.TestCase):
  """The search writes results/index.html while it runs (throttled) and at the end."""

  def _search(self, refresh_s: float) -> list[bool]:
    import test_search

    tmp = _tmpdir(self)
    cfg = config_lib.SearchConfig(output=str(tmp / "run"), profile="quick",
                                  feasibility_check=False, progress="none", num_islands=2,
                                  iterations=4, final_top_k=0)
    writes = []
    real = viewer.write_run_page

    def counting(run_dir, **kwargs):
      writes.append(kwargs["live"])
      return real(run_dir, **kwargs)

    with mock.patch.object(viewer, "REFRESH_S", refresh_s), \
        mock.patch.object(viewer, "REFRESH_COST_FACTOR", 0.0 if refresh_s == 0 else 10.0), \
        mock.patch.object(viewer, "write_run_page", counting):
      api.run(rundir.open_run(cfg), proposer=test_search.FakeProposer(["good"] * 4),
              evaluate=helpers.FakeTrainer(), stream=io.StringIO())
    page = (tmp / "run" / "results" / "index.html").read_text()
    self.assertNotIn('http-equiv="refresh"', page)  # The final page is not live.
    self.assertLen(page_data(page)["candidates"], 5)
    self.assertTrue((tmp / "run" / "results" / "best_so_far.png").is_file())
    return writes

  def test_refreshed_at_most_every_few_seconds_and_at_the_end(self):
    self.assertEqual(self._search(refresh_s=3600.0), [True, False])  # First result, then end.
    every = self._search(refresh_s=0.0)
    self.assertEqual(every, [True] * 5 + [False])  # Seed + 4 proposals, then the final one.


class QuietConsoleTest(absltest.TestCase):

  NOISE = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
           "STDERR\n"
           "I0000 00:00:1796164528.966477    5813 cudart_stub.cc:31] Could not find cuda drivers "
           "on your machine, GPU will not be used.\n"
           "E0000 00:00:1796164531.525981    5813 cuda_platform.cc:52] failed call to cuInit: "
           "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
           "W1201 22:35:34.622146 140560111790976 gpu_device.cc:2344] Cannot dlopen some GPU "
           "libraries.\n")
  KEPT = ("E1201 22:35:35.000001 1234 pjrt_client.cc:99] RESOURCE_EXHAUSTED: out of memory\n"
          "W1201 22:35:34.622146 140560111790976 spark.py:97] router gave no usable scope\n"
          "a line of our own\n")

  def _emit(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    code = f"""
        import os, sys
        sys.argv = ["spark_clrs.search", *{list(args)!r}]
        from spark_clrs.cli import quiet
        print(quiet.install(), os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
        os.write(2, {(self.NOISE + self.KEPT).encode()!r})  # As C++ code writes: fd 2.
        sys.stderr.write("python stderr\\n")
        print(sys.stderr.isatty())
        """
    return _run(code, env=env)

  def test_cpp_noise_hidden_by_default_and_shown_with_verbose(self):
    quiet_run = self._emit()
    self.assertEqual(quiet_run.returncode, 0, quiet_run.stderr)
    self.assertEqual(quiet_run.stdout.splitlines()[0], "True 2")
    for line in self.NOISE.splitlines():
      self.assertNotIn(line, quiet_run.stderr)
    for line in self.KEPT.splitlines():
      self.assertIn(line, quiet_run.stderr)
    self.assertIn("python stderr", quiet_run.stderr)
    for verbose in (self._emit("--verbose"), self._emit(env={"SPARK_CLRS_VERBOSE": "1"})):
      self.assertEqual(verbose.stdout.splitlines()[0], "False None")
      for line in (self.NOISE + self.KEPT).splitlines():
        self.assertIn(line, verbose.stderr)

  def test_verbose_flag_is_accepted(self):
    # compare, transfer and evaluate import TensorFlow to print their help (tens of
    # seconds on 2 busy cores); they define the flag the same way.
    for module in ("search", "check", "report"):
      done = subprocess.run([sys.executable, "-m", f"spark_clrs.{module}", "--verbose",
                             "--helpfull"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
      self.assertNotIn("Unknown command line flag", done.stderr, module)
      self.assertIn("--[no]verbose: Show TensorFlow, XLA, CUDA and absl C++ log lines",
                    done.stdout, module)


class ProgressOutputTest(absltest.TestCase):

  CODE = """
      import time
      from spark_clrs.search import progress
      bar = progress.Progress(3, start=1, mode="{mode}")
      print(bar.mode, flush=True)
      bar.update(2, best=0.25, valid_rate=1.0)
      bar.message("candidate 2: ok")
      bar.update(3, best=0.5, valid_rate=0.5)
      bar.message("candidate 3: NEW BEST")
      bar.close()
      """

  def test_plain_lines_in_a_log(self):
    done = _run(self.CODE.format(mode="auto"))
    self.assertEqual(done.returncode, 0, done.stderr)
    self.assertEqual(done.stdout.strip(), "log")
    self.assertNotIn("\r", done.stderr)
    self.assertEqual(done.stderr.splitlines(), [
        "candidate 2: ok  [2/3 | best 0.2500 | valid 100% | ETA " +
        done.stderr.splitlines()[0].rsplit("ETA ", 1)[1],
        "candidate 3: NEW BEST  [3/3 | best 0.5000 | valid 50% | ETA 0s]"])

  def test_live_bar_on_a_terminal(self):
    import pty

    leader, follower = pty.openpty()
    try:
      done = subprocess.run(
          [sys.executable, "-c", textwrap.dedent(self.CODE.format(mode="auto"))], cwd=ROOT,
          stdout=subprocess.PIPE, stderr=follower, timeout=300)
      os.close(follower)
      follower = -1
      out = b""
      while True:
        try:
          chunk = os.read(leader, 65536)
        except OSError:
          break
        if not chunk:
          break
        out += chunk
    finally:
      if follower != -1:
        os.close(follower)
      os.close(leader)
    self.assertEqual(done.returncode, 0)
    self.assertEqual(done.stdout.decode().strip(), "bar")
    text = out.decode("utf-8", "replace")
    self.assertIn("\r", text)  # Redrawn in place.
    self.assertIn("candidate 2: ok", text)
    self.assertRegex(text, r"search: 3/3 \|[^|]+\| \[[0-9:]+<[0-9:]+, best 0\.5000 \| valid 50%\]")

  def test_notebook_mode_without_widgets_falls_back_to_lines(self):
    done = _run(self.CODE.format(mode="notebook"))
    self.assertEqual(done.returncode, 0, done.stderr)
    try:
      import ipywidgets  # noqa: F401
    except ImportError:
      self.assertEqual(done.stdout.strip(), "log")
      self.assertIn("candidate 3: NEW BEST  [3/3 |", done.stderr)


if __name__ == "__main__":
  absltest.main()
