"""The outcome of the checks (SPEC §3) and the budget it is judged against.

Shared by the parent, which decides, and the jailed check child, which only reports the
stages it ran; nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from spark_clrs.evaluation import cost_grid
from spark_clrs.messages import one_line

STAGES = ("parse", "scope", "policy", "interface", "shape", "finite", "budget")
STATIC_STAGES = STAGES[:3]  # Text only, in the parent.
JAILED_STAGES = STAGES[3:]  # Run candidate code, in the jailed check child.
MAX_REASON_CHARS = 400  # A whole verdict reason.
MAX_QUOTE_CHARS = 160  # Text quoted from an exception raised by candidate code.


@dataclasses.dataclass(frozen=True)
class Verdict:
  """Outcome of the checks.

  Attributes:
    feasible: True when every stage passed.
    stage: ``"ok"`` when feasible, else the rejecting stage (one of :data:`STAGES`).
    reason: one line, ``"<stage>: <what is wrong and how to fix it>"``; empty when ok.
    param_count: processor parameters (0 if the budget stage was not reached).
    macs: multiply-accumulates of one processor step for one graph of ``macs_nb_nodes``
      nodes (0 if the budget stage was not reached).
    macs_nb_nodes: the graph size of ``macs`` (0 if not reached).
    macs_by_shape: MACs of the whole batch at each shape the budget stage measured
      (``cost_grid.Shape.key`` -> MACs), which the budget found consistent with ``macs``.
  """

  feasible: bool
  stage: str
  reason: str
  param_count: int = 0
  macs: int = 0
  macs_nb_nodes: int = 0
  macs_by_shape: dict[str, int] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict[str, Any]:
    """The SPEC §3 JSON object (the cost per shape stays out of it: see ``cost_metrics``)."""
    return {"feasible": self.feasible, "stage": self.stage, "reason": self.reason,
            "param_count": self.param_count, "macs": self.macs}

  def to_json(self) -> str:
    return json.dumps(self.to_dict())

  def cost(self) -> cost_grid.GridCost | None:
    """The trusted cost the budget stage measured (None when it was not reached): what
    evaluation reuses instead of exporting and costing the processor again."""
    if not self.macs_nb_nodes:
      return None
    return cost_grid.GridCost(param_count=self.param_count, macs=self.macs,
                              nb_nodes=self.macs_nb_nodes,
                              macs_by_shape=dict(self.macs_by_shape))

  def cost_metrics(self) -> dict[str, Any]:
    """The trusted cost as candidate metrics (what the search stores and evaluation reuses)."""
    return {"check_param_count": self.param_count, "check_macs": self.macs,
            "check_macs_nb_nodes": self.macs_nb_nodes,
            "check_macs_by_shape": dict(self.macs_by_shape)}


@dataclasses.dataclass(frozen=True)
class Budget:
  """Caps of the budget stage (processor only; MACs of one step, one graph).

  A ``None`` cap is filled with the default (``checks.budget.default_budget``) in the
  parent (``checks.budget.resolve_budget``), never by the check child.
  """

  max_param_count: int | None
  max_macs: int | None


def reject(stage: str, reason: str) -> Verdict:
  """A rejection at ``stage``: the reason made one printable line, prefixed by the stage."""
  return Verdict(feasible=False, stage=stage,
                 reason=one_line(f"{stage}: {reason}", MAX_REASON_CHARS))


__all__ = ["Budget", "JAILED_STAGES", "MAX_QUOTE_CHARS", "MAX_REASON_CHARS", "STAGES",
           "STATIC_STAGES", "Verdict", "reject"]
