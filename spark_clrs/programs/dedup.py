"""Program identity up to formatting: no compute is spent twice on the same program.

LLMs often answer with the parent unchanged, or with a program the search has already
evaluated, reformatted, re-commented or with a reworded docstring. Two programs are the
same when their ASTs are, once string-only statements are removed: comments, blank
lines, quoting style, line breaks and docstrings (any statement that is a bare string
literal, which Python evaluates and discards) are ignored; every name and every other
literal is kept. The controller rejects a child identical to its parent as
``unchanged`` before any check runs, and gives a child identical to an archived
program that program's metrics, marked ``duplicate``, without training it.
"""

from __future__ import annotations

import ast
import hashlib


class _DropStringStatements(ast.NodeTransformer):
  """Removes statements that are a bare string literal (docstrings included).

  A body left empty gets a ``pass``, so ``def f(): "doc"`` and ``def f(): pass`` are the
  same program, as they behave the same.
  """

  def generic_visit(self, node: ast.AST) -> ast.AST:
    super().generic_visit(node)
    for name in ("body", "orelse", "finalbody"):
      block = getattr(node, name, None)
      if not isinstance(block, list) or not block or not isinstance(block[0], ast.stmt):
        continue
      kept = [s for s in block if not (isinstance(s, ast.Expr) and
                                        isinstance(s.value, ast.Constant) and
                                        isinstance(s.value.value, str))]
      if not kept and not isinstance(node, ast.Module):
        kept = [ast.Pass()]
      setattr(node, name, kept)
    return node


def normal_form(text: str | None) -> str | None:
  """The program's AST dump without string-only statements; ``None`` when it does not parse."""
  if text is None:
    return None
  try:
    tree = ast.parse(text)
  except (SyntaxError, ValueError):
    return None
  return ast.dump(_DropStringStatements().visit(tree))


def fingerprint(text: str | None) -> str | None:
  """SHA-256 of :func:`normal_form` (``None`` when the program does not parse)."""
  form = normal_form(text)
  return None if form is None else hashlib.sha256(form.encode()).hexdigest()


def same_program(a: str | None, b: str | None) -> bool:
  """Whether two programs have the same :func:`normal_form`."""
  fa = normal_form(a)
  return fa is not None and fa == normal_form(b)


__all__ = ["fingerprint", "normal_form", "same_program"]
