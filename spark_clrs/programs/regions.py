"""Factor regions of a program: parse, list, replace, and compare (SPEC §2).

A factor region is the text between two marker lines::

    # ===== BEGIN OPERATOR REGION =====
    ...
    # ===== END OPERATOR REGION =====

Markers are matched on the stripped line, so a region may sit at any
indentation. Each factor appears exactly once and regions never nest. The
text outside all regions (markers included) is the read-only skeleton that a
scoped edit must leave untouched.

A model asked to return the whole program retypes thousands of read-only characters and
drifts in a blank line, trailing spaces or a comment. :func:`repair_drift` tells such
drift from a code change: when the only differences outside the editable regions are
whitespace or comments, the child's regions are spliced into the parent (SPEC §1 step 5).
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import textwrap
import tokenize
from collections.abc import Iterable, Sequence

_MARKER = re.compile(r"^#\s*=+\s*(BEGIN|END)\s+([A-Z][A-Z0-9_]*)\s+REGION\s*=+\s*$")
# Anything that looks like an attempt at a marker but is malformed.
_MARKER_LIKE = re.compile(r"^#\s*=+\s*(BEGIN|END)\b.*REGION", re.IGNORECASE)


class RegionError(ValueError):
  """A program's region markers are missing, duplicated, nested or unterminated."""


@dataclasses.dataclass(frozen=True)
class Region:
  """One factor region.

  Attributes:
    name: factor name in capitals, e.g. ``OPERATOR``.
    begin: 1-based line number of the BEGIN marker.
    end: 1-based line number of the END marker.
    body: the lines strictly between the markers, joined with newlines
      (each line keeps its indentation; a trailing newline is included when
      the body is non-empty).
  """

  name: str
  begin: int
  end: int
  body: str


def begin_marker(name: str, indent: str = "") -> str:
  return f"{indent}# ===== BEGIN {name} REGION ====="


def end_marker(name: str, indent: str = "") -> str:
  return f"{indent}# ===== END {name} REGION ====="


def parse_regions(text: str) -> dict[str, Region]:
  """Returns the program's regions in file order, keyed by factor name.

  Raises:
    RegionError: with the offending line number for a malformed, duplicated,
      nested, unmatched or unterminated marker.
  """
  lines = text.split("\n")
  regions: dict[str, Region] = {}
  open_name: str | None = None
  open_line = 0
  for lineno, raw in enumerate(lines, start=1):
    stripped = raw.strip()
    match = _MARKER.match(stripped)
    if not match:
      if _MARKER_LIKE.match(stripped):
        raise RegionError(
            f"line {lineno}: malformed region marker {stripped!r}; write it exactly as "
            "'# ===== BEGIN NAME REGION =====' with NAME in capitals")
      continue
    kind, name = match.groups()
    if kind == "BEGIN":
      if open_name is not None:
        raise RegionError(
            f"line {lineno}: BEGIN {name} REGION is nested inside {open_name} "
            f"(opened on line {open_line}); close {open_name} first")
      if name in regions:
        raise RegionError(
            f"line {lineno}: region {name} is duplicated (first BEGIN on line "
            f"{regions[name].begin}); each factor must appear exactly once")
      open_name, open_line = name, lineno
    else:
      if open_name is None:
        where = f" (region {name} already closed on line {regions[name].end})" if name in regions else ""
        raise RegionError(f"line {lineno}: END {name} REGION has no matching BEGIN{where}")
      if name != open_name:
        raise RegionError(
            f"line {lineno}: END {name} REGION closes {open_name}, which was opened on "
            f"line {open_line}; end {open_name} first")
      body_lines = lines[open_line:lineno - 1]
      body = "\n".join(body_lines) + ("\n" if body_lines else "")
      regions[name] = Region(name=name, begin=open_line, end=lineno, body=body)
      open_name = None
  if open_name is not None:
    raise RegionError(
        f"line {open_line}: BEGIN {open_name} REGION is never closed; add "
        f"'{end_marker(open_name)}'")
  return regions


def region_names(text: str) -> list[str]:
  """Factor names of the program, in file order."""
  return list(parse_regions(text))


