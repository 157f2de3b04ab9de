r"""Where one candidate's evaluation time goes, against the floor of a bare CLRS loop.

    python benchmarks/candidate_cost.py [--profiles=quick,spark] [--runs=3] \
        [--spark_steps=5] [--spark_eval_samples=8] [--quick_steps=N] \
        [--fixed_cost=true] [--output=FILE.json]

For the reference seed (``triplet_gmpnn``) under each profile, ``--runs`` times and
alternating so that both see the same load:

* **ours**: ``spark_clrs.evaluation.evaluate.evaluate`` in a fresh sandboxed child, exactly as the
  search evaluates a candidate with no warm worker;
* **bare**: a fresh Python that trains the same model (CLRS's own
  ``clrs.get_processor_factory('triplet_gmpnn')``), for the same steps, on the same
  batches (the training stream is drawn with the same seeds; the final losses are
  printed: they agree to float rounding, about 1e-5 relative after 40 steps, a gap that
  grows slowly over hundreds of steps) with a plain loop over
  ``clrs.models.BaselineModel.feedback`` as CLRS's ``examples/run.py`` writes it (no host
  sync per step), then scores the same evaluation sets with ``BaselineModel.predict`` +
  ``clrs.evaluate``. This is the floor.

Both sides time process start, imports, sampler build (evaluation sets + training
samplers), model init, compilation (JAX's own compile events), training (the loop wall
time, batch drawing included, minus compilation; also its CPU time, which other load on
the machine hardly changes) and each evaluation set, plus peak RSS and, on a GPU, peak
device memory. The table shows medians and the ratio ours / bare. Process start of ``ours`` is the
interpreter start measured separately (``python -c pass``); its imports are the rest of
the child's start-up.

``--fixed_cost`` then reports the fixed cost per candidate (wall time minus training and
evaluation) in three set-ups: a fresh child (above), a warm ``sandbox.Worker`` that has
imported JAX/CLRS once and forks one jailed child per candidate, and the warm worker
with the persistent JAX compilation cache on a second evaluation of the same program.

The spark profile is cut down by default so that it finishes in minutes on a CPU
(``--spark_steps``, ``--spark_eval_samples``); the overrides are printed. Figures depend
on the machine's load, which is printed with them.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app, flags

_PROFILES = flags.DEFINE_list("profiles", ["quick", "spark"], "Profiles to measure.")
_RUNS = flags.DEFINE_integer("runs", 3, "Runs of each side per profile (medians shown).")
_SPARK_STEPS = flags.DEFINE_integer("spark_steps", 5, "train_steps of the spark profile "
                                    "here (0 = the profile's own 300).")
_SPARK_EVAL_SAMPLES = flags.DEFINE_integer(
    "spark_eval_samples", 8, "Graphs in each spark evaluation set (also its eval batch "
    "size); 0 = the profile's own 32.")
_QUICK_STEPS = flags.DEFINE_integer("quick_steps", 0, "train_steps of the quick profile "
                                    "(0 = the profile's own).")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed.")
_FIXED_COST = flags.DEFINE_boolean("fixed_cost", True, "Also measure the fixed cost per "
                                   "candidate with a warm worker and the compilation cache.")
_OUTPUT = flags.DEFINE_string("output", None, "Write all measurements as JSON here.")
_ROLE = flags.DEFINE_enum("role", "driver", ["driver", "bare"], "Internal: 'bare' runs the "
                          "bare CLRS loop in this process and prints one JSON line.")
_PROFILE_JSON = flags.DEFINE_string("profile_json", None, "Internal (bare): the profile.")

REPO = pathlib.Path(__file__).resolve().parent.parent
PROGRAM = "triplet_gmpnn"
SPAWN_VAR = "SPARK_CLRS_BENCH_SPAWN_TIME"
EVAL_SETS = ("ood_val", "test", "val")
ROWS = ("process_start", "imports", "sampler", "init", "compile", "train", "train_cpu",
        "eval_ood_val",
        "eval_test", "eval_val", "peak_rss_mb", "peak_device_mb", "wall")


# --------------------------------------------------------------------------- bare loop


def bare_main(profile_dict: dict[str, Any], seed: int) -> dict[str, Any]:
  """Trains and scores the reference model with a plain CLRS loop; returns the timings."""
  entered = time.time()
  spawned = float(os.environ.get(SPAWN_VAR, entered))
  import clrs  # pylint: disable=g-import-not-at-top  # Timed: this is the import cost.
  import jax
  import numpy as np

  from spark_clrs.evaluation import data as data_lib
  from spark_clrs.evaluation import profiles as profiles_lib
  imported = time.time()
  jax.config.update("jax_num_cpu_devices", 1)

  compiled = [0.0]
  events = ("/jax/core/compile/jaxpr_trace_duration",
            "/jax/core/compile/jaxpr_to_mlir_module_duration",
            "/jax/core/compile/backend_compile_duration")

  def on_event(event: str, duration: float, **unused: Any) -> None:
    if event in events:
      compiled[0] += duration

  jax.monitoring.register_event_duration_secs_listener(on_event)

  def _concat(trees):
    return jax.tree_util.tree_map(lambda *x: np.concatenate(x), *trees)

  cpu: dict[str, float] = {}

  def timed(fn, name=""):
    start, cpu0, c0 = time.perf_counter(), time.process_time(), compiled[0]
    value = fn()
    c = compiled[0] - c0
    cpu[name] = max(0.0, time.process_time() - cpu0 - c)
    return value, max(0.0, time.perf_counter() - start - c), c

  profile = profiles_lib.EvalProfile(**profile_dict)
  times: dict[str, float] = {"process_start": entered - spawned, "imports": imported - entered}
  compile_s = 0.0

  # Sampler build: the fixed evaluation sets and the training sampler, as run.py seeds it
  # (through the training seed's RandomState; same draws as spark_clrs.evaluation.data).
  def build():
    spec, sets = data_lib.build_eval_sets(profile)
    rng = np.random.RandomState(seed)
    key = jax.random.PRNGKey(rng.randint(2**32))
    stream_rng = np.random.RandomState(rng.randint(2**32))
    (length,) = profile.train_lengths
    sampler, raw_spec = clrs.build_sampler(
        profile.algorithm, num_samples=-1, length=length, seed=stream_rng.randint(2**32),
        **data_lib.train_sampler_kwargs(profile.algorithm))
    raw = (sampler.next(profile.batch_size) for _ in iter(int, 1))
    batches = clrs.process_random_pos(raw, stream_rng)
    _, batches = clrs.process_permutations(raw_spec, batches, True)
    return spec, sets, key, batches

  (spec, sets, key, batches), times["sampler"], c = timed(build)
  compile_s += c
  factory = clrs.get_processor_factory("triplet_gmpnn", use_ln=profile.use_ln,
                                       nb_triplet_fts=profile.nb_triplet_fts)
  dummy = sets["val"].batches[0]
  model = clrs.models.BaselineModel(
      spec=spec, dummy_trajectory=dummy, processor_factory=factory,
      hidden_dim=profile.hidden, encode_hints=True, decode_hints=True,
      encoder_init="xavier_on_scalars", use_lstm=False,
      learning_rate=profile.learning_rate, grad_clip_max_norm=profile.grad_clip,
      checkpoint_path=tempfile.gettempdir(), freeze_processor=False, dropout_prob=0.0,
      hint_teacher_forcing=0.0, hint_repred_mode="soft", nb_msg_passing_steps=1)

  def init():
    model.init(dummy.features, seed + 1)
    jax.block_until_ready(model.params)

  _, times["init"], c = timed(init)
  compile_s += c

  def train():
    nonlocal key
    loss = None
    for _ in range(profile.train_steps):
      feedback = next(batches)
      key, step_key = jax.random.split(key)
      loss = model.feedback(step_key, feedback)
    return float(loss)

  final_loss, times["train"], c = timed(train, "train")
  times["train_cpu"] = cpu["train"]
  compile_s += c
  scores = {}
  for name in EVAL_SETS:
    def score(name=name):
      nonlocal key
      preds, outputs = [], []
      for batch in sets[name].batches:
        key, sub = jax.random.split(key)
        pred, _ = model.predict(sub, batch.features)
        preds.append(jax.device_get(pred))
        outputs.append(batch.outputs)
      return float(clrs.evaluate(_concat(outputs), _concat(preds))["score"])
    scores[name], times[f"eval_{name}"], c = timed(score)
    compile_s += c
  times["compile"] = compile_s
  times["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  stats = jax.devices()[0].memory_stats() or {}
  times["peak_device_mb"] = stats.get("peak_bytes_in_use", 0) / 2**20 or None
  times["wall"] = time.time() - spawned
  return {"times": times, "final_loss": final_loss, "scores": scores,
          "device": jax.devices()[0].platform}


# ------------------------------------------------------------------------------ driver


def _run_bare(profile, seed: int, env: dict[str, str]) -> dict[str, Any]:
  from spark_clrs.evaluation import trainer  # pylint: disable=g-import-not-at-top

  env = dict(env)
  if profile.fast_compile:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {trainer.FAST_COMPILE_FLAG}".strip()
  env[SPAWN_VAR] = repr(time.time())
  proc = subprocess.run(
      [sys.executable, __file__, "--role=bare", f"--seed={seed}",
       f"--profile_json={json.dumps(profile.to_dict())}"],
      env=env, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"bare loop failed: {proc.stderr.strip().splitlines()[-1:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _ours_times(metrics: dict[str, Any], wall: float, interpreter_s: float
                ) -> dict[str, float]:
  by_set = metrics.get("eval_seconds_by_set") or {}
  startup = metrics.get("startup_seconds", 0.0)
  times = {"process_start": interpreter_s, "imports": max(0.0, startup - interpreter_s),
           "sampler": metrics.get("sampler_seconds", metrics.get("data_seconds", 0.0)),
           "init": metrics.get("init_seconds", 0.0) + metrics.get("load_seconds", 0.0),
           "compile": metrics.get("compile_seconds", 0.0),
           "train": metrics.get("train_seconds", 0.0),
           "train_cpu": metrics.get("train_cpu_seconds"),
           "peak_rss_mb": metrics.get("peak_rss_mb", 0.0),
           "peak_device_mb": metrics.get("peak_device_mb"), "wall": wall}
  for name in EVAL_SETS:
    times[f"eval_{name}"] = by_set.get(name, float("nan"))
  return times


def _run_ours(profile, seed: int, workdir: pathlib.Path, worker=None) -> dict[str, Any]:
  from spark_clrs.evaluation import evaluate  # pylint: disable=g-import-not-at-top

  result = evaluate.evaluate(PROGRAM, profile, [seed], workdir=workdir,
                             limits=evaluate.default_limits(profile), runner=worker)
  if not result.ok:
    raise RuntimeError(f"our evaluation failed: {result.reason}")
  return {"metrics": result.metrics, "wall": result.wall_seconds}


def _interpreter_seconds(env: dict[str, str], repeats: int = 5) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _profile(name: str):
  from spark_clrs.evaluation import profiles  # pylint: disable=g-import-not-at-top

  overrides: dict[str, Any] = {}
  if name == "spark":
    if _SPARK_STEPS.value:
      overrides["train_steps"] = _SPARK_STEPS.value
    if _SPARK_EVAL_SAMPLES.value:
      n = _SPARK_EVAL_SAMPLES.value
      overrides.update(ood_val_samples=n, test_samples=n, val_samples=n, eval_batch_size=n)
  if name == "quick" and _QUICK_STEPS.value:
    overrides["train_steps"] = _QUICK_STEPS.value
  return profiles.get_profile(name, **overrides), overrides


def _load() -> str:
  return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _median(rows: list[dict[str, float]], key: str) -> float:
  values = [r[key] for r in rows if r.get(key) is not None]
  return statistics.median(values) if values else float("nan")


def _print_table(name: str, ours: list[dict], bare: list[dict]) -> dict[str, Any]:
  print(f"\n{name}: medians of {len(ours)} run(s), seconds unless stated")
  print(f"  {'phase':<16}{'ours':>10}{'bare CLRS':>12}{'ours/bare':>11}")
  table = {}
  for row in ROWS:
    o, b = _median(ours, row), _median(bare, row)
    if math.isnan(o) and math.isnan(b):
      continue  # e.g. device memory on a CPU.
    ratio = o / b if b > 0 else float("nan")
    table[row] = {"ours": o, "bare": b, "ratio": ratio}
    print(f"  {row:<16}{o:>10.3f}{b:>12.3f}{ratio:>11.3f}")
  for key, what in (("train", "wall"), ("train_cpu", "CPU")):
    ratios = [o[key] / b[key] for o, b in zip(ours, bare, strict=True)
              if o.get(key) is not None and b.get(key)]
    if ratios:
      print(f"  training {what} time ratio ours/bare per run: "
            f"{', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}"
            + (" (target <= 1.05)" if key == "train" else ""))
      table[f"{key}_ratio_per_run"] = ratios
  return table


def _fixed(times: dict[str, float]) -> float:
  variable = times["train"] + sum(times[f"eval_{n}"] for n in EVAL_SETS)
  return times["wall"] - variable


def _fixed_cost(profile, seed: int, tmp: pathlib.Path, cold: list[dict]) -> dict[str, Any]:
  """Fixed cost per candidate: fresh child vs warm worker vs warm worker + compile cache."""
  from spark_clrs.evaluation import executors  # pylint: disable=g-import-not-at-top
  from spark_clrs.isolation import sandbox

  preload = executors.EVAL_PRELOAD
  out: dict[str, Any] = {"fresh_child": _median([{"f": _fixed(t)} for t in cold], "f")}
  start = time.perf_counter()
  with sandbox.Worker(workdir=tmp / "warm", preload=preload) as worker:
    out["worker_start_s"] = time.perf_counter() - start
    run = _run_ours(profile, seed, tmp / "warm-0", worker)
  out["warm_worker"] = _fixed(_ours_times(run["metrics"], run["wall"], 0.0))
  out["warm_worker_compile_s"] = run["metrics"]["compile_seconds"]
  env = {executors.JAX_CACHE_VAR: str(tmp / "jax-cache")}
  with sandbox.Worker(workdir=tmp / "cached", preload=preload, extra_env=env) as worker:
    first = _run_ours(profile, seed, tmp / "cached-0", worker)
    second = _run_ours(profile, seed, tmp / "cached-1", worker)
  out["warm_cache_first"] = _fixed(_ours_times(first["metrics"], first["wall"], 0.0))
  out["warm_cache_hit"] = _fixed(_ours_times(second["metrics"], second["wall"], 0.0))
  out["cache_hit_compile_s"] = second["metrics"]["compile_seconds"]
  out["same_fitness"] = first["metrics"]["ood_val_acc"] == second["metrics"]["ood_val_acc"]
  print(f"  fixed cost per candidate (wall - training - evaluation), {_load()}:")
  print(f"    fresh sandboxed child (interpreter + imports + ...): {out['fresh_child']:.2f} s")
  print(f"    warm worker, fork per candidate:                     {out['warm_worker']:.2f} s "
        f"(compile {out['warm_worker_compile_s']:.2f} s; worker start, once per slot: "
        f"{out['worker_start_s']:.2f} s)")
  print(f"    warm worker + compilation cache, first evaluation:   "
        f"{out['warm_cache_first']:.2f} s")
  print(f"    warm worker + compilation cache, same program again: {out['warm_cache_hit']:.2f} s "
        f"(compile {out['cache_hit_compile_s']:.2f} s; same fitness: {out['same_fitness']})")
  return out


def driver() -> None:
  from spark_clrs.evaluation import profiles  # pylint: disable=g-import-not-at-top

  os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # Cold compiles unless stated.
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).strip(os.pathsep)
  unknown = sorted(set(_PROFILES.value) - set(profiles.PROFILES))
  if unknown:
    raise app.UsageError(f"--profiles: unknown {unknown}; use {sorted(profiles.PROFILES)}")
  interp = _interpreter_seconds(env)
  print(f"python: {sys.executable}; interpreter start {interp:.3f} s; {_load()}")
  report: dict[str, Any] = {"interpreter_seconds": interp, "profiles": {}}
  seed = _SEED.value
  with tempfile.TemporaryDirectory(prefix="spark_cost_") as tmp_name:
    tmp = pathlib.Path(tmp_name)
    for name in _PROFILES.value:
      profile, overrides = _profile(name)
      print(f"\n== profile {name}: program {PROGRAM}, seed {seed}, {profile.train_steps} steps, "
            f"hidden {profile.hidden}, batch {profile.batch_size}; overridden here: "
            f"{overrides or 'nothing'}")
      ours, bare, checks = [], [], []
      for i in range(_RUNS.value):
        load_before = _load()
        run = _run_ours(profile, seed, tmp / f"{name}-ours-{i}")
        ours.append(_ours_times(run["metrics"], run["wall"], interp))
        b = _run_bare(profile, seed, env)
        bare.append(b["times"])
        loss_ours = run["metrics"]["final_loss_per_seed"][0]
        rel = abs(loss_ours - b["final_loss"]) / max(1e-12, abs(b["final_loss"]))
        checks.append({"final_loss_ours": loss_ours, "final_loss_bare": b["final_loss"],
                       "final_loss_rel_diff": rel, "scores_bare": b["scores"],
                       "ood_val_acc_ours": run["metrics"]["ood_val_acc"]})
        print(f"  run {i + 1}: train ours {ours[-1]['train']:.3f} s, bare "
              f"{bare[-1]['train']:.3f} s; final loss ours {loss_ours:.6f}, bare "
              f"{b['final_loss']:.6f} (rel. diff {rel:.1e}); {load_before} -> {_load()}")
      table = _print_table(name, ours, bare)
      entry = {"profile": profile.to_dict(), "overrides": overrides, "ours": ours,
               "bare": bare, "checks": checks, "table": table}
      if _FIXED_COST.value:
        entry["fixed_cost"] = _fixed_cost(profile, seed, tmp / f"{name}-fixed", ours)
      print(f"  {_load()}")
      report["profiles"][name] = entry
  if _OUTPUT.value:
    pathlib.Path(_OUTPUT.value).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {_OUTPUT.value}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _ROLE.value == "bare":
    if not _PROFILE_JSON.value:
      raise app.UsageError("--role=bare needs --profile_json")
    print(json.dumps(bare_main(json.loads(_PROFILE_JSON.value), _SEED.value)))
    return
  driver()


if __name__ == "__main__":
  app.run(main)
