"""``python -m spark_clrs.report RUN [RUN ...]``: tables, plots and pages from run directories.

Prints the paths it wrote (see :mod:`spark_clrs.analysis.report`); exits 0, or 2 with one
``error:`` line when a directory is not a run or ``--output`` holds a report of other runs.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from spark_clrs.analysis import report
from spark_clrs.analysis.groups import BANDS
from spark_clrs.cli import scaffold

USAGE = "usage: python -m spark_clrs.report RUN [RUN ...] [--output DIR]"


def define_flags() -> None:
  flags.DEFINE_string("output", "", "Directory for report.md, report.json, the PNG plots and "
                      "index.html (the HTML viewer); "
                      "default RUN/results for one run, <common parent>/report for several.")
  flags.DEFINE_enum("band", "std", BANDS, "Band of the seed-pooled curves: mean ± std, or "
                    "min-max.")
  flags.DEFINE_boolean("overwrite", False, "Replace a report of other runs in --output.")


def main(argv: list[str]) -> int:
  if len(argv) < 2:
    raise scaffold.UsageError(f"no run directories; {USAGE}")
  f = flags.FLAGS
  files = report.make_report(argv[1:], f.output or None, band_kind=f.band,
                             overwrite=f.overwrite)
  for path in dataclasses.astuple(files):
    if path is not None:
      print(path)
  return 0


def run() -> None:
  scaffold.run(main, define_flags, errors=(report.ReportError,))


if __name__ == "__main__":
  run()
