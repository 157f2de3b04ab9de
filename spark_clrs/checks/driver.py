"""Runs the checks on one candidate: text stages here, the rest in the jail, budget here.

``run_checks`` is the one entry point (the search and ``python -m spark_clrs.check`` call
it): ``parse -> scope -> policy`` in this process (``checks.static``), then
``interface -> shape -> finite -> budget`` in ONE jailed child (``checks.jailed``, through
a fresh child or a pre-started :func:`make_worker` worker), then the budget's numbers and
caps here, from the files that child exported (``checks.budget``).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

from spark_clrs.checks import budget as budget_lib
from spark_clrs.checks.protocol import PROGRAM_FILE, CheckConfig
from spark_clrs.checks.static import static_checks
from spark_clrs.checks.verdict import JAILED_STAGES, Budget, Verdict, reject
from spark_clrs.isolation import exchange, sandbox
from spark_clrs.isolation.runner import FreshRunner, Runner

CHILD_TARGET = "spark_clrs.checks.jailed:child_checks"
# Modules a pre-started check worker imports before it is handed a candidate.
WORKER_PRELOAD = ("jax", "jax.numpy", "haiku", "numpy", "chex", "processors",
                  "spark_clrs.checks.jailed")
# Checks run on the CPU: they are tiny and must not contend with training on an
# accelerator (nor preallocate its memory).
CHILD_ENV = {"JAX_PLATFORMS": "cpu"}
DEFAULT_LIMITS = sandbox.Limits(timeout_s=60.0, memory_mb=4096, max_output_bytes=1 << 20)


def run_child(candidate_text: str, *, workdir: pathlib.Path, hidden: int,
              config: CheckConfig, limits: sandbox.Limits | None = None,
              worker: Runner | None = None) -> sandbox.ChildResult:
  """Runs the jailed stages on ``candidate_text`` in ``workdir`` (created), on ``worker``
  (a pre-started :func:`make_worker`) or else a fresh child.

  The program is written and the budget stage's stale files removed through
  ``isolation.exchange`` (never through a link the jail may have planted), so only what
  this child writes can be costed afterwards.
  """
  workdir = pathlib.Path(workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  for stale in budget_lib.child_files(config):
    exchange.unlink(workdir, stale)
  exchange.write_bytes(workdir, PROGRAM_FILE, candidate_text.encode())
  payload = {"program_path": str(workdir / PROGRAM_FILE), "hidden": hidden,
             "config": dataclasses.asdict(config)}
  limits = limits or DEFAULT_LIMITS
  runner = worker if worker is not None else FreshRunner(CHILD_ENV)
  return runner.run(CHILD_TARGET, payload, workdir=workdir, limits=limits)


def run_checks(candidate_text: str, *, parent_text: str | None = None,
               scope: Sequence[str] | None = None, budget: Budget | None = None,
               workdir: pathlib.Path, limits: sandbox.Limits | None = None,
               hidden: int = 128, config: CheckConfig | None = None,
               worker: sandbox.Worker | None = None, budget_seed: str = "triplet_gmpnn",
               budget_factor: float = 4.0) -> Verdict:
  """Runs every stage in order and returns the first rejection (or a feasible verdict).

  Args:
    candidate_text: the program.
    parent_text: the parent program; without it the ``scope`` stage is skipped.
    scope: factor names the child may change (default: all parent factors).
    budget: caps; None (or a None cap) = ``budget_factor`` x the ``budget_seed``
      processor's (``checks.budget.default_budget``, computed here, in the parent).
    workdir: private directory for the jailed stages (created).
    limits: runner limits (default :data:`DEFAULT_LIMITS`).
    hidden: processor width H (``out_size``), as in the evaluation profile.
    config: sizes of the executing stages (default :class:`CheckConfig`).
    worker: a pre-started worker from :func:`make_worker` (default: a fresh child).
    budget_seed: seed whose cost defines the default caps.
    budget_factor: multiple of the seed's cost allowed by the default caps.

  Raises:
    ValueError: if ``scope`` names a factor the parent does not have.
  """
  verdict = static_checks(candidate_text, parent_text=parent_text, scope=scope)
  if verdict is not None:
    return verdict
  config = config or CheckConfig()
  result = run_child(candidate_text, workdir=workdir, hidden=hidden, config=config,
                     limits=limits, worker=worker)
  caps = budget_lib.resolve_budget(budget, seed=budget_seed, hidden=hidden,
                                   factor=budget_factor, config=config)
  return verdict_from_child(result, budget=caps, workdir=workdir, hidden=hidden, config=config)


def measure_cost(program_text: str, *, workdir: pathlib.Path, hidden: int,
                 config: CheckConfig, limits: sandbox.Limits | None = None,
                 worker: sandbox.Worker | None = None) -> Verdict:
  """The trusted cost of a program that was not checked (no text stages, no caps).

  Runs the jailed stages (``interface`` to ``budget``: the export needs a processor that
  builds, traces and gives finite parameters) and costs the exports here. Feasible: the
  verdict carries the cost (``Verdict.cost()``); else it says which stage refused and why.
  Evaluation calls this for a program the search did not check (``python -m
  spark_clrs.evaluate PROGRAM``), with ``CheckConfig.for_profile(profile)``.
  """
  result = run_child(program_text, workdir=workdir, hidden=hidden, config=config,
                     limits=limits, worker=worker)
  return verdict_from_child(result, workdir=workdir, hidden=hidden, config=config)


def verdict_from_child(result: sandbox.ChildResult, *, budget: Budget | None = None,
                       workdir: pathlib.Path | None = None, hidden: int = 128,
                       config: CheckConfig | None = None) -> Verdict:
  """Turns the runner's outcome of ``checks.jailed.child_checks`` into a verdict.

  The child's own word is taken only for the stages it ran (and its reason is sanitised).
  When it passed them and ``workdir`` is given, the budget stage is decided here from the
  exported files: the trusted cost, against ``budget``'s caps (both set) when given.
  Without ``workdir`` (a caller that only wants the child's stages) a passing child gives
  a feasible verdict with no cost numbers.
  """
  if result.ok and isinstance(result.value, dict):
    value = result.value
    stage = value.get("stage")
    if value.get("feasible") is True and stage == "ok":
      if workdir is None:
        return Verdict(feasible=True, stage="ok", reason="")
      return budget_lib.decide(pathlib.Path(workdir).resolve(), budget, hidden=hidden,
                               config=config or CheckConfig())
    if stage not in JAILED_STAGES:
      return reject("interface", "the check child returned a malformed verdict")
    reason = str(value.get("reason", ""))
    prefix = f"{stage}: "
    return reject(stage, reason[len(prefix):] if reason.startswith(prefix) else reason)
  stage = result.progress.get("stage", "interface")
  if stage not in JAILED_STAGES:
    stage = "interface"
  return reject(stage, f"the check child stopped ({result.reason})")


def make_worker(workdir: pathlib.Path) -> sandbox.Worker:
  """A pre-started jailed worker with JAX, Haiku and the check stages imported (use with
  ``with``): each candidate gets a fresh interpreter that did its imports in advance."""
  return sandbox.Worker(workdir=workdir, preload=WORKER_PRELOAD, extra_env=CHILD_ENV)


__all__ = ["CHILD_ENV", "CHILD_TARGET", "DEFAULT_LIMITS", "WORKER_PRELOAD", "make_worker",
           "measure_cost", "run_checks", "run_child", "verdict_from_child"]
