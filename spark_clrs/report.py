"""``python -m spark_clrs.report``: tables and plots from run directories (:mod:`spark_clrs.cli.report`)."""

from spark_clrs.cli import quiet  # noqa: F401  isort: skip  (first: hides TF/XLA/CUDA C++ log lines)

if __name__ == "__main__":
  from spark_clrs.cli import report as _cli

  __doc__ = _cli.__doc__  # What --help prints (cli.scaffold lists the command's flags).
  _cli.run()
