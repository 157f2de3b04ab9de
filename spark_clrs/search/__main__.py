"""``python -m spark_clrs.search``: run or resume a search (:mod:`spark_clrs.search.api`)."""

from spark_clrs.cli import quiet  # noqa: F401  isort: skip  (first: hides TF/XLA/CUDA C++ log lines)
from absl import flags

from spark_clrs.search import api as _cli

__doc__ = _cli.__doc__  # What --help prints.
flags.adopt_module_key_flags(_cli)
_cli.run_cli()
