"""The run page of a real tiny search, loaded in headless Chromium (Debian's package).

The session's real tiny search (tests/helpers.py: the compare CLI with one jailed cell,
quick profile, 2 proposals, 2 training steps, hidden 8, a final re-evaluation) makes the
run; in a copy of it a hostile LLM call is added to the archive and ``python -m
spark_clrs.report RUN`` rewrites the page. The browser runs with ``--dump-dom`` (the DOM
after the page's script) and ``--screenshot``, never with network access. Outside CI the
tests skip when no ``chromium`` is installed; with ``CI=true`` they fail instead (.ci/run
installs it).

``SPARK_CLRS_UPDATE_SCREENSHOT=1`` also copies the screenshot to docs/run_viewer.png (the
README's image).
"""

import difflib
import html
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest

from spark_clrs.analysis import palette
from spark_clrs.search import archive_db

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
import helpers  # noqa: E402
import viewer_size  # noqa: E402

SCREENSHOT = ROOT / "docs" / "run_viewer.png"
HOSTILE = viewer_size.HOSTILE
# C++ chatter that the quiet console must keep off the search's stderr.
NOISE = ("cudart_stub", "cuInit", "absl::InitializeLog", "cpu_feature_guard", "oneDNN")


def _chromium() -> str | None:
  path = viewer_size.chromium()
  if path is None and os.environ.get("CI", "").lower() == "true":
    raise AssertionError("CI=true but no chromium on PATH: .ci/run installs Debian's package "
                         "(apt-get install -y chromium)")
  return path


class BrowserTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.chromium = _chromium()
    if cls.chromium is None:
      raise absltest.SkipTest("chromium is not installed (apt-get install -y chromium); "
                              "with CI=true this test fails instead of skipping")
    tiny = helpers.tiny_run()
    cls.search = tiny.process
    cls.search_page_path = tiny.page
    cls.tmp = tempfile.TemporaryDirectory()
    cls.run_dir = tiny.copy(pathlib.Path(cls.tmp.name) / "run")
    env = helpers.quiet_env()
    cls.page = cls.run_dir / "results" / "index.html"
    cls.search_page = cls.page.read_text()  # As the search itself left it (the screenshot).
    cls.search_copy = cls.run_dir / "results" / "as_searched.html"
    cls.search_copy.write_text(cls.search_page)
    db = archive_db.ArchiveDB(cls.run_dir / "archive.sqlite")
    try:
      cls.candidates = {c.id: c for c in db.candidates()}
      db.insert_llm_call(1, {"role": "rewriter", "model": "openai/hostile",
                             "messages": [{"role": "user", "content": "<b>prompt</b> " + HOSTILE}],
                             "reply": HOSTILE, "prompt_tokens": 7, "completion_tokens": 9,
                             "cost": 0.25, "latency_s": 0.5, "cached": False})
    finally:
      db.close()
    cls.report = subprocess.run([sys.executable, "-m", "spark_clrs.report", str(cls.run_dir)],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if cls.report.returncode != 0:
      raise AssertionError(f"spark_clrs.report failed:\n{cls.report.stderr[-3000:]}")

  @classmethod
  def tearDownClass(cls):
    tmp = getattr(cls, "tmp", None)
    if tmp is not None:
      tmp.cleanup()
    super().tearDownClass()

  def _browser(self, *args: str, url: str) -> subprocess.CompletedProcess:
    profile = tempfile.TemporaryDirectory()
    self.addCleanup(profile.cleanup)
    return subprocess.run([*viewer_size.browser_command(self.chromium, profile.name), *args, url],
                          capture_output=True, timeout=300)

  def _dom(self, fragment: str = "") -> str:
    done = self._browser("--dump-dom", url=self.page.as_uri() + fragment)
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    dom = done.stdout.decode("utf-8")
    self.assertIn('data-ready="1"', dom)  # The script ran to its end.
    return dom

  def test_search_console_is_quiet_and_plain(self):
    """The CLI's stderr: no TF/CUDA C++ lines; one plain progress line per message."""
    err = self.search.stderr
    for word in NOISE:
      self.assertNotIn(word, err)
    self.assertNotIn("\r", err)  # Not a terminal: plain lines, no redrawn bar.
    n = helpers.TINY["iterations"]
    self.assertRegex(err, rf"proposal 1: .*  \[0/{n} \| best [0-9.]+ \| valid - \| ETA \?\]")
    self.assertRegex(err, rf"candidate {n}: .*  \[{n}/{n} \| best [0-9.]+ \| valid \d+% \| ETA 0s\]")
    self.assertIn(f"viewer: {self.search_page_path}", err)
    self.assertNotIn('http-equiv="refresh"', self.search_page)  # Final page: not live.

  def test_dom_holds_every_candidate_a_diff_line_and_the_rationale(self):
    dom = self._dom("#c=1")
    for cid in self.candidates:
      self.assertIn(f'<tr data-id="{cid}"', dom)
    one = self.candidates[1]
    parent = self.candidates[one.parent_id]
    added = [line for line in difflib.unified_diff(parent.code.splitlines(),
                                                   one.code.splitlines(), lineterm="")
             if line.startswith("+") and not line.startswith("+++") and line.strip("+ ")]
    self.assertTrue(added, "candidate 1 changed nothing")
    self.assertIn(f'<span class="add">{html.escape(added[0], quote=False)}\n</span>', dom)
    rationale = one.decision.get("rationale")
    self.assertTrue(rationale)
    self.assertIn(f'<span class="rationale">{html.escape(rationale, quote=False)}</span>', dom)
    self.assertIn("Diff against parent #" + str(one.parent_id), dom)

  def test_final_result_and_pareto_front_are_drawn(self):
    """The run's result (final re-evaluation) and the non-dominated candidates, labelled."""
    dom = self._dom()
    summary = json.loads((self.run_dir / "results" / "summary.json").read_text())
    final = summary["final"]
    best = next(c for c in final["candidates"] if c["id"] == final["best_id"])
    self.assertIn("<h2>Final re-evaluation (the run's result)</h2>", dom)
    self.assertIn("result: re-evaluated OOD-val", dom)
    self.assertIn(html.escape(best["ood_val_acc_interval"]["text"], quote=False), dom)
    section = dom[dom.index('<section id="pareto">'):]
    section = section[:section.index("</section>")]
    self.assertIn("the non-dominated candidates", section)
    self.assertIn('aria-label="accuracy against MACs"', section)
    for p in summary["pareto_front"]:
      self.assertIn(f'href="#c={p["id"]}"', section)
    # Factor colours are the palette's (fixed by name): the candidate table's swatches.
    for factor in {helpers.page_data(self.page.read_text())["candidates"][i]["factor"]
                   for i in range(len(self.candidates))}:
      colour = palette.factor_color(factor)
      rgb = ", ".join(str(int(colour[i:i + 2], 16)) for i in (1, 3, 5))
      self.assertIn(f"background: rgb({rgb})", dom, factor)

  def test_hostile_reply_is_shown_as_text_and_runs_nothing(self):
    dom = self._dom("#c=1")
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    self.assertTrue(title.startswith("spark_clrs run: spark on quick"), title)
    self.assertNotIn("pwned", title)
    self.assertIsNone(re.search(r"<(html|body)[^>]*data-pwned", dom))  # The script never ran.
    self.assertNotIn("<img", dom)  # The <img onerror> never became an element.
    shown = html.escape(HOSTILE, quote=False)
    self.assertIn(f'<pre class="wrap reply">{shown}</pre>', dom)  # The reply, as text.
    self.assertIn(html.escape("<b>prompt</b> ", quote=False), dom)  # The prompt too.
    self.assertNotIn("<b>prompt</b>", dom)
    self.assertIn("openai/hostile", dom)

  def test_screenshot_is_not_blank(self):
    """Of the page as the search wrote it (without the hostile call added afterwards)."""
    import numpy as np
    from PIL import Image

    shot = pathlib.Path(self.tmp.name) / "run_viewer.png"
    done = self._browser("--hide-scrollbars", "--window-size=1280,1500",
                         f"--screenshot={shot}", url=self.search_copy.as_uri())
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    with Image.open(shot) as image:
      self.assertEqual(image.size, (1280, 1500))
      pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    self.assertGreater(pixels.std(), 20.0)  # Not one flat colour.
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    self.assertGreater(colours, 50)  # Text, plot and table, not a blank page.
    dark = (pixels.mean(axis=2) < 100).mean()
    self.assertGreater(dark, 0.005)  # Some text was drawn.
    if os.environ.get("SPARK_CLRS_UPDATE_SCREENSHOT") == "1":
      SCREENSHOT.parent.mkdir(exist_ok=True)
      shutil.copyfile(shot, SCREENSHOT)


if __name__ == "__main__":
  absltest.main()
