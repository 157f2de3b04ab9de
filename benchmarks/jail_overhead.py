r"""What the bubblewrap jail costs a candidate: jailed vs unjailed, in one run.

    python benchmarks/jail_overhead.py [--runs=3] [--program=triplet_gmpnn] \
        [--profile=quick] [--profile_overrides=train_steps=20,...] [--output=FILE.json]

Evaluates ``--program`` under ``--profile`` (the evaluation a search runs for every
candidate, ``spark_clrs.evaluation.evaluate.evaluate``) ``--runs`` times through each of two
pre-started single-use ``sandbox.Worker``s, exactly as ``LocalExecutor`` does:

* **jail**: ``--sandbox=bwrap`` (the default): each interpreter inside bubblewrap;
* **none**: ``--sandbox=none``: the same workers without the jail.

The two alternate (jail first on even runs, none first on odd ones) so that both see the
same machine load; before each timed evaluation the worker's next interpreter has
finished its imports (as it has in a search, where the proposal and the checks come
between two evaluations). Prints the wall time of each evaluation (the sandbox's
``wall_seconds``: request to exit, all phases), the medians and the ratio jail / none,
the child's CPU seconds (insensitive to the machine's load) and their ratio, and the
machine load before and after. Target: ratio <= 1.10.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

from absl import app, flags

_RUNS = flags.DEFINE_integer("runs", 3, "Evaluations per mode.", lower_bound=1)
_PROGRAM = flags.DEFINE_string("program", "triplet_gmpnn", "Program (seed name or path).")
_PROFILE = flags.DEFINE_string("profile", "quick", "Evaluation profile.")
_OVERRIDES = flags.DEFINE_list("profile_overrides", [], "FIELD=VALUE overrides.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the figures here (JSON).")


def _load() -> str:
  return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str]) -> None:
  del argv
  from spark_clrs.evaluation import evaluate, executors, profiles
  from spark_clrs.isolation import jail, sandbox

  overrides = {}
  for item in _OVERRIDES.value:
    key, _, text = item.partition("=")
    try:
      overrides[key] = json.loads(text)
    except ValueError:
      overrides[key] = text
  profile = profiles.get_profile(_PROFILE.value, **overrides)
  print(f"jail: {jail.check_mode('bwrap')}")
  print(f"program {_PROGRAM.value}, profile {profile.name} "
        f"({profile.train_steps} steps, hidden {profile.hidden}), {_RUNS.value} run(s) per "
        f"mode; load before {_load()} on {os.cpu_count()} CPUs")
  root = pathlib.Path(tempfile.mkdtemp(prefix="spark_jail_overhead_"))
  workers = {mode: sandbox.Worker(workdir=root / f"worker-{mode}", sandbox=mode,
                                  preload=executors.EVAL_PRELOAD,
                                  extra_env={"JAX_PLATFORMS": "cpu"}, gpu=False)
             for mode in ("bwrap", "none")}
  times: dict[str, list[float]] = {mode: [] for mode in workers}
  cpu: dict[str, list[float]] = {mode: [] for mode in workers}  # Load-insensitive.
  accuracy: dict[str, list[float]] = {mode: [] for mode in workers}
  try:
    for worker in workers.values():
      worker.start()
    for run in range(_RUNS.value):
      order = ("bwrap", "none") if run % 2 == 0 else ("none", "bwrap")
      for mode in order:
        workers[mode].start()  # Its next interpreter has finished importing.
        start = time.monotonic()
        result = evaluate.evaluate(_PROGRAM.value, profile, [0],
                                   workdir=root / f"{mode}-{run}", runner=workers[mode])
        call = time.monotonic() - start
        if not result.ok:
          raise SystemExit(f"{mode} run {run}: {result.status}: {result.reason}")
        times[mode].append(call)
        cpu[mode].append(float(result.metrics.get("cpu_seconds") or 0.0))
        accuracy[mode].append(result.metrics.get("ood_val_acc"))
        print(f"  run {run} {mode:5s}: {call:7.2f} s wall (sandbox {result.wall_seconds:.2f} s)"
              f", child CPU {cpu[mode][-1]:.1f} s, ood_val_acc "
              f"{result.metrics.get('ood_val_acc')}, load {_load()}", flush=True)
  finally:
    for worker in workers.values():
      worker.close()
  med = {mode: statistics.median(v) for mode, v in times.items()}
  ratio = med["bwrap"] / med["none"]
  print()
  print("| mode | runs (s) | median (s) |")
  print("|---|---|---|")
  for mode, label in (("bwrap", "jail (--sandbox=bwrap)"), ("none", "no jail (--sandbox=none)")):
    print(f"| {label} | {', '.join(f'{t:.1f}' for t in times[mode])} | {med[mode]:.1f} |")
  print(f"| ratio jail / none | | **{ratio:.3f}** (target <= 1.10) |")
  cpu_med = {mode: statistics.median(v) for mode, v in cpu.items()}
  cpu_ratio = cpu_med["bwrap"] / cpu_med["none"] if cpu_med["none"] else float("nan")
  print(f"child CPU seconds (what the candidate's process used; insensitive to load): "
        f"median jail {cpu_med['bwrap']:.1f}, none {cpu_med['none']:.1f}, ratio {cpu_ratio:.3f}")
  print(f"load after {_load()}")
  same = accuracy["bwrap"] == accuracy["none"]
  print(f"fitness identical in both modes: {same} ({accuracy['bwrap']} vs {accuracy['none']})")
  if _OUTPUT.value:
    pathlib.Path(_OUTPUT.value).write_text(json.dumps(
        {"times": times, "median": med, "ratio": ratio, "cpu_seconds": cpu,
         "cpu_ratio": cpu_ratio, "accuracy": accuracy,
         "profile": profile.to_dict()}, indent=2) + "\n")
  sys.exit(0)


if __name__ == "__main__":
  app.run(main)
