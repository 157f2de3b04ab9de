"""The ``budget`` stage's decision, taken in the parent from data only.

The jailed child only exports (``checks.stages.budget``): the processor's parameters and
one processor step per shape of ``CheckConfig.cost_shapes``. Here, in the process that
never loads the candidate, every file is read through ``isolation.exchange`` (no links, no
FIFOs, bounded sizes, ``.npz`` headers only), each export is checked against the parameters
and costed (``evaluation.hlo_cost``), the exports must be one program whose cost does not
depend on the shape (``evaluation.cost_grid``), and the caps apply to the reference cost
(one step, one graph, ``macs_nb_nodes`` nodes). A child that forges its verdict cannot forge
these numbers; what a child with arbitrary code execution still could forge is stated in
BUILD_NOTES.md ("Budget numbers from data").
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib

from spark_clrs.checks.protocol import MAX_PARAMS_FILE_BYTES, PARAMS_FILE, CheckConfig, export_file
from spark_clrs.checks.verdict import Budget, Verdict, reject
from spark_clrs.evaluation import cost_grid, hlo_cost
from spark_clrs.isolation import exchange
from spark_clrs.messages import one_line


def child_files(config: CheckConfig) -> list[str]:
  """Every file the child's ``budget`` stage leaves (the parent removes stale ones first)."""
  return [PARAMS_FILE, *(export_file(s) for s in config.cost_shapes())]


def trusted_cost(workdir: pathlib.Path, *, hidden: int | None,
                 config: CheckConfig) -> cost_grid.GridCost:
  """The processor's cost from the files the check child left in ``workdir``.

  Raises:
    exchange.BoundaryError: a file is missing, not a regular file or too large.
    hlo_cost.ExportError: an export is not one processor step with those parameters.
    cost_grid.InconsistentCost: the exports are not one program with a stable cost.
  """
  shapes = exchange.npz_headers(workdir, PARAMS_FILE, max_bytes=MAX_PARAMS_FILE_BYTES)
  summaries = {}
  context = hlo_cost.ir_context()
  for at in config.cost_shapes():
    blob = exchange.read_bytes(workdir, export_file(at), max_bytes=hlo_cost.MAX_EXPORT_BYTES)
    summaries[at] = hlo_cost.read_export(blob, shapes, hidden=hidden, nb_nodes=at.nb_nodes,
                                         batch_size=at.batch_size, context=context)
  return cost_grid.consistent_cost(summaries)


def decide(workdir: pathlib.Path, budget: Budget | None, *, hidden: int,
           config: CheckConfig) -> Verdict:
  """The budget stage's verdict: the trusted cost, against the caps when ``budget`` is given
  (both caps set; ``resolve_budget``)."""
  try:
    cost = trusted_cost(workdir, hidden=hidden, config=config)
  except cost_grid.InconsistentCost as e:
    return reject("budget", str(e))
  except (exchange.BoundaryError, hlo_cost.ExportError) as e:
    return reject("budget", f"the processor's export could not be costed: {one_line(e)}")
  except OSError as e:  # Not one of ours: its type only, never text from the jail's files.
    return reject("budget", f"the processor's export could not be costed ({type(e).__name__})")
  verdict = Verdict(feasible=True, stage="ok", reason="", param_count=cost.param_count,
                    macs=cost.macs, macs_nb_nodes=cost.nb_nodes,
                    macs_by_shape=cost.macs_by_shape)
  if budget is None:
    return verdict
  assert budget.max_param_count is not None and budget.max_macs is not None
  if cost.param_count > budget.max_param_count:
    why = (f"{cost.param_count:,} processor parameters exceed the cap of "
           f"{budget.max_param_count:,}; use fewer or narrower layers")
  elif cost.macs > budget.max_macs:
    why = (f"{cost.macs:,} MACs per step (n={cost.nb_nodes}) exceed the cap of "
           f"{budget.max_macs:,}; use cheaper operators")
  else:
    return verdict
  rejected = reject("budget", why)  # Carries the real numbers, as a feasible one would.
  return dataclasses.replace(verdict, feasible=False, stage=rejected.stage,
                             reason=rejected.reason)


@functools.lru_cache(maxsize=16)
def default_budget(seed: str = "triplet_gmpnn", hidden: int = 128, factor: float = 4.0,
                   nb_triplet_fts: int = 8, nb_nodes: int = 16) -> Budget:
  """``factor`` x the seed processor's parameters and MACs (imports JAX in this process).

  The seed is trusted code (it ships with the package), so it is costed in-process.
  """
  import processors
  from spark_clrs.evaluation import macs

  factory = processors.load(seed, use_ln=True, nb_triplet_fts=nb_triplet_fts)
  cost = macs.processor_cost(factory, hidden=hidden, nb_nodes=nb_nodes)
  return Budget(max_param_count=math.ceil(factor * cost.param_count),
                max_macs=math.ceil(factor * cost.macs))


def resolve_budget(budget: Budget | None, *, seed: str = "triplet_gmpnn", hidden: int = 128,
                   factor: float = 4.0, config: CheckConfig | None = None) -> Budget:
  """``budget`` with each None cap filled by ``factor`` x the ``seed``'s (trusted, here)."""
  if budget is not None and budget.max_param_count is not None and budget.max_macs is not None:
    return budget
  config = config or CheckConfig()
  default = default_budget(seed, hidden, factor, config.nb_triplet_fts, config.macs_nb_nodes)
  if budget is None:
    return default
  return Budget(max_param_count=budget.max_param_count if budget.max_param_count is not None
                else default.max_param_count,
                max_macs=budget.max_macs if budget.max_macs is not None else default.max_macs)


__all__ = ["child_files", "decide", "default_budget", "resolve_budget", "trusted_cost"]
