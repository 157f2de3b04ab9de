"""Pytest configuration: slow tests are opt-in; tests/ is importable (helpers.py); tests run
on two pytest-xdist workers (``-n 2 --dist loadfile`` in pyproject.toml), each file whole on
one worker, sharing one session directory (``helpers.SHARED_ENV``) for the tiny real run.

Slow tests: mark them ``@pytest.mark.slow`` (the one mechanism); they are skipped unless
``SPARK_CLRS_SLOW=1`` is set, so the default suite stays under 10 minutes on 2 cores.

The session's one tiny real search is ``helpers.tiny_run()``: made on first use by whichever
worker asks first (the other waits for it), reached from absltest ``setUpClass``, and shared
by the compare, two-slot, report, viewer, browser and notebook tests.
"""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # import helpers

import helpers  # noqa: E402

SLOW_ENV = "SPARK_CLRS_SLOW"


def pytest_collection_modifyitems(config, items):
  del config
  if os.environ.get(SLOW_ENV) == "1":
    return
  skip = pytest.mark.skip(reason=f"slow: set {SLOW_ENV}=1 to run")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


def pytest_configure(config):
  """absltest helpers (create_tempdir, flags) need parsed absl flags under pytest too; the
  controller of an xdist run makes the directory its workers share (they inherit the env)."""
  if not hasattr(config, "workerinput") and not os.environ.get(helpers.SHARED_ENV):
    shared = tempfile.mkdtemp(prefix="spark_clrs_tests_shared_")
    os.environ[helpers.SHARED_ENV] = shared
    config.add_cleanup(lambda: (shutil.rmtree(shared, ignore_errors=True),
                                os.environ.pop(helpers.SHARED_ENV, None)))
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()

