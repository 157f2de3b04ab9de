"""The jailed check child: runs the executing stages on one program, in order.

:func:`child_checks` is the runner's target (``checks.driver.CHILD_TARGET``). It reports
each stage as progress before starting it, so a child that hangs or is killed is attributed
to the stage it was in, and returns the first rejection. Its word is taken only for the
stages it ran: the budget's numbers are computed by the parent from the files the
``budget`` stage left (``checks.budget``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from spark_clrs.checks import stages
from spark_clrs.checks.program import LoadedProgram, StageFailure, describe
from spark_clrs.checks.protocol import CheckConfig
from spark_clrs.checks.verdict import JAILED_STAGES
from spark_clrs.isolation import channel
from spark_clrs.messages import one_line

_RUN: dict[str, Callable[[LoadedProgram], None]] = {
    "interface": stages.interface, "shape": stages.shape, "finite": stages.finite,
    "budget": stages.budget,
}


def child_checks(payload: dict[str, Any]) -> dict[str, Any]:
  """Runner target: the executing stages for one program (runs in the jailed child).

  Args:
    payload: ``{"program_path": str, "hidden": int, "config": CheckConfig fields}``
      (other keys are ignored).

  Returns:
    ``{"feasible", "stage", "reason", "seconds": {stage: s}, "cpu_seconds": {stage: s}}``
    (``cpu_seconds``: this process's CPU time, all threads); when feasible, the program's
    directory holds the ``budget`` stage's files for the parent.
  """
  prog = LoadedProgram(payload["program_path"], int(payload["hidden"]),
                       CheckConfig.from_dict(payload["config"]))
  seconds: dict[str, float] = {}
  cpu_seconds: dict[str, float] = {}
  stage = JAILED_STAGES[0]

  def result(feasible: bool, stage: str, reason: str) -> dict[str, Any]:
    return {"feasible": feasible, "stage": stage, "reason": one_line(reason),
            "seconds": seconds, "cpu_seconds": cpu_seconds}

  try:
    for stage in JAILED_STAGES:
      channel.report_progress(stage=stage)
      start, cpu_start = time.perf_counter(), time.process_time()
      _RUN[stage](prog)
      seconds[stage] = time.perf_counter() - start
      cpu_seconds[stage] = time.process_time() - cpu_start
  except StageFailure as e:
    return result(False, stage, f"{stage}: {e.args[0]}")
  except Exception as e:  # Anything a stage did not anticipate still names the stage.
    return result(False, stage, f"{stage}: {describe(e, prog.path)}")
  return result(True, "ok", "")


__all__ = ["child_checks"]
