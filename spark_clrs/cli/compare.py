"""``python -m spark_clrs.compare``: every (strategy, seed) search of a grid, then its tables.

Every search flag applies to every run (see :mod:`spark_clrs.analysis.compare`); prints
one progress line per run on stderr, then the table's path and compare.md on stdout.
Exits 0, 2 with one ``error:`` line when the grid cannot be run as asked, or 130 when
interrupted (re-running the same command resumes).
"""

from __future__ import annotations

from absl import flags

from spark_clrs import config as config_lib
from spark_clrs.analysis import compare
from spark_clrs.analysis.groups import BANDS
from spark_clrs.analysis.runs import ReportError
from spark_clrs.cli import clrs_flags, scaffold

DEFAULT_OUTPUT = "runs/compare"


def define_flags() -> None:
  """The search flags plus the grid's own."""
  clrs_flags.take_over("seeds")  # CLRS defines --seeds too; ours must win (see clrs_flags).
  config_lib.define_flags()
  flags.DEFINE_list("strategies", ["spark", "mutation"], "Strategies to compare "
                    f"(--strategy values): {', '.join(config_lib.STRATEGIES)}.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Run seeds; one run per (strategy, seed).")
  flags.DEFINE_enum("band", "std", BANDS, "Plot bands: mean ± std, or min-max.")


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise scaffold.UsageError(f"unexpected arguments {argv[1:]}; every setting is a --flag "
                              "(see --helpfull)")
  f = flags.FLAGS
  output = f.output if not f["output"].using_default_value else DEFAULT_OUTPUT
  result = compare.compare(f.strategies, f.seeds, output=output,
                           base=config_lib.from_flags(f), band=f.band)
  print(result)
  print(result.files.markdown.read_text())
  return 0


def run() -> None:
  scaffold.run(main, define_flags,
               errors=(compare.CompareError, config_lib.ConfigError, ReportError))


if __name__ == "__main__":
  run()
