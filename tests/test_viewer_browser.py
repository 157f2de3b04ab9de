"""The run page of a real tiny search, loaded in headless Chromium (Debian's package).

One real search (the CLI, quick profile, 2 proposals, 2 training steps, hidden 8,
sharing test_search's JAX compilation cache) makes the run; a hostile LLM call is then
added to its archive and ``python -m spark_clrs.report RUN`` rewrites the page. The
browser runs with ``--dump-dom`` (the DOM after the page's script) and ``--screenshot``,
never with network access. Outside CI the tests skip when no ``chromium`` is installed;
with ``CI=true`` they fail instead (.ci/run installs it).

``SPARK_CLRS_UPDATE_SCREENSHOT=1`` also copies the screenshot to docs/run_viewer.png (the
README's image).
"""

import difflib
import html
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest

from spark_clrs.search import archive_db

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import viewer_size  # noqa: E402

JAX_CACHE = pathlib.Path(tempfile.gettempdir()) / "spark_clrs_test_jax_cache"
TINY_FLAGS = ["--profile=quick", "--profile_overrides=train_steps=2",
              "--profile_overrides=hidden=8", "--iterations=2", "--num_islands=2", "--seed=0"]
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
    cls.tmp = tempfile.TemporaryDirectory()
    cls.run_dir = pathlib.Path(cls.tmp.name) / "run"
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE), "MPLBACKEND": "Agg"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("SPARK_CLRS_VERBOSE", None)
    cls.search = subprocess.run(
        [sys.executable, "-m", "spark_clrs.search", *TINY_FLAGS, f"--output={cls.run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    if cls.search.returncode != 0:
      raise AssertionError(f"the tiny search failed:\n{cls.search.stderr[-3000:]}")
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
    self.assertRegex(err, r"proposal 1: .*  \[0/2 \| best [0-9.]+ \| valid - \| ETA \?\]")
    self.assertRegex(err, r"candidate 2: .*  \[2/2 \| best [0-9.]+ \| valid \d+% \| ETA 0s\]")
    self.assertIn(f"viewer: {self.page}", err)
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