def require_regions(text: str, names: Iterable[str]) -> dict[str, Region]:
  """Parses and checks that every named factor is present."""
  regions = parse_regions(text)
  missing = [n for n in names if n not in regions]
  if missing:
    have = ", ".join(regions) or "none"
    raise RegionError(
        f"missing region(s) {', '.join(missing)} (program has: {have}); add the "
        "BEGIN/END markers")
  return regions


def get_region(text: str, name: str) -> str:
  """Body of one region."""
  return require_regions(text, [name])[name].body


def replace_region(text: str, name: str, new_body: str) -> str:
  """Returns ``text`` with region ``name``'s body replaced by ``new_body``.

  The markers and everything outside the region are kept byte for byte.
  """
  region = require_regions(text, [name])[name]
  lines = text.split("\n")
  body = new_body if not new_body or new_body.endswith("\n") else new_body + "\n"
  body_lines = body.split("\n")[:-1] if body else []
  out = lines[:region.begin] + body_lines + lines[region.end - 1:]
  return "\n".join(out)


def skeleton(text: str, keep: Sequence[str] = ()) -> str:
  """The program with every region body not in ``keep`` replaced by a placeholder.

  Two programs with equal skeletons (for ``keep`` = the selected scope) differ
  only inside the selected regions. Markers stay in the skeleton, so a moved,
  renamed or deleted marker shows up as a difference.
  """
  regions = parse_regions(text)
  lines = text.split("\n")
  out: list[str] = []
  cursor = 0
  for region in regions.values():
    out.extend(lines[cursor:region.begin])
    if region.name in keep:
      out.append(f"<{region.name} body: editable>")
    else:
      out.extend(lines[region.begin:region.end - 1])
    cursor = region.end - 1
  out.extend(lines[cursor:])
  return "\n".join(out)


@dataclasses.dataclass(frozen=True)
class FactorDiff:
  """How a child differs from its parent, factor by factor.

  Attributes:
    changed: factors whose body changed, in the parent's order.
    outside_changed: whether any text outside all regions (markers included)
      changed, or the set of factors differs.
  """

  changed: tuple[str, ...]
  outside_changed: bool

  def touches_only(self, scope: Iterable[str]) -> bool:
    """True when every change lies inside ``scope``."""
    allowed = set(scope)
    return not self.outside_changed and set(self.changed) <= allowed

  @property
  def is_entangled(self) -> bool:
    """More than one factor, or the skeleton, changed (used when no scope was set)."""
    return self.outside_changed or len(self.changed) > 1


def diff_factors(parent: str, child: str) -> FactorDiff:
  """Compares a child with its parent region by region.

  Raises:
    RegionError: if either program's markers do not parse.
  """
  p_regions = parse_regions(parent)
  c_regions = parse_regions(child)
  names = list(p_regions)
  if list(c_regions) != names:
    changed = tuple(n for n in names if n not in c_regions or
                    c_regions[n].body != p_regions[n].body)
    return FactorDiff(changed=changed, outside_changed=True)
  changed = tuple(n for n in names if c_regions[n].body != p_regions[n].body)
  outside = skeleton(parent, keep=names) != skeleton(child, keep=names)
  return FactorDiff(changed=changed, outside_changed=outside)


def _skeleton_lines(text: str) -> list[tuple[int, str]]:
  """Lines outside every region body (markers included) with their 1-based line numbers.

  Each region body is collapsed into one placeholder line numbered like its first body
  line, so that two skeletons can be compared line by line.
  """
  regions = parse_regions(text)
  lines = text.split("\n")
  inside = {}
  for region in regions.values():
    inside.update({i: region.name for i in range(region.begin + 1, region.end)})
  out: list[tuple[int, str]] = []
  for lineno, line in enumerate(lines, start=1):
    name = inside.get(lineno)
    if name is None:
      out.append((lineno, line))
    elif lineno == regions[name].begin + 1:
      out.append((lineno, f"<{name} body>"))
  return out


