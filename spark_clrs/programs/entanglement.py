"""One entanglement rule for every strategy (SPEC §5), and formatting drift apart from it.

A proposal is *entangled* when its child changes more than the proposal was meant to:

* with a router-selected scope (``spark``'s router or its bandit fallback, the rule of
  ``mutation``, ``rc_sar --scope_router=random|bandit``): any change outside that scope,
  text for text (SPEC §1.5: a blank line or a comment counts);
* with no selected scope (the free-form baselines, and ``rc_sar``'s default where every
  factor is editable but nothing chose one): a change to the code of more than one
  factor, or of the read-only text.

Whole-program strategies rewrite the entire file, so their children often differ from
the parent by a blank line, a comment or a docstring somewhere they did not mean to
edit. Under the no-selected-scope rule such a formatting-only difference (the part's
code is the same up to :func:`spark_clrs.programs.dedup.normal_form`) is *drift*: it is
reported apart (``Entanglement.drift``) and never makes a proposal entangled, so the
entanglement rate of a baseline measures edits to the code, not its formatting. The
selected-scope rule stays text-exact, as the freeze it backs.

Which of the two rules applies is read from the proposal's ``decision["scope_source"]``:
the values in :data:`UNSELECTED` mean no router chose the scope. The *editable* area (the
proposal's ``scope``, e.g. every factor for ``rc_sar``) is a separate matter: with
``--freeze_non_selected_region`` a child that changes text outside it is rejected before
any compute, whichever rule counts its entanglement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from spark_clrs.programs import dedup, regions

# ``scope_source`` values of proposals whose scope no router selected.
UNSELECTED = ("unscoped", "all_factors")
READ_ONLY = "read-only text"  # How drift outside every region is named.


def scope_selected(scope: Sequence[str] | None, decision: Mapping[str, Any]) -> bool:
  """Whether a router (LLM, bandit, rule or random draw) selected ``scope``."""
  return bool(scope) and decision.get("scope_source") not in UNSELECTED


@dataclasses.dataclass(frozen=True)
class Entanglement:
  """What a child changed, judged by the rule of :func:`judge`.

  Attributes:
    changed: factors whose body changed (text for text under the selected-scope rule;
      in their code, drift left out, under the no-selected-scope rule).
    entangled: the SPEC §5 verdict; ``None`` when there is no child.
    outside_editable: what changed outside the proposal's editable ``scope`` (what the
      freeze rejects, text for text); empty when in it or when the proposal is unscoped.
    rule: ``selected scope`` or ``no selected scope``.
    drift: parts (factor names, or :data:`READ_ONLY`) that changed in formatting,
      comments or docstrings only; always empty under the selected-scope rule.
  """

  changed: tuple[str, ...]
  entangled: bool | None
  outside_editable: tuple[str, ...]
  rule: str
  drift: tuple[str, ...] = ()


def formatting_only(parent: str, child: str, factor: str | None = None) -> bool:
  """Whether ``child`` differs from ``parent`` in one part by formatting alone.

  ``factor`` names the region compared (the rest is taken from the parent); ``None``
  compares the read-only text (every region body is taken from the parent).
  """
  if factor is not None:
    probe = regions.replace_region(parent, factor, regions.get_region(child, factor))
  else:
    probe = child
    for name in regions.parse_regions(child):
      probe = regions.replace_region(probe, name, regions.get_region(parent, name))
  return dedup.same_program(probe, parent)


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
  if selected:
    return Entanglement(diff.changed, bool(outside), outside, rule)
  same_layout = regions.region_names(parent) == regions.region_names(child)
  drift = tuple(f for f in diff.changed if same_layout and formatting_only(parent, child, f))
  read_only = diff.outside_changed
  if read_only and same_layout and formatting_only(parent, child):
    read_only, drift = False, (*drift, READ_ONLY)
  changed = tuple(f for f in diff.changed if f not in drift)
  return Entanglement(changed, read_only or len(changed) > 1, outside, rule, drift)


__all__ = ["Entanglement", "READ_ONLY", "UNSELECTED", "formatting_only", "judge",
           "scope_selected"]
