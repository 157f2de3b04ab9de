"""``python -m spark_clrs.evaluate``: train and score one program, one JSON object of metrics (:mod:`spark_clrs.cli.evaluate`)."""

from spark_clrs.cli import quiet  # noqa: F401  isort: skip  (first: hides TF/XLA/CUDA C++ log lines)

if __name__ == "__main__":
  from absl import flags

  from spark_clrs.cli import evaluate as _cli

  __doc__ = _cli.__doc__  # What --help prints.
  flags.adopt_module_key_flags(_cli)
  _cli.entry_point()