def outside_scope_changes(parent: str, child: str, scope: Sequence[str]) -> list[str]:
  """Human-readable list of what changed outside ``scope`` (empty when in scope).

  Each entry names a factor or the first differing read-only line (with its line number
  in the child), so that a rejection reason can say exactly what was touched.
  """
  diff = diff_factors(parent, child)
  problems = [f"region {n}" for n in diff.changed if n not in scope]
  if diff.outside_changed:
    p_lines = _skeleton_lines(parent)
    c_lines = _skeleton_lines(child)
    for (_, a), (c_no, b) in zip(p_lines, c_lines, strict=False):
      if a != b:
        problems.append(f"read-only line {c_no}: {a.strip()!r} -> {b.strip()!r}")
        break
    else:
      if len(c_lines) > len(p_lines):
        c_no, b = c_lines[len(p_lines)]
        problems.append(f"read-only line {c_no}: added {b.strip()!r}")
      elif len(p_lines) > len(c_lines):
        p_no, a = p_lines[len(c_lines)]
        problems.append(f"read-only text: parent line {p_no} {a.strip()!r} was removed")
      else:
        problems.append("read-only text: the set of regions differs from the parent's")
  return problems


def _indent(body: str) -> str:
  """The indentation of the first non-blank line."""
  for line in body.split("\n"):
    if line.strip():
      return line[:len(line) - len(line.lstrip())]
  return ""


def reindent_body(body: str, like: str) -> str:
  """``body`` shifted to the indentation of the region body ``like`` (relative indents kept)."""
  return _shift(body, _indent(like))


def _shift(body: str, indent: str) -> str:
  """``body`` dedented, then indented by ``indent`` (blank lines emptied)."""
  dedented = textwrap.dedent(body)
  lines = [(indent + line) if line.strip() else "" for line in dedented.split("\n")]
  out = "\n".join(lines).rstrip("\n")
  return out + "\n" if out else ""


def _code_tokens(text: str) -> list[tuple[int, str]] | None:
  """The program's tokens without comments, blank lines or indentation width; None if invalid."""
  skip = (tokenize.COMMENT, tokenize.NL)
  blank = (tokenize.INDENT, tokenize.NEWLINE, tokenize.DEDENT, tokenize.ENDMARKER)
  try:
    return [(t.type, "" if t.type in blank else t.string)
            for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in skip]
  except (tokenize.TokenError, SyntaxError):
    return None


@dataclasses.dataclass(frozen=True)
class DriftRepair:
  """A child whose text outside its scope drifted only in whitespace or comments.

  Attributes:
    child: the parent with the child's scope regions spliced in (the parent's own text
      everywhere else, byte for byte).
    drift: what differed outside the scope, as :func:`outside_scope_changes` words it.
  """

  child: str
  drift: tuple[str, ...]


def repair_drift(parent: str, child: str, scope: Sequence[str]) -> DriftRepair | None:
  """Splices ``child``'s ``scope`` regions into ``parent`` when nothing else changed in code.

  Returns ``None`` when there is nothing to repair (the child already leaves the rest
  alone) or nothing that may be repaired: broken, missing or reordered markers, a token
  that differs outside ``scope`` (code, docstrings and other strings included), or a
  splice that does not parse.
  """
  try:
    p_regions, c_regions = parse_regions(parent), parse_regions(child)
  except RegionError:
    return None
  if list(p_regions) != list(c_regions) or any(s not in p_regions for s in scope):
    return None
  drift = outside_scope_changes(parent, child, scope)
  if not drift:
    return None
  # Region indentation, read off each program's BEGIN marker line.
  p_lines, c_lines = parent.split("\n"), child.split("\n")
  p_indent = {n: _indent(p_lines[p_regions[n].begin - 1]) for n in scope}
  c_indent = {n: _indent(c_lines[c_regions[n].begin - 1]) for n in scope}

  def moved(body: str, have: str, want: str) -> str:
    return body if have == want else _shift(body, want)

  outside = child
  for name in scope:  # The child's text outside its scope, its scope bodies the parent's.
    outside = replace_region(outside, name,
                             moved(p_regions[name].body, p_indent[name], c_indent[name]))
  parent_tokens = _code_tokens(parent)
  if parent_tokens is None or parent_tokens != _code_tokens(outside):
    return None
  repaired = parent
  for name in scope:
    repaired = replace_region(repaired, name,
                              moved(c_regions[name].body, c_indent[name], p_indent[name]))
  try:
    ast.parse(repaired)
  except SyntaxError:
    return None
  return DriftRepair(repaired, tuple(drift))
