"""Progress display: tqdm's bar redrawn on a terminal, plain lines otherwise."""

import io

from absl.testing import absltest

from spark_clrs.search import progress


class _Tty(io.StringIO):

  def isatty(self):
    return True


class ProgressTest(absltest.TestCase):

  def test_plain_lines_when_not_a_terminal(self):
    stream = io.StringIO()
    bar = progress.Progress(10, start=2, stream=stream)
    self.assertEqual(bar.mode, "log")
    bar.update(3, best=0.5, valid_rate=0.75)
    bar.message("candidate 3: ok")
    bar.close()
    self.assertEqual(stream.getvalue().count("\n"), 1)
    self.assertIn("candidate 3: ok  [3/10 | best 0.5000 | valid 75% | ETA ", stream.getvalue())
    self.assertNotIn("\r", stream.getvalue())

  def test_bar_redrawn_in_place_on_a_terminal(self):
    stream = _Tty()
    bar = progress.Progress(4, stream=stream)
    self.assertEqual(bar.mode, "bar")
    bar.update(1, best=0.25, valid_rate=1.0)
    bar.message("proposal 2: scope ACTION")
    bar.update(4, best=0.5, valid_rate=0.5)
    bar.close()
    text = stream.getvalue()
    self.assertIn("\rsearch: 1/4 |", text)  # tqdm's bar, redrawn in place.
    self.assertIn("proposal 2: scope ACTION\n", text)
    self.assertRegex(text, r"search: 4/4 \|[^|]+\| \[[0-9:]+<[0-9:]+, best 0\.5000 \| "
                           r"valid 50%\]")
    self.assertTrue(text.endswith("\n"))

  def test_none_is_silent_and_seconds_format(self):
    stream = io.StringIO()
    bar = progress.Progress(3, mode="none", stream=stream)
    bar.update(1, best=None, valid_rate=None)
    bar.message("hidden")
    self.assertEqual(stream.getvalue(), "")
    self.assertEqual(progress.format_seconds(59), "59s")
    self.assertEqual(progress.format_seconds(61), "1m01s")
    self.assertEqual(progress.format_seconds(3720), "1h02m")


if __name__ == "__main__":
  absltest.main()
