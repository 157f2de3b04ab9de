"""``python -m spark_clrs.compare``: strategies x seeds under one budget (:mod:`spark_clrs.analysis.compare`)."""

from spark_clrs.cli import quiet  # noqa: F401  isort: skip  (first: hides TF/XLA/CUDA C++ log lines)

if __name__ == "__main__":
  from absl import flags

  from spark_clrs.analysis import compare as _cli

  __doc__ = _cli.__doc__  # What --help prints.
  flags.adopt_module_key_flags(_cli)
  _cli.run_cli()
