"""The text-only stages: ``parse``, ``scope`` and ``policy`` (run in the parent).

They read the program's text and syntax tree and never execute it, so they run before any
jail is started; a rejection here costs milliseconds.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence

from spark_clrs.checks import policy
from spark_clrs.checks.protocol import PROGRAM_FILE
from spark_clrs.checks.verdict import Verdict, reject
from spark_clrs.programs import regions


def static_checks(candidate_text: str, *, parent_text: str | None = None,
                  scope: Sequence[str] | None = None) -> Verdict | None:
  """Runs ``parse``, ``scope`` and ``policy``; None when all pass.

  With a parent and no ``scope``, every parent factor is editable but the read-only
  skeleton (and the markers) must be unchanged. Without a parent, ``scope`` is skipped.

  Raises:
    ValueError: if ``scope`` names a factor the parent does not have (a usage error).
  """
  try:
    tree = ast.parse(candidate_text, filename=PROGRAM_FILE)
  except SyntaxError as e:
    return reject("parse", f"line {e.lineno}: {e.msg}; the program must be valid Python")
  try:
    child_regions = regions.parse_regions(candidate_text)
  except regions.RegionError as e:
    return reject("parse", str(e))
  if not child_regions:
    return reject("parse", "no factor regions found; keep the '# ===== BEGIN NAME REGION "
                  "=====' / '# ===== END NAME REGION =====' marker lines")
  if parent_text is not None:
    verdict = _scope(candidate_text, parent_text, child_regions, scope)
    if verdict is not None:
      return verdict
  violations = policy.check_policy(tree)
  if violations:
    more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
    return reject("policy", f"{violations[0]}{more}")
  return None


def _scope(candidate_text: str, parent_text: str,
           child_regions: Mapping[str, regions.Region],
           scope: Sequence[str] | None) -> Verdict | None:
  """The ``scope`` stage: only the selected regions may differ from the parent."""
  parent_regions = regions.parse_regions(parent_text)
  names = list(parent_regions)
  selected = list(scope) if scope else names
  unknown = [s for s in selected if s not in parent_regions]
  if unknown:
    raise ValueError(f"unknown scope {', '.join(unknown)}; the parent's factors are "
                     f"{', '.join(names)}")
  missing = [n for n in names if n not in child_regions]
  if missing:
    return reject("parse", f"region {', '.join(missing)} is missing (marker lines deleted "
                  f"or renamed); the parent has {', '.join(names)}")
  problems = regions.outside_scope_changes(parent_text, candidate_text, selected)
  if problems:
    return reject("scope", f"changed outside {'+'.join(selected)}: {'; '.join(problems)}; "
                  "edit only the selected region")
  return None


__all__ = ["static_checks"]
