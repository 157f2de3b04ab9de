"""``python -m spark_clrs.transfer``: retrain a program on other CLRS tasks next to the seed.

The transfer itself is :mod:`spark_clrs.analysis.transfer`; this is its command line.
Prints one progress line per cell on stderr, then the table's path and transfer.md on
stdout. Exits 0, 2 with one ``error:`` line when the transfer cannot run as asked, or 130
when interrupted (re-running the same command evaluates only the missing cells).
"""

from __future__ import annotations

from absl import flags

from spark_clrs.analysis import transfer
from spark_clrs.cli import clrs_flags, scaffold


def define_flags() -> None:
  clrs_flags.take_over("seeds")  # CLRS defines --seeds too; ours must win (see clrs_flags).
  flags.DEFINE_string("program", None, "Program to transfer: a .py file (e.g. "
                      "RUN/results/best_program.py) or a seed name.")
  flags.DEFINE_string("baseline", "triplet_gmpnn", "Program trained alongside for reference "
                      "(a seed name or a .py file).")
  flags.DEFINE_list("algorithms", list(transfer.DEFAULT_ALGORITHMS),
                    "CLRS-30 algorithms to train on.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds; one evaluation per (program, "
                    "algorithm, seed).")
  flags.DEFINE_string("profile", "clrs", "Evaluation profile (SPEC §4): clrs (the paper's "
                      "transfer protocol), spark or quick.")
  flags.DEFINE_multi_string("profile_overrides", [], "FIELD=VALUE override of the profile, "
                            "e.g. --profile_overrides=train_steps=500; repeat for several.")
  flags.DEFINE_string("output", "runs/transfer", "Transfer directory; re-running resumes it.")
  flags.DEFINE_float("eval_timeout_s", 0.0, "Wall-clock limit of one evaluation; 0 = "
                     "10 min + 10 s per training step.", lower_bound=0.0)
  flags.DEFINE_integer("eval_memory_mb", 0, "Memory limit of one evaluation (MB); 0 = 16 GiB "
                       "or 80% of this machine's memory.", lower_bound=0)
  flags.DEFINE_enum("executor", "local", ("local", "ray"), "Where evaluations run: local "
                    "sandboxed children, or Ray tasks (--ray_address).")
  flags.DEFINE_integer("parallel_evaluations", 1, "Cells evaluated at the same time (one "
                       "device each), e.g. the number of GPUs.", lower_bound=1)
  flags.DEFINE_string("ray_address", "", "Ray cluster for --executor=ray (empty = a local "
                      "Ray instance).")
  flags.DEFINE_integer("ray_cpus_per_evaluation", 1, "CPUs one Ray task requests when the "
                       "cluster has no GPU.", lower_bound=1)
  flags.DEFINE_boolean("compilation_cache", True, "Persistent JAX compilation cache in "
                       "OUTPUT/cache/jax ($JAX_COMPILATION_CACHE_DIR when set).")
  flags.mark_flag_as_required("program")


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise scaffold.UsageError(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  f = flags.FLAGS
  settings = transfer.ExecutionSettings(
      executor=f.executor, parallel_evaluations=f.parallel_evaluations,
      ray_address=f.ray_address, ray_cpus_per_evaluation=f.ray_cpus_per_evaluation,
      compilation_cache=f.compilation_cache, eval_timeout_s=f.eval_timeout_s,
      eval_memory_mb=f.eval_memory_mb)
  result = transfer.transfer(f.program, output=f.output, algorithms=f.algorithms, seeds=f.seeds,
                             profile=f.profile, profile_overrides=f.profile_overrides,
                             baseline=f.baseline, settings=settings)
  print(result)
  print(result.markdown.read_text())
  return 0


def run() -> None:
  scaffold.run(main, define_flags, errors=(transfer.TransferError,))


if __name__ == "__main__":
  run()
