"""The names callers use to run code in the jail, re-exported from where they live.

:mod:`runner` (``run_in_child``, ``Worker``), :mod:`limits` (``Limits``, ``ChildResult``,
``STATUSES``, ``slot_memory_mb``), :mod:`channel` (``report_progress``, child side),
:mod:`supervision` (``kill_tree``), :mod:`environment` (``scrubbed_env``,
``is_secret_var``) and :mod:`devices` (``accelerator_visible``, ``gpu_given``). Callers may
keep importing this module; new code may import the defining modules directly.
"""

from spark_clrs.isolation.channel import report_progress
from spark_clrs.isolation.devices import accelerator_visible, gpu_given
from spark_clrs.isolation.environment import is_secret_var, scrubbed_env
from spark_clrs.isolation.limits import STATUSES, ChildResult, Limits, slot_memory_mb
from spark_clrs.isolation.runner import Worker, run_in_child
from spark_clrs.isolation.supervision import kill_tree

__all__ = ["ChildResult", "Limits", "STATUSES", "Worker", "accelerator_visible", "gpu_given",
           "is_secret_var", "kill_tree", "report_progress", "run_in_child", "scrubbed_env",
           "slot_memory_mb"]
