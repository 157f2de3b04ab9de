"""SEARCH/REPLACE diff edits, OpenEvolve's default edit format.

The reply holds one or more blocks::

    <<<<<<< SEARCH
    exact lines of the current program
    =======
    their replacement
    >>>>>>> REPLACE

applied in order, as OpenEvolve applies them: a block's SEARCH lines must equal whole
consecutive lines of the program as edited so far, and its first occurrence is
replaced. A block whose SEARCH lines occur nowhere is skipped (OpenEvolve skips it too)
and named in :attr:`Applied.skipped`; the reply is unusable only when no block applies
(:func:`apply` then raises :class:`DiffError`). :func:`render` writes blocks for a known
change (the offline proposer's answer).
"""

from __future__ import annotations

import dataclasses
import difflib
import re

_BLOCK = re.compile(r"<{7} SEARCH\n(.*?)\n?={7}\n(.*?)\n?>{7} REPLACE", re.DOTALL)


class DiffError(ValueError):
  """The reply has no usable SEARCH/REPLACE block."""


@dataclasses.dataclass(frozen=True)
class Applied:
  """The program after the blocks that matched, and the first lines of those that did not.

  Attributes:
    text: the edited program.
    applied: how many blocks were applied.
    skipped: for each block whose SEARCH lines were not found, its first non-blank line.
  """

  text: str
  applied: int
  skipped: tuple[str, ...] = ()


def parse(reply: str) -> list[tuple[str, str]]:
  """The (search, replace) pairs of a reply, in order."""
  blocks = [(m.group(1), m.group(2)) for m in _BLOCK.finditer(reply or "")]
  if not blocks:
    raise DiffError("the reply has no <<<<<<< SEARCH / ======= / >>>>>>> REPLACE block")
  return blocks


def _first_line(search: str) -> str:
  lines = [line.strip() for line in search.split("\n") if line.strip()]
  return (lines[0] if lines else "")[:80]


def _find(lines: list[str], search: list[str]) -> int:
  """Index of the first run of ``lines`` equal to ``search``, or -1."""
  for i in range(len(lines) - len(search) + 1):
    if lines[i:i + len(search)] == search:
      return i
  return -1


def apply(program: str, blocks: list[tuple[str, str]]) -> Applied:
  """``program`` with every block that matches applied (first occurrence each).

  Raises:
    DiffError: when no block applies (empty SEARCH texts never do).
  """
  lines = program.split("\n")
  applied, skipped = 0, []
  for search, replace in blocks:
    at = _find(lines, search.split("\n")) if search.strip() else -1
    if at < 0:
      skipped.append(_first_line(search) or "(empty SEARCH)")
      continue
    lines[at:at + len(search.split("\n"))] = replace.split("\n") if replace else []
    applied += 1
  if not applied:
    shown = "; ".join(repr(s) for s in skipped[:3])
    raise DiffError(f"none of the {len(blocks)} SEARCH block(s) matches lines of the program "
                    f"(first lines: {shown})")
  return Applied("\n".join(lines), applied, tuple(skipped))


def apply_reply(program: str, reply: str) -> str:
  """Parses and applies a reply's blocks (those that match)."""
  return apply(program, parse(reply)).text


def render(old: str, new: str) -> str:
  """SEARCH/REPLACE blocks turning ``old`` into ``new`` (one per group of nearby changes).

  Each SEARCH holds the changed lines with as many context lines as it takes (up to 8)
  for every SEARCH text to occur exactly once in ``old``.
  """
  a, b = old.split("\n"), new.split("\n")
  matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
  blocks: list[tuple[str, str]] = []
  for context in range(1, 9):
    blocks = []
    for group in matcher.get_grouped_opcodes(context):
      i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
      blocks.append(("\n".join(a[i1:i2]), "\n".join(b[j1:j2])))
    if all(search.strip() and old.count(search) == 1 for search, _ in blocks):
      break
  return "\n\n".join(f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE"
                       for search, replace in blocks)


__all__ = ["Applied", "DiffError", "apply", "apply_reply", "parse", "render"]
