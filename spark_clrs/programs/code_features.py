"""Measures of a program's text, for MAP-Elites grids over code (OpenEvolve's defaults).

OpenEvolve's built-in feature dimensions need no evaluator: ``complexity`` is the
program's length in characters and ``diversity`` is its mean distance to a fixed
reference set of programs, where the distance is a cheap stand-in for an edit distance
that adds up how much the lengths, the line counts and the sets of characters used
differ. The archive measures both on a candidate's text when a strategy asks for them
(``EngineOptions.feature_dims``); nothing here runs or trains the program.
"""

from __future__ import annotations

from collections.abc import Sequence

# Weights of the three differences (characters, lines, distinct characters), chosen by
# OpenEvolve so that the sum is on the scale of an edit distance between programs.
LENGTH_WEIGHT = 0.1
LINE_WEIGHT = 10.0
CHARSET_WEIGHT = 0.5
REFERENCE_SIZE = 20  # Programs in the reference set (OpenEvolve's diversity_reference_size).
FEATURES = ("complexity", "diversity")  # The dimensions this module measures.


def complexity(text: str) -> float:
  """The program's length in characters."""
  return float(len(text))


def distance(a: str, b: str) -> float:
  """How different two programs look: 0 for equal texts, larger for more different ones."""
  if a == b:
    return 0.0
  return (LENGTH_WEIGHT * abs(len(a) - len(b))
          + LINE_WEIGHT * abs(a.count("\n") - b.count("\n"))
          + CHARSET_WEIGHT * len(set(a) ^ set(b)))


def diversity(text: str, references: Sequence[str]) -> float:
  """Mean :func:`distance` to the reference programs whose text differs (0 with none)."""
  others = [r for r in references if r != text]
  return sum(distance(text, r) for r in others) / len(others) if others else 0.0


def measure(name: str, text: str, references: Sequence[str]) -> float:
  """Feature ``name`` (``complexity`` or ``diversity``) of ``text``."""
  if name == "complexity":
    return complexity(text)
  if name == "diversity":
    return diversity(text, references)
  raise ValueError(f"unknown code feature {name!r}; use complexity or diversity")


__all__ = ["FEATURES", "REFERENCE_SIZE", "complexity", "distance", "diversity", "measure"]
