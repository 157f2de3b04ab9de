"""AST allow-list for candidate programs (the ``policy`` stage of SPEC §3).

A candidate is LLM-written and untrusted. Before any of it runs (even in the sandbox) its
syntax tree is checked here, without executing it: imports must come from a short list of
numerical libraries, and the usual escape hatches (``exec``, ``eval``, ``open``,
``__import__``, ``globals``, dunder attribute walks such as ``x.__class__.__subclasses__``,
file/callback APIs of numpy and JAX, ...) are refused. The policy is deliberately strict:
a GNN processor needs none of these. The sandbox remains the real security boundary;
this stage turns most attacks and accidents into a one-line reason before a child is
spawned.
"""

from __future__ import annotations

import ast
import dataclasses
import re

# Top-level modules a candidate may import (with their public submodules).
ALLOWED_IMPORTS = frozenset({
    "jax", "haiku", "numpy", "chex", "optax", "functools", "math", "cmath", "typing",
    "dataclasses", "collections", "abc", "enum", "itertools", "operator", "numbers",
    "__future__",
})

# Builtins and well-known module names that must never be referenced.
FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "open", "compile", "__import__", "globals", "locals", "vars",
    "breakpoint", "input", "exit", "quit", "help", "memoryview", "os", "sys", "subprocess",
    "socket", "pathlib", "importlib", "builtins", "__builtins__", "shutil", "ctypes",
    "pickle", "marshal", "io", "tempfile", "threading", "multiprocessing", "signal",
    "resource", "inspect", "gc", "code", "runpy", "urllib", "http", "requests",
})

# Attribute names that reach files, processes, host callbacks or interpreter internals.
FORBIDDEN_ATTRIBUTES = frozenset({
    # numpy / jax I/O and host callbacks.
    "load", "loads", "save", "savez", "savez_compressed", "savetxt", "loadtxt",
    "genfromtxt", "fromfile", "tofile", "memmap", "ctypeslib", "ctypes", "f2py",
    "distutils", "DataSource", "io_callback", "pure_callback", "host_callback", "callback",
    "debug_callback", "distributed", "profiler", "compilation_cache", "system", "popen",
    # typing evaluates annotation strings.
    "get_type_hints", "ForwardRef", "_evaluate",
    # frame / code objects.
    "gi_frame", "gi_code", "cr_frame", "ag_frame", "f_globals", "f_locals", "f_builtins",
    "f_back", "tb_frame", "tb_next", "co_code", "func_globals", "mro",
})

# Dunder attributes a processor legitimately uses (``super().__init__(...)``).
ALLOWED_DUNDER_ATTRIBUTES = frozenset({"__init__", "__call__", "__name__", "__qualname__",
                                       "__doc__"})
ALLOWED_DUNDER_NAMES = frozenset({"__name__"})

_REFLECTION = frozenset({"getattr", "setattr", "delattr", "hasattr"})
_DUNDER = re.compile(r"^__\w+__$")
_FORMAT_DUNDER = re.compile(r"\{[^{}]*__\w+__[^{}]*\}")


@dataclasses.dataclass(frozen=True)
class Violation:
  """One policy violation: 1-based ``line`` and a message saying what to change."""

  line: int
  message: str

  def __str__(self) -> str:
    return f"line {self.line}: {self.message}"


def _allowed_module(name: str) -> bool:
  parts = name.split(".")
  return parts[0] in ALLOWED_IMPORTS and not any(p.startswith("_") for p in parts[1:])


