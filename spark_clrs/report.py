"""``python -m spark_clrs.report``: tables and plots from run directories (:mod:`spark_clrs.analysis.report`)."""

from spark_clrs.cli import quiet  # noqa: F401  isort: skip  (first: hides TF/XLA/CUDA C++ log lines)

if __name__ == "__main__":
  from absl import flags

  from spark_clrs.analysis import report as _cli

  __doc__ = _cli.__doc__  # What --help prints.
  flags.adopt_module_key_flags(_cli)
  _cli.run_cli()
