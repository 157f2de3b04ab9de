"""The code base stays `ruff` clean (configuration in pyproject.toml)."""

import pathlib
import shutil
import subprocess

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parent.parent


class RuffTest(absltest.TestCase):

  def test_ruff_check_is_clean(self):
    ruff = shutil.which("ruff")
    if ruff is None:
      self.skipTest("ruff is not installed; pip install -e '.[test]'")
    result = subprocess.run([ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    self.assertEqual(result.returncode, 0, result.stdout[-4000:] + result.stderr[-2000:])


if __name__ == "__main__":
  absltest.main()