class _Checker(ast.NodeVisitor):
  """Collects violations; never executes anything."""

  def __init__(self):
    self.violations: list[Violation] = []
    self.module_aliases: set[str] = set()

  def _add(self, node: ast.AST, message: str) -> None:
    self.violations.append(Violation(getattr(node, "lineno", 0), message))

  def visit_Import(self, node: ast.Import) -> None:
    for alias in node.names:
      if not _allowed_module(alias.name):
        self._add(node, f"import {alias.name} is not allowed; use only "
                  f"{', '.join(sorted(ALLOWED_IMPORTS - {'__future__'}))} (public submodules)")
      self.module_aliases.add((alias.asname or alias.name).split(".")[0])
    self.generic_visit(node)

  def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
    module = node.module or ""
    if node.level or not _allowed_module(module):
      shown = "." * node.level + module
      self._add(node, f"from {shown} import ... is not allowed; import only from "
                f"{', '.join(sorted(ALLOWED_IMPORTS - {'__future__'}))}")
    for alias in node.names:
      if alias.name == "*":
        self._add(node, f"from {module} import * is not allowed; import names explicitly")
      elif (alias.name in FORBIDDEN_ATTRIBUTES or alias.name in FORBIDDEN_NAMES
            or alias.name.startswith("_")) and module != "__future__":
        self._add(node, f"importing {alias.name!r} from {module} is not allowed")
      else:
        self.module_aliases.add(alias.asname or alias.name)
    self.generic_visit(node)

  def visit_Name(self, node: ast.Name) -> None:
    if node.id in FORBIDDEN_NAMES:
      self._add(node, f"use of {node.id!r} is not allowed in a candidate; remove it")
    elif _DUNDER.match(node.id) and node.id not in ALLOWED_DUNDER_NAMES:
      self._add(node, f"dunder name {node.id!r} is not allowed; remove it")
    self.generic_visit(node)

  def visit_Attribute(self, node: ast.Attribute) -> None:
    attr = node.attr
    if _DUNDER.match(attr) and attr not in ALLOWED_DUNDER_ATTRIBUTES:
      self._add(node, f"dunder attribute .{attr} is not allowed (interpreter escape hatch); "
                "remove it")
    elif attr in FORBIDDEN_ATTRIBUTES:
      self._add(node, f"attribute .{attr} is not allowed (file, process, callback or "
                "frame access); remove it")
    elif attr in FORBIDDEN_NAMES and attr not in ("io", "code"):
      self._add(node, f"attribute .{attr} is not allowed; remove it")
    elif attr.startswith("_") and _root_name(node) in self.module_aliases:
      self._add(node, f"private module attribute .{attr} is not allowed; use the public API")
    self.generic_visit(node)

  def visit_Call(self, node: ast.Call) -> None:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else None
    if name in _REFLECTION:
      attr = node.args[1] if len(node.args) > 1 else None
      if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
        self._add(node, f"{name}() needs a literal attribute name; write obj.attr instead")
      elif _DUNDER.match(attr.value) or attr.value in FORBIDDEN_ATTRIBUTES:
        self._add(node, f"{name}(..., {attr.value!r}) is not allowed; remove it")
    self.generic_visit(node)

  def visit_Subscript(self, node: ast.Subscript) -> None:
    key = node.slice
    if isinstance(key, ast.Constant) and isinstance(key.value, str) and _DUNDER.match(key.value):
      self._add(node, f"subscript [{key.value!r}] is not allowed (namespace access); "
                "remove it")
    self.generic_visit(node)

  def visit_Constant(self, node: ast.Constant) -> None:
    if isinstance(node.value, str) and _FORMAT_DUNDER.search(node.value):
      self._add(node, "format string reaching a dunder attribute is not allowed; remove it")


def _root_name(node: ast.AST) -> str | None:
  while isinstance(node, ast.Attribute):
    node = node.value
  return node.id if isinstance(node, ast.Name) else None


def check_policy(source: str | ast.Module) -> list[Violation]:
  """Returns the policy violations of a program, in line order (empty: allowed).

  Args:
    source: program text or an already parsed module.

  Raises:
    SyntaxError: if ``source`` is text that does not parse (the ``parse`` stage).
  """
  tree = ast.parse(source) if isinstance(source, str) else source
  checker = _Checker()
  checker.visit(tree)
  return sorted(checker.violations, key=lambda v: v.line)


__all__ = ["ALLOWED_IMPORTS", "FORBIDDEN_ATTRIBUTES", "FORBIDDEN_NAMES", "Violation",
           "check_policy"]
