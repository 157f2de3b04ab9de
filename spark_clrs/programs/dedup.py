"""Program identity up to formatting: no compute is spent twice on the same program.

LLMs often answer with the parent unchanged, or with a program the search has already
evaluated, reformatted or re-commented. Two programs are the same when their ASTs are
(``ast.dump(ast.parse(text))``: comments, blank lines, quoting style and line breaks
ignored; docstrings and every name kept). The controller rejects a child identical to
its parent as ``unchanged`` before any check runs, and gives a child identical to an
archived program that program's metrics, marked ``duplicate``, without training it.
"""

from __future__ import annotations

import ast
import hashlib


def normal_form(text: str | None) -> str | None:
  """The program's AST dump; ``None`` when it does not parse (the checks reject it)."""
  if text is None:
    return None
  try:
    return ast.dump(ast.parse(text))
  except (SyntaxError, ValueError):
    return None


def fingerprint(text: str | None) -> str | None:
  """SHA-256 of :func:`normal_form` (``None`` when the program does not parse)."""
  form = normal_form(text)
  return None if form is None else hashlib.sha256(form.encode()).hexdigest()


def same_program(a: str | None, b: str | None) -> bool:
  """Whether two programs parse to the same AST."""
  fa = normal_form(a)
  return fa is not None and fa == normal_form(b)


__all__ = ["fingerprint", "normal_form", "same_program"]
