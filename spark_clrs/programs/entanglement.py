"""One entanglement rule for every strategy (SPEC §5).

A proposal is *entangled* when its child changes more than the proposal was meant to:

* with a router-selected scope (``spark``'s router or its bandit fallback, the rule of
  ``mutation``, ``rc_sar --scope_router=random|bandit``): any change outside that scope;
* with no selected scope (the free-form baselines, and ``rc_sar``'s default where every
  factor is editable but nothing chose one): a change to more than one factor, or to
  the read-only text.

Which of the two applies is read from the proposal's ``decision["scope_source"]``: the
values in :data:`UNSELECTED` mean no router chose the scope. The *editable* area (the
proposal's ``scope``, e.g. every factor for ``rc_sar``) is a separate matter: with
``--freeze_non_selected_region`` a child that changes text outside it is rejected
before any compute, whichever rule counts its entanglement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from spark_clrs.programs import regions

# ``scope_source`` values of proposals whose scope no router selected.
UNSELECTED = ("unscoped", "all_factors")


def scope_selected(scope: Sequence[str] | None, decision: Mapping[str, Any]) -> bool:
  """Whether a router (LLM, bandit, rule or random draw) selected ``scope``."""
  return bool(scope) and decision.get("scope_source") not in UNSELECTED


@dataclasses.dataclass(frozen=True)
class Entanglement:
  """What a child changed, judged by the rule of :func:`judge`.

  Attributes:
    changed: factors whose body changed.
    entangled: the SPEC §5 verdict; ``None`` when there is no child.
    outside_editable: what changed outside the proposal's editable ``scope`` (what the
      freeze rejects); empty when in it or when the proposal is unscoped.
    rule: ``selected scope`` or ``no selected scope``.
  """

  changed: tuple[str, ...]
  entangled: bool | None
  outside_editable: tuple[str, ...]
  rule: str


def judge(parent: str, child: str | None, scope: Sequence[str] | None,
          selected: bool) -> Entanglement:
  """Applies the rule to ``child`` against ``parent``."""
  rule = "selected scope" if selected else "no selected scope"
  if child is None:
    return Entanglement((), None, (), rule)
  try:
    diff = regions.diff_factors(parent, child)
  except regions.RegionError as e:
    broken = (f"region markers broken ({e})",)
    return Entanglement((), True, broken if scope else (), rule)
  outside: tuple[str, ...] = ()
  if scope and not diff.touches_only(scope):
    outside = tuple(regions.outside_scope_changes(parent, child, scope))
  entangled = bool(outside) if selected else diff.is_entangled
  return Entanglement(diff.changed, entangled, outside, rule)


__all__ = ["Entanglement", "UNSELECTED", "judge", "scope_selected"]
