"""Transfer of a found architecture to other CLRS tasks: ``python -m spark_clrs.transfer``.

The paper's third table asks whether the processor found on DFS is a better
processor in general: it is trained from scratch on other CLRS algorithms,
next to the seed, under CLRS's own protocol (profile ``clrs``)::

    python -m spark_clrs.transfer --program=RUN/results/best_program.py \\
        --algorithms=bfs,dijkstra --profile=clrs --seeds=0,1,2 --output=runs/transfer

Every (program, algorithm, seed) cell is one sandboxed evaluation by the
evaluator with the profile's algorithm replaced, run on the search's executors
(``--parallel_evaluations=N`` cells at a time, one device each, or
``--executor=ray``) with one JAX compilation cache. Cells are stored as they
finish (``OUTPUT/cells/<program|baseline>/<algorithm>/seed<k>.json``) and are
never recomputed or replaced: re-running the command only evaluates missing
cells, and a directory made for another program or profile is refused.
``transfer.md`` / ``transfer.json`` give per-task and average OOD-test
accuracy (mean ± std over seeds) and processor MACs of both programs. The
command line is :mod:`spark_clrs.cli.transfer`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from spark_clrs.analysis import tables
from spark_clrs.evaluation import profiles as profiles_lib
from spark_clrs.search.rundir import write_atomic

# The paper's transfer tasks: CLRS-30 graph algorithms besides DFS.
DEFAULT_ALGORITHMS = ("bfs", "topological_sort", "articulation_points", "bridges",
                      "strongly_connected_components", "mst_kruskal", "mst_prim", "dijkstra",
                      "bellman_ford")
ROLES = ("program", "baseline")
METRICS = ("ood_acc", "ood_val_acc", "val_acc", "macs", "processor_param_count",
           "param_count", "train_seconds")


class TransferError(ValueError):
  """The transfer cannot run as asked; the message is one line naming the fix."""


def check_algorithms(algorithms: str | Sequence[str]) -> tuple[str, ...]:
  """Validates algorithm names against CLRS-30 (imports clrs).

  Raises:
    TransferError: empty, duplicated or unknown names (the message lists the valid ones).
  """
  names = [a.strip() for a in (algorithms.split(",") if isinstance(algorithms, str)
                               else algorithms) if a.strip()]
  if not names:
    raise TransferError("--algorithms is empty; name CLRS-30 algorithms, e.g. "
                        "--algorithms=bfs,dijkstra")
  if len(set(names)) != len(names):
    raise TransferError(f"--algorithms={','.join(names)} names an algorithm twice")
  from clrs._src import specs  # Slow import (TensorFlow), so only here.

  unknown = [a for a in names if a not in specs.CLRS_30_ALGS]
  if unknown:
    raise TransferError(f"unknown algorithm(s) {', '.join(unknown)}; CLRS-30 has: "
                        f"{', '.join(specs.CLRS_30_ALGS)}")
  return tuple(names)


def parse_profile_overrides(items: Sequence[str]) -> dict[str, Any]:
  """``["train_steps=5", "train_lengths=4,7"]`` -> typed profile overrides.

  Raises:
    TransferError: not FIELD=VALUE, an unknown field, or a value of the wrong type.
  """
  fields = {f.name: f for f in dataclasses.fields(profiles_lib.EvalProfile)}
  reference = profiles_lib.PROFILES["spark"]
  out: dict[str, Any] = {}
  for item in items:
    name, sep, text = item.partition("=")
    name, text = name.strip(), text.strip()
    if not sep or not text:
      raise TransferError(f"--profile_overrides={item!r} is not FIELD=VALUE (e.g. "
                          "train_steps=5)")
    if name not in fields or name in ("name", "algorithm"):
      raise TransferError(f"--profile_overrides={item!r}: {name!r} is not an overridable "
                          f"field; use one of {', '.join(profiles_lib.field_names())} "
                          "(the algorithm comes from --algorithms)")
    like = getattr(reference, name)
    try:
      if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0"):
          raise ValueError(text)
        out[name] = text.lower() in ("true", "1")
      elif isinstance(like, int):
        out[name] = int(text)
      elif isinstance(like, float):
        out[name] = float(text)
      elif isinstance(like, tuple):
        out[name] = tuple(int(v) for v in text.strip("()[]").split(",") if v.strip())
      else:
        out[name] = text
    except ValueError:
      raise TransferError(f"--profile_overrides={item!r}: {text!r} is not a valid "
                          f"{type(like).__name__}") from None
  return out


def _sha256(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class TransferResult:
  """The cells of a transfer and its aggregated table."""

  output: pathlib.Path
  cells: tuple[dict[str, Any], ...]
  table: dict[str, Any]
  evaluated: int
  markdown: pathlib.Path
  json: pathlib.Path

  def __str__(self) -> str:
    return (f"transfer: {len(self.cells)} cell(s), {self.evaluated} evaluated now; "
            f"table {self.markdown}")


class TransferDir:
  """Layout of a transfer output directory and its never-overwritten cell files."""

  def __init__(self, root: pathlib.Path):
    self.root = root

  def program_path(self, role: str) -> pathlib.Path:
    return self.root / "programs" / f"{role}.py"

  def cell_path(self, role: str, algorithm: str, seed: int) -> pathlib.Path:
    return self.root / "cells" / role / algorithm / f"seed{seed}.json"

  def workdir(self, role: str, algorithm: str, seed: int) -> pathlib.Path:
    """A fresh private directory for one evaluation (an interrupted one is never reused)."""
    base = self.root / "work" / role / algorithm
    path, n = base / f"seed{seed}", 1
    while path.exists():
      n += 1
      path = base / f"seed{seed}-{n}"
    path.mkdir(parents=True)
    return path

  def snapshot(self, role: str, source: str, text: str) -> pathlib.Path:
    """Stores the program once; a different program under the same role is refused."""
    path = self.program_path(role)
    if path.exists():
      if path.read_text() != text:
        flag = "--program" if role == "program" else "--baseline"
        raise TransferError(f"{self.root} was made for another {flag} (see {path}); pass "
                            f"that program or choose another --output")
      return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    write_atomic(path.with_suffix(".source"), source + "\n")
    return path

  def read_cell(self, role: str, algorithm: str, seed: int,
                expected: dict[str, Any]) -> dict[str, Any] | None:
    """A stored cell, checked against the program hash and profile it must have."""
    path = self.cell_path(role, algorithm, seed)
    if not path.is_file():
      return None
    try:
      cell = json.loads(path.read_text())
    except ValueError:
      raise TransferError(f"{path} is not valid JSON; delete it to evaluate that cell "
                          "again") from None
    for key in ("program_sha256", "profile"):
      if cell.get(key) != expected[key]:
        what = "program" if key == "program_sha256" else "profile"
        diff = ""
        if key == "profile":
          old, new = cell.get(key) or {}, expected[key]
          diff = ": " + ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}"
                                  for k in sorted(set(old) | set(new))
                                  if old.get(k) != new.get(k))
        raise TransferError(f"{path} was computed with another {what}{diff}; use the same "
                            "settings or choose another --output")
    return cell

  def write_cell(self, cell: dict[str, Any]) -> pathlib.Path:
    path = self.cell_path(cell["role"], cell["algorithm"], cell["seed"])
    if path.exists():
      raise TransferError(f"{path} already exists; a finished cell is never replaced")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, tables.to_json_text(cell))
    return path


def aggregate(cells: Sequence[dict[str, Any]], algorithms: Sequence[str],
              seeds: Sequence[int], labels: dict[str, str]) -> dict[str, Any]:
  """Per-task and average statistics of both programs over seeds (ok cells only)."""
  rows = []
  for algorithm in algorithms:
    row: dict[str, Any] = {"algorithm": algorithm}
    for role in ROLES:
      mine = [c for c in cells if c["role"] == role and c["algorithm"] == algorithm]
      ok = [c for c in mine if c["status"] == "ok"]
      row[role] = {
          "seeds_done": sorted(c["seed"] for c in ok),
          "failed": [{"seed": c["seed"], "status": c["status"], "reason": c["reason"]}
                     for c in mine if c["status"] != "ok"],
          **{m: tables.Stat.of((c["metrics"] or {}).get(m) for c in ok).to_json()
             for m in METRICS}}
    p, b = row["program"]["ood_acc"]["mean"], row["baseline"]["ood_acc"]["mean"]
    row["delta_ood_acc"] = None if p is None or b is None else p - b
    rows.append(row)
  average: dict[str, Any] = {}
  for role in ROLES:
    complete = [r for r in rows if len(r[role]["seeds_done"]) == len(seeds)]
    average[role] = {
        "tasks": [r["algorithm"] for r in complete],
        **{m: tables.Stat.of(r[role][m]["mean"] for r in complete).to_json()
           for m in ("ood_acc", "macs", "processor_param_count")}}
  both = [r for r in rows if all(len(r[role]["seeds_done"]) == len(seeds) for role in ROLES)]
  average["delta_ood_acc"] = tables.Stat.of(r["delta_ood_acc"] for r in both).to_json()
  average["tasks_with_both"] = [r["algorithm"] for r in both]
  return {"programs": labels, "algorithms": list(algorithms), "seeds": list(seeds),
          "tasks": rows, "average": average}


def markdown(table: dict[str, Any], title: str) -> str:
  """The transfer table as Markdown (accuracy as mean ± std over seeds)."""
  labels = table["programs"]
  headers = ["algorithm", f"program OOD-test ({labels['program']})",
             f"baseline OOD-test ({labels['baseline']})", "Δ (program − baseline)",
             "program MACs", "baseline MACs", "seeds done"]
  n = len(table["seeds"])
  rows = []
  for r in table["tasks"]:
    cells = [r["algorithm"]]
    for role in ROLES:
      text = tables.Stat(**r[role]["ood_acc"]).format()
      if r[role]["failed"]:
        text += f" ({len(r[role]['failed'])} failed)"
      cells.append(text)
    cells.append(tables.fmt(r["delta_ood_acc"]))
    cells += [tables.Stat(**r[role]["macs"]).format(integer=True) for role in ROLES]
    cells.append(", ".join(f"{role} {len(r[role]['seeds_done'])}/{n}" for role in ROLES))
    rows.append(cells)
  avg = table["average"]
  rows.append([f"**average** ({len(avg['tasks_with_both'])} task(s) with both)",
               *(tables.Stat(**avg[role]["ood_acc"]).format() for role in ROLES),
               tables.Stat(**avg["delta_ood_acc"]).format(),
               *(tables.Stat(**avg[role]["macs"]).format(integer=True) for role in ROLES),
               ""])
  lines = [f"# {title}", "",
           "OOD-test accuracy of each program trained from scratch per algorithm "
           f"(mean ± std over seeds: {', '.join(map(str, table['seeds']))}); MACs of one "
           "processor step on one graph. Program averages are over the tasks whose seeds all "
           "finished.", "", tables.markdown_table(headers, rows)]
  failures = [(r["algorithm"], role, f) for r in table["tasks"] for role in ROLES
              for f in r[role]["failed"]]
  if failures:
    lines += ["## Failed cells", "",
              "A failed cell is kept as a result; delete its JSON under cells/ to evaluate it "
              "again.", ""]
    lines += [f"- {algorithm}, {role}, seed {f['seed']}: {f['status']}: {f['reason']}"
              for algorithm, role, f in failures]
  return "\n".join(lines).rstrip() + "\n"


@dataclasses.dataclass(frozen=True)
class ExecutionSettings:
  """How the cells are evaluated (the search's executor flags, same names and meaning).

  Attributes:
    executor: ``local`` (jailed slots on this machine) or ``ray``.
    parallel_evaluations: cells evaluated at the same time (e.g. the number of GPUs).
    ray_address: Ray cluster address for ``ray``.
    ray_cpus_per_evaluation: CPUs one Ray task requests when the cluster has no GPU.
    compilation_cache: persistent JAX compilation cache in ``OUTPUT/cache/jax``
      (``$JAX_COMPILATION_CACHE_DIR`` when set).
    eval_timeout_s: wall-clock limit of one evaluation; 0 = ``evaluate.default_limits``.
    eval_memory_mb: memory limit of one evaluation; 0 = ``evaluate.default_limits``.
  """

  executor: str = "local"
  parallel_evaluations: int = 1
  ray_address: str = ""
  ray_cpus_per_evaluation: int = 1
  compilation_cache: bool = True
  eval_timeout_s: float = 0.0
  eval_memory_mb: int = 0


@dataclasses.dataclass(frozen=True)
class Task:
  """One cell still to evaluate."""

  where: str
  role: str
  algorithm: str
  seed: int
  program: pathlib.Path
  label: str
  profile: profiles_lib.EvalProfile
  expected: dict[str, Any]


def _make_executor(settings: ExecutionSettings, root: pathlib.Path) -> Any:
  from spark_clrs.evaluation import executors

  cache = None
  if settings.compilation_cache:
    cache = pathlib.Path(os.environ.get(executors.JAX_CACHE_VAR) or root / "cache" / "jax")
  try:
    return executors.make_executor(
        settings.executor, settings.parallel_evaluations, workdir=root / "work" / "executor",
        compile_cache_dir=cache, ray_address=settings.ray_address,
        ray_cpus_per_evaluation=settings.ray_cpus_per_evaluation)
  except executors.ExecutorError as e:
    raise TransferError(str(e)) from None


def _run_tasks(executor: Any, todo: Sequence[Task], out: TransferDir,
               settings: ExecutionSettings, stream: TextIO
               ) -> Iterator[tuple[Task, dict[str, Any]]]:
  """Evaluates the tasks, ``executor.slots`` at a time; stores and yields each cell as it
  finishes. An interruption stores nothing more (running cells are evaluated again)."""
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=executor.slots)
  try:
    futures = {}
    for task in todo:
      print(f"transfer: {task.where}: training", file=stream)
      workdir = out.workdir(task.role, task.algorithm, task.seed)
      limits = _limits(task.profile, settings.eval_timeout_s, settings.eval_memory_mb)
      futures[pool.submit(executor.evaluate, task.program, task.profile, [task.seed],
                          workdir=workdir, limits=limits)] = (task, time.time())
    for future in concurrent.futures.as_completed(futures):
      task, started = futures[future]
      result = future.result()
      cell = {"role": task.role, "program": str(task.program), "source": task.label,
              "algorithm": task.algorithm, "seed": task.seed, **task.expected,
              "status": result.status, "reason": result.reason, "metrics": result.metrics,
              "wall_seconds": round(result.wall_seconds, 3), "started_at": started,
              "finished_at": time.time()}
      out.write_cell(cell)
      metrics = result.metrics or {}
      outcome = (f"OOD-test {tables.fmt(metrics.get('ood_acc'))}, "
                 f"{tables.fmt(metrics.get('macs'))} MACs" if result.status == "ok"
                 else f"{result.status}: {result.reason}")
      print(f"transfer: {task.where}: {outcome} ({result.wall_seconds:.0f} s)", file=stream)
      yield task, cell
  finally:
    pool.shutdown(wait=False, cancel_futures=True)


def transfer(program: str | pathlib.Path, *, output: str | pathlib.Path,
             algorithms: str | Sequence[str] = DEFAULT_ALGORITHMS,
             seeds: str | Sequence[int] = (0, 1, 2), profile: str = "clrs",
             profile_overrides: Sequence[str] = (), baseline: str = "triplet_gmpnn",
             settings: ExecutionSettings | None = None,
             stream: TextIO | None = None) -> TransferResult:
  """Trains ``program`` and ``baseline`` on every algorithm and seed; writes the table.

  Args:
    program: a program file (e.g. ``RUN/results/best_program.py``) or a seed name.
    output: the transfer directory (resumable).
    algorithms: CLRS-30 algorithm names.
    seeds: training seeds, one evaluation each.
    profile: evaluation profile name (``clrs`` for the paper's protocol).
    profile_overrides: ``FIELD=VALUE`` strings applied to every task's profile.
    baseline: the program trained alongside (default the seed ``triplet_gmpnn``).
    settings: where and how the evaluations run (executor, slots, limits, cache).
    stream: where the progress lines go (default stderr).

  Raises:
    TransferError: bad settings, or an output directory made with other ones.
  """
  import processors

  stream = stream or sys.stderr
  names = check_algorithms(algorithms)
  try:
    seed_list = tuple(int(str(s).strip()) for s in (seeds.split(",") if isinstance(seeds, str)
                                                     else seeds) if str(s).strip())
  except ValueError:
    raise TransferError(f"--seeds={seeds!r}: seeds must be integers, e.g. --seeds=0,1,2") \
        from None
  if not seed_list or len(set(seed_list)) != len(seed_list):
    raise TransferError(f"--seeds={seeds!r}: give distinct integer seeds, e.g. --seeds=0,1,2")
  overrides = parse_profile_overrides(profile_overrides)
  try:
    task_profiles = {a: profiles_lib.get_profile(profile, **overrides, algorithm=a)
                     for a in names}
  except ValueError as e:
    raise TransferError(f"--profile={profile}: {e}") from None
  root = pathlib.Path(output).expanduser()
  if root.exists() and not root.is_dir():
    raise TransferError(f"--output={root} is a file; choose a directory")
  out = TransferDir(root)
  paths, hashes, labels = {}, {}, {}
  for role, source in (("program", program), ("baseline", baseline)):
    try:
      text = processors.resolve(source).read_text()
    except processors.ProgramLoadError as e:
      raise TransferError(f"--{role}: {e}") from None
    paths[role] = out.snapshot(role, str(source), text)
    hashes[role] = _sha256(text)
    labels[role] = pathlib.Path(str(source)).name
  grid = [(algorithm, seed, role) for algorithm in names for seed in seed_list
          for role in ROLES]
  stored: dict[tuple[str, int, str], dict[str, Any]] = {}
  todo: list[Task] = []
  for i, (algorithm, seed, role) in enumerate(grid, start=1):
    expected = {"program_sha256": hashes[role], "profile": task_profiles[algorithm].to_dict()}
    where = f"[{i}/{len(grid)}] {role} on {algorithm}, seed {seed}"
    cell = out.read_cell(role, algorithm, seed, expected)
    if cell is not None:
      print(f"transfer: {where}: done before ({cell['status']})", file=stream)
      stored[(algorithm, seed, role)] = cell
    else:
      todo.append(Task(where=where, role=role, algorithm=algorithm, seed=seed,
                       program=paths[role], label=labels[role],
                       profile=task_profiles[algorithm], expected=expected))
  if todo:
    settings = settings or ExecutionSettings()
    with _make_executor(settings, root) as executor:
      for task, cell in _run_tasks(executor, todo, out, settings, stream):
        stored[(task.algorithm, task.seed, task.role)] = cell
  cells = [stored[key] for key in grid]
  evaluated = len(todo)
  table = aggregate(cells, names, seed_list, labels)
  table["profile"] = profile
  table["profile_overrides"] = list(profile_overrides)
  table["program_sha256"] = hashes
  title = f"Transfer: {labels['program']} vs {labels['baseline']} ({profile} profile)"
  md = tables.write_text(root / "transfer.md", markdown(table, title))
  js = tables.write_json(root / "transfer.json", {**table, "cells": cells})
  return TransferResult(output=root, cells=tuple(cells), table=table, evaluated=evaluated,
                        markdown=md, json=js)


def _limits(profile: profiles_lib.EvalProfile, timeout_s: float, memory_mb: int) -> Any:
  """The evaluator's default limits for one seed, with the given non-zero values."""
  from spark_clrs.evaluation import evaluate

  limits = evaluate.default_limits(profile, 1)
  return dataclasses.replace(limits, timeout_s=timeout_s or limits.timeout_s,
                             memory_mb=memory_mb or limits.memory_mb)
