"""``python -m spark_clrs.compare``: strategies x seeds under one budget (:mod:`spark_clrs.cli.compare`)."""

from spark_clrs.cli import quiet  # noqa: F401  isort: skip  (first: hides TF/XLA/CUDA C++ log lines)

if __name__ == "__main__":
  from spark_clrs.cli import compare as _cli

  __doc__ = _cli.__doc__  # What --help prints (cli.scaffold lists the command's flags).
  _cli.run()
