"""Pytest configuration: long runs are opt-in.

Tests marked ``@pytest.mark.slow`` (spark/clrs profiles, many candidates) are skipped unless
``SPARK_CLRS_SLOW=1`` is set, so the default suite fits CI's 15-minute budget on 2 cores.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
  del config
  if os.environ.get("SPARK_CLRS_SLOW") == "1":
    return
  skip = pytest.mark.skip(reason="slow: set SPARK_CLRS_SLOW=1 to run")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


def pytest_configure(config):
  """absltest helpers (create_tempdir, flags) need parsed absl flags under pytest too."""
  del config
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
