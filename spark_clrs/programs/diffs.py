"""SEARCH/REPLACE diff edits, OpenEvolve's default edit format.

The reply holds one or more blocks::

    <<<<<<< SEARCH
    exact lines of the current program
    =======
    their replacement
    >>>>>>> REPLACE

applied in order, each to the first occurrence of its SEARCH text in the program as
edited so far (as OpenEvolve applies them). A block whose SEARCH text is absent makes
the whole reply unusable: the proposal is rejected with the block's first line named.
:func:`render` writes blocks for a known change (the offline proposer's answer).
"""

from __future__ import annotations

import difflib
import re

_BLOCK = re.compile(r"<{7} SEARCH\n(.*?)\n?={7}\n(.*?)\n?>{7} REPLACE", re.DOTALL)


class DiffError(ValueError):
  """The reply has no usable SEARCH/REPLACE block."""


def parse(reply: str) -> list[tuple[str, str]]:
  """The (search, replace) pairs of a reply, in order."""
  blocks = [(m.group(1), m.group(2)) for m in _BLOCK.finditer(reply or "")]
  if not blocks:
    raise DiffError("the reply has no <<<<<<< SEARCH / ======= / >>>>>>> REPLACE block")
  return blocks


def apply(program: str, blocks: list[tuple[str, str]]) -> str:
  """``program`` with every block applied (first occurrence each)."""
  text = program
  for search, replace in blocks:
    if not search.strip():
      raise DiffError("a SEARCH block is empty; it must quote lines of the current program")
    at = text.find(search)
    if at < 0:
      first = search.strip().split("\n")[0].strip()
      raise DiffError(f"SEARCH text not found in the program: {first[:80]!r}")
    text = text[:at] + replace + text[at + len(search):]
  return text


def apply_reply(program: str, reply: str) -> str:
  """Parses and applies a reply's blocks."""
  return apply(program, parse(reply))


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


__all__ = ["DiffError", "apply", "apply_reply", "parse", "render"]
