"""Tests for ``spark_clrs.cli.quiet``: library chatter off the console unless ``--verbose``."""

import subprocess
import sys
import textwrap

from absl.testing import absltest

# The trusted parent samples evaluation sets itself; CLRS logs one INFO line per set.
# The order is a CLI's: the quiet console is installed before absl's logging is imported (a
# search's console showed the lines when `install` created the "absl" logger first).
_SNIPPET = textwrap.dedent("""
    import sys
    from spark_clrs.cli import quiet
    quiet.install(verbose=False)
    from absl import logging
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    import clrs
    quiet.apply(sys.argv[1] == "verbose")
    clrs.build_sampler("dfs", num_samples=4, length=8, seed=0)
    logging.warning("a warning still shows")
""")


class SamplerChatterTest(absltest.TestCase):

  def run_snippet(self, mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", _SNIPPET, mode], capture_output=True,
                          text=True, timeout=600)
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    return done.stderr

  def test_clrs_dataset_lines_hidden_unless_verbose(self):
    quiet_err = self.run_snippet("quiet")
    self.assertNotIn("Creating a dataset", quiet_err)
    self.assertIn("a warning still shows", quiet_err)
    verbose_err = self.run_snippet("verbose")
    self.assertIn("Creating a dataset with 4 samples", verbose_err)
    # The caller is CLRS's sampler, not absl's own logging module.
    self.assertIn("samplers.py", verbose_err)


if __name__ == "__main__":
  absltest.main()
