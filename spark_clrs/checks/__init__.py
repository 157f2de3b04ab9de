"""Cheap feasibility checks of a candidate program before any training (SPEC §3).

Stages, in order: ``parse -> scope -> policy -> interface -> shape -> finite -> budget``.
Each rejection is a :class:`Verdict` with its stage and a one-line, sanitised reason.

Modules, one concept each:

* ``verdict``: :class:`Verdict`, :class:`Budget`, the stage names, the reason limits.
* ``protocol``: :class:`CheckConfig` and the files shared by the parent and the child.
* ``static``: ``parse``, ``scope``, ``policy`` on the text (``policy``: the AST allow-list).
* ``driver``: :func:`run_checks` (text stages, then the jailed child, then the budget),
  :func:`measure_cost` (the trusted cost of an unchecked program) and :func:`make_worker`.
* ``jailed``, ``stages``, ``program``, ``fast_init``: the child side (runs candidate code,
  only inside the jail): ``interface``, ``shape``, ``finite`` and the budget's exports.
* ``budget``: the budget's numbers and caps, computed in the parent from those exports.

This package's ``__init__`` re-exports the parent-side API and imports no JAX.
"""

from spark_clrs.checks.budget import default_budget, resolve_budget, trusted_cost
from spark_clrs.checks.driver import (
  CHILD_ENV,
  CHILD_TARGET,
  DEFAULT_LIMITS,
  make_worker,
  measure_cost,
  run_checks,
  run_child,
  verdict_from_child,
)
from spark_clrs.checks.protocol import PARAMS_FILE, PROGRAM_FILE, CheckConfig, export_file
from spark_clrs.checks.static import static_checks
from spark_clrs.checks.verdict import MAX_QUOTE_CHARS, MAX_REASON_CHARS, STAGES, Budget, Verdict

__all__ = ["Budget", "CHILD_ENV", "CHILD_TARGET", "CheckConfig", "DEFAULT_LIMITS",
           "MAX_QUOTE_CHARS", "MAX_REASON_CHARS", "PARAMS_FILE", "PROGRAM_FILE", "STAGES",
           "Verdict", "default_budget", "export_file", "make_worker", "measure_cost",
           "resolve_budget", "run_checks", "run_child", "static_checks", "trusted_cost",
           "verdict_from_child"]
