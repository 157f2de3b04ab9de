"""AST policy for candidate programs (the ``policy`` stage of SPEC §3): refuse by danger.

A candidate is LLM-written and untrusted. Before any of it runs its syntax tree is checked
here, without executing it. The policy is a fast first filter -- the OS jail
(``spark_clrs.isolation``) is the boundary -- so its job is to turn attacks and accidents into
a one-line reason before any process starts, while letting through the ordinary code a
strong model writes. It refuses by *danger*, never by unfamiliarity:

* **imports** only of the offered maths, network and typing modules
  (:data:`spark_clrs.checks.policy_names.OFFERED`), at the top of the program or of a
  function body; through a module only its installed public names minus a reasoned
  deny-list (file I/O, host callbacks, configuration, reflection, compilation objects,
  registries, interceptors, compiled loops whose cost cannot be counted);
* **modules stay modules**: used only as ``module.name``, never bound to another name,
  passed, returned or stored; an alias is bound once, to one module, and never shadowed
  (assignment, parameter, ``except ... as``, ``def``/``class`` name, another import);
* **builtins** except reflection (``getattr``/``setattr``/``vars``/...), dynamic code
  (``eval``/``exec``/``compile``), I/O (``open``/``input``) and the like; ``type(x)``
  only compared or printed (calling or storing it reaches constructors of functions and
  code objects), never with three arguments;
* **attributes**: nothing starting with ``_`` except ``__init__``/``__call__``; nothing
  that reaches frames, code objects, tracebacks, jaxprs or compiled executables; module
  I/O and callback names on anything but the candidate's own ``self``; ``.format`` only
  on a string literal whose fields name no attribute or index;
* **statements**: no attribute assignment except ``self.x = ...`` in the candidate's own
  methods, no ``global``/``nonlocal``, ``match``, metaclasses, ``async``, dunder methods
  other than ``__init__``/``__call__``, string annotations or ``from __future__``.

Every reason names the line, what is refused and why, and what to write instead when
there is an obvious alternative; ``prompts/contract/clrs_processor.md`` states every
class of refusal, so a model is never refused by a rule it was not told.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import re
import string
from collections.abc import Mapping

from spark_clrs.checks import policy_names
from spark_clrs.checks.policy_names import (
  ALLOWED_BUILTINS,
  DENIED_BUILTINS,
  FORBIDDEN_ATTRIBUTES,
  FORBIDDEN_NAMES,
  INTERNAL_ATTRIBUTES,
  MODULE_ONLY_ATTRIBUTES,
  explain,
)

ALLOWED_IMPORTS = frozenset(policy_names.ROOTS)

ALLOWED_DUNDER_ATTRIBUTES = frozenset({"__init__", "__call__"})
_DUNDER = re.compile(r"^__\w+__$")
# A format template field that walks to a private or dunder attribute or key.
_PRIVATE_FIELD = re.compile(r"\{[^{}]*[.\[]\s*_[^{}]*\}")
# Where the result of ``type(x)`` may go: compared, printed, or a class test.
_TYPE_SINKS = frozenset({"print", "str", "repr", "isinstance", "issubclass"})


@dataclasses.dataclass(frozen=True)
class Violation:
  """One policy violation: 1-based ``line`` and a message saying what to change."""

  line: int
  message: str

  def __str__(self) -> str:
    return f"line {self.line}: {self.message}"


def allowed_names() -> Mapping[str, frozenset[str]]:
  """Module path -> the names a candidate may use there (derived from the installed API)."""
  return policy_names.catalogue().allowed


def _short(name: str) -> str:
  """A candidate-chosen identifier, as quoted in a reason (length-capped)."""
  return name if len(name) <= 40 else name[:37] + "..."


def _unsafe_format_field(template: str) -> str | None:
  """The first field of a ``str.format`` template that reads an attribute or index."""
  try:
    parsed = list(string.Formatter().parse(template))
  except ValueError:
    return template
  for _, field, spec, _ in parsed:
    if field and ("." in field or "[" in field):
      return field
    if spec and "{" in spec:
      inner = _unsafe_format_field(spec)
      if inner is not None:
        return inner
  return None


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp,
           ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _bindings(node: ast.AST, nested: bool = False) -> set[str]:
  """Names that ``node``'s own scope binds (with ``nested``, every scope below it too).

  A name a function binds anywhere in its body is local to the whole function: a Load of
  it never reaches a builtin (an unbound local raises instead).
  """
  names: set[str] = set()
  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
    args = node.args
    names.update(a.arg for a in args.posonlyargs + args.args + args.kwonlyargs)
    names.update(a.arg for a in (args.vararg, args.kwarg) if a is not None)
  todo = list(ast.iter_child_nodes(node))
  while todo:
    sub = todo.pop()
    if isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load):
      names.add(sub.id)
    elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(sub.name)
    elif isinstance(sub, ast.ExceptHandler) and sub.name:
      names.add(sub.name)
    elif isinstance(sub, (ast.Import, ast.ImportFrom)):
      names.update((a.asname or a.name).split(".")[0] for a in sub.names)
    if nested or not isinstance(sub, _SCOPES):
      todo.extend(ast.iter_child_nodes(sub))
    elif isinstance(sub, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
      todo.extend(g.iter for g in sub.generators[:1])  # The first iterable is evaluated here.
    elif isinstance(sub, _SCOPES):
      todo.extend(d for d in getattr(sub, "decorator_list", ()))
  return names


class _Checker(ast.NodeVisitor):
  """Collects violations; never executes anything."""

  def __init__(self):
    self.catalogue = policy_names.catalogue()
    self.offered = self.catalogue.allowed
    self.violations: list[Violation] = []
    self.modules: dict[str, str] = {}  # Local alias -> offered module path.
    self.plain_imports: set[str] = set()  # Names bound by imports of non-module names.
    self.parents: dict[int, ast.AST] = {}
    self.self_names: list[str | None] = []  # ``self`` of the enclosing method, if any.
    self.scopes: list[frozenset[str]] = []  # Names bound locally by enclosing functions.
    self.bound: frozenset[str] = frozenset()  # Every name the program binds anywhere.

  def _add(self, node: ast.AST, message: str) -> None:
    self.violations.append(Violation(getattr(node, "lineno", 0), message))

  def run(self, tree: ast.Module) -> None:
    for parent in ast.walk(tree):
      for child in ast.iter_child_nodes(parent):
        self.parents[id(child)] = parent
    self.bound = frozenset(_bindings(tree, nested=True))
    # Imports first, wherever they are, so every alias is known before it is used.
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        if not isinstance(self.parents.get(id(node)), (ast.Module, ast.FunctionDef)):
          self._add(node, "imports go at the top of the program or of a function body, not "
                    "inside if/try/with/for/while or a class (an alias bound conditionally "
                    "cannot be checked); move the import")
        elif isinstance(node, ast.Import):
          self._import(node)
        else:
          self._import_from(node)
    self.visit(tree)

  # ------------------------------------------------------------------------- imports

  def _refused_module(self, path: str) -> str:
    """Why ``path`` (not offered) cannot be imported, with what to do instead."""
    parent, _, last = path.rpartition(".")
    category = self.catalogue.refused.get(parent, {}).get(last)
    if category is not None and category != "module":
      return f"{_short(path)} is refused {explain(category)}"
    return (f"{_short(path)} is not an offered module; import only "
            f"{', '.join(policy_names.ROOTS)} (and their maths submodules)")

  def _bind_alias(self, node: ast.AST, alias: str, path: str) -> None:
    known = self.modules.get(alias)
    if known is not None and known != path:
      self._add(node, f"the name {_short(alias)!r} is bound to two modules ({known} and "
                f"{path}); give each module its own name")
    elif alias in self.plain_imports:
      self._add(node, f"the name {_short(alias)!r} is bound to a module and to an imported "
                "value; give each its own name")
    self.modules[alias] = path

  def _bind_plain(self, node: ast.AST, name: str) -> None:
    if name in self.modules:
      self._add(node, f"the name {_short(name)!r} is bound to a module and to an imported "
                "value; give each its own name")
    self.plain_imports.add(name)

  def _import(self, node: ast.Import) -> None:
    for alias in node.names:
      if alias.name not in self.offered:
        self._add(node, f"import {_short(alias.name)}: {self._refused_module(alias.name)}")
      elif alias.asname:
        self._bind_alias(node, alias.asname, alias.name)
      else:
        root = alias.name.split(".")[0]
        self._bind_alias(node, root, root)

  def _import_from(self, node: ast.ImportFrom) -> None:
    module = node.module or ""
    if module == "__future__":
      self._add(node, "from __future__ import ... is not allowed (postponed annotations are "
                "strings evaluated later); remove it")
      return
    if node.level:
      self._add(node, f"relative import from {'.' * node.level}{_short(module)} is not "
                "allowed; a candidate is one standalone program")
      return
    if module not in self.offered:
      self._add(node, f"from {_short(module)} import ...: {self._refused_module(module)}")
      return
    for alias in node.names:
      local = alias.asname or alias.name
      if alias.name == "*":
        self._add(node, f"from {module} import * is not allowed; import names explicitly")
      elif alias.name not in self.offered[module]:
        self._add(node, self._module_name_refusal(module, alias.name))
      elif f"{module}.{alias.name}" in self.offered:
        self._bind_alias(node, local, f"{module}.{alias.name}")
      else:
        self._bind_plain(node, local)

  def visit_Import(self, node: ast.Import) -> None:
    pass  # Handled in run().

  def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
    pass

  # ---------------------------------------------------------------- names and modules

  def _module_name_refusal(self, base: str, name: str) -> str:
    """Why ``base.name`` is refused: its category, private, or not a public name."""
    category = self.catalogue.refused.get(base, {}).get(name)
    if category == "module":
      return self._refused_module(f"{base}.{name}")
    if category is not None:
      return f"{base}.{_short(name)} is refused {explain(category)}"
    if name.startswith("_"):
      return f"{base}.{_short(name)} is private; use the public API of {base}"
    versions = self.catalogue.versions
    dist = {"haiku": "dm-haiku"}.get(base.split(".")[0], base.split(".")[0])
    installed = f" {dist} {versions[dist]}" if dist in versions else ""
    hint = self._suggest(base, name)
    return (f"{base}.{_short(name)} is not a public name of {base} in the installed"
            f"{installed}{hint}")

  def _suggest(self, base: str, name: str) -> str:
    """``; did you mean X?`` from the same module, or the module that has the name."""
    close = difflib.get_close_matches(name, self.offered[base], n=1, cutoff=0.8)
    if close:
      return f"; did you mean {base}.{close[0]}?"
    elsewhere = [m for m in policy_names.OFFERED if name in self.offered.get(m, ())]
    return f"; it is {elsewhere[0]}.{name}" if elsewhere else ""

  def _module_path(self, node: ast.AST) -> str | None:
    """The offered module an expression denotes (``np``, ``jax.numpy``), else None."""
    if isinstance(node, ast.Name):
      return self.modules.get(node.id)
    if isinstance(node, ast.Attribute):
      base = self._module_path(node.value)
      if (base is not None and node.attr in self.offered[base]
          and f"{base}.{node.attr}" in self.offered):
        return f"{base}.{node.attr}"
    return None

  def _bare_module(self, node: ast.AST, path: str) -> None:
    """A module used other than as ``module.name`` (bound, passed, returned, stored)."""
    parent = self.parents.get(id(node))
    if isinstance(parent, ast.Attribute) and parent.value is node:
      return
    self._add(node, f"module {path} may only be used as {path}.<name>; do not bind, pass "
              "or store a module")

  def _shadows_alias(self, node: ast.AST, name: str, what: str) -> None:
    if name in self.modules:
      self._add(node, f"{what} {_short(name)!r} rebinds the module alias {name!r} "
                f"({self.modules[name]}); use another name")

  def visit_Name(self, node: ast.Name) -> None:
    name = node.id
    if name in self.modules:
      if not isinstance(node.ctx, ast.Load):
        self._shadows_alias(node, name, "assigning")
      else:
        self._bare_module(node, self.modules[name])
    elif name.startswith("__"):
      self._add(node, f"dunder name {_short(name)!r} is not allowed (interpreter internals); "
                "remove it")
    elif not isinstance(node.ctx, ast.Load) or any(name in s for s in self.scopes):
      return  # A local of an enclosing function: never a builtin or a module.
    elif name in FORBIDDEN_NAMES and name not in self.bound:
      self._add(node, f"use of {name!r} is not allowed: it is not an offered module (no "
                "file, process, network or interpreter access); remove it")
    elif name == "type":
      self._type_use(node)
    elif name in DENIED_BUILTINS:
      self._add(node, f"{name}() is refused: {DENIED_BUILTINS[name]}")

  def _type_use(self, node: ast.Name) -> None:
    """``type(x)`` only compared, printed or tested; never called with 3 args or stored."""
    call = self.parents.get(id(node))
    if not (isinstance(call, ast.Call) and call.func is node):
      self._add(node, "type may only be called as type(x), not passed on; use isinstance")
      return
    if len(call.args) != 1 or call.keywords or isinstance(call.args[0], ast.Starred):
      self._add(node, "type(...) with three arguments builds classes at run time; define "
                "the class with a class statement")
      return
    sink = self.parents.get(id(call))
    if isinstance(sink, (ast.Compare, ast.FormattedValue)) or (
        isinstance(sink, ast.Call) and call in sink.args and isinstance(sink.func, ast.Name)
        and sink.func.id in _TYPE_SINKS):
      return
    self._add(node, "type(x) may only be compared or printed (calling or storing it reaches "
              "the constructors of functions and code objects); use isinstance(x, C)")

  def visit_Attribute(self, node: ast.Attribute) -> None:
    attr = node.attr
    base = self._module_path(node.value)
    if not isinstance(node.ctx, ast.Load):
      self._attribute_store(node)
    if base is not None:
      if attr not in self.offered[base]:
        self._add(node, self._module_name_refusal(base, attr))
      elif f"{base}.{attr}" in self.offered:
        self._bare_module(node, f"{base}.{attr}")
      return  # node.value is a module chain, already resolved.
    own_self = bool(self.self_names) and self.self_names[-1] is not None and isinstance(
        node.value, ast.Name) and node.value.id == self.self_names[-1]
    if attr.startswith("_") and attr not in ALLOWED_DUNDER_ATTRIBUTES:
      kind = "dunder" if _DUNDER.match(attr) else "private"
      self._add(node, f"{kind} attribute .{_short(attr)} is not allowed (interpreter or "
                "library internals); use the public API")
    elif attr in INTERNAL_ATTRIBUTES:
      self._add(node, f"attribute .{attr} is refused: it reaches frames, code objects, "
                "tracebacks or compiled internals; remove it")
    elif attr in MODULE_ONLY_ATTRIBUTES and not own_self:
      self._add(node, f"attribute .{attr} is refused: file I/O, host callback or reflection "
                "API; remove it")
    elif attr == "format_map":
      self._add(node, ".format_map is refused (a format string can read attributes); use an "
                "f-string")
    elif attr == "format":
      self._format(node)
    self.generic_visit(node)

  def _format(self, node: ast.Attribute) -> None:
    """``"...".format(...)`` on a literal whose fields read no attribute or index."""
    template = node.value
    if not (isinstance(template, ast.Constant) and isinstance(template.value, str)):
      self._add(node, ".format is allowed only on a string literal (a format string can read "
                "attributes); use an f-string such as f\"layer_{i}\"")
      return
    field = _unsafe_format_field(template.value)
    if field is not None:
      self._add(node, f"format field {{{_short(field)}}} reads an attribute or index; use an "
                "f-string with the value computed first")

  def _attribute_store(self, node: ast.Attribute) -> None:
    """Only ``self.x = ...`` inside the candidate's own methods."""
    own_self = self.self_names[-1] if self.self_names else None
    if (isinstance(node.value, ast.Name) and own_self is not None
        and node.value.id == own_self and not node.attr.startswith("_")):
      return
    self._add(node, f"assigning or deleting attribute .{_short(node.attr)} is not allowed "
              "(only self.<name> inside the program's own methods); use a local variable")

  def visit_Subscript(self, node: ast.Subscript) -> None:
    key = node.slice
    if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value.startswith(
        "__"):
      self._add(node, f"subscript [{_short(key.value)!r}] is not allowed (namespace "
                "access); remove it")
    if not isinstance(node.ctx, ast.Load):
      root = node.value
      while isinstance(root, (ast.Attribute, ast.Subscript)):
        if self._module_path(root) is not None:
          break
        root = root.value
      if self._module_path(root) is not None:
        self._add(node, "writing into a module's data is not allowed; use a local variable")
    self.generic_visit(node)

  def visit_Constant(self, node: ast.Constant) -> None:
    if isinstance(node.value, str) and _PRIVATE_FIELD.search(node.value):
      self._add(node, "a format template reaching a private or dunder attribute is not "
                "allowed; remove it")

  # ------------------------------------------------------------ calls and definitions

  def _annotation(self, node: ast.AST | None) -> None:
    if node is None:
      return
    for sub in ast.walk(node):
      if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
        self._add(sub, "string annotations are not allowed (they are evaluated later with "
                  "real builtins); write the type itself or drop the annotation")
        return

  def _function(self, node: ast.FunctionDef | ast.Lambda) -> None:
    args = node.args
    for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
      if arg is not None:
        self._annotation(arg.annotation)
        self._shadows_alias(arg, arg.arg, "parameter")
        if arg.arg.startswith("__"):
          self._add(arg, f"dunder name {_short(arg.arg)!r} is not allowed; rename it")
    in_class = isinstance(self.parents.get(id(node)), ast.ClassDef)
    if isinstance(node, ast.FunctionDef):
      self._annotation(node.returns)
      self._shadows_alias(node, node.name, "defining")
      if node.name.startswith("__") and node.name not in ALLOWED_DUNDER_ATTRIBUTES:
        self._add(node, f"defining {_short(node.name)} is not allowed (only __init__ and "
                  "__call__ dunder methods); rename it")
    # Decorators, defaults and annotations are evaluated where the function is defined,
    # outside its scope: ``def f(getattr=getattr)`` reaches the real builtin.
    every_arg = args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]
    for outside in (*getattr(node, "decorator_list", ()), *args.defaults,
                    *(d for d in args.kw_defaults if d is not None),
                    *(a.annotation for a in every_arg if a is not None and a.annotation),
                    *([node.returns] if getattr(node, "returns", None) else [])):
      self.visit(outside)
    positional = args.posonlyargs + args.args
    self.scopes.append(frozenset(_bindings(node)))
    decorators = {d.id for d in getattr(node, "decorator_list", ()) if isinstance(d, ast.Name)}
    if in_class and positional and "staticmethod" not in decorators:
      self.self_names.append(positional[0].arg)
    else:
      # A nested function keeps the method's ``self`` only if it does not rebind it.
      outer = self.self_names[-1] if self.self_names else None
      rebinds = outer in {a.arg for a in positional + args.kwonlyargs}
      self.self_names.append(None if rebinds else outer)
    for statement in (node.body if isinstance(node.body, list) else [node.body]):
      self.visit(statement)
    self.self_names.pop()
    self.scopes.pop()

  def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
    self._function(node)

  def visit_Lambda(self, node: ast.Lambda) -> None:
    self._function(node)

  def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
                     ) -> None:
    # The first iterable is evaluated outside the comprehension's scope.
    self.visit(node.generators[0].iter)
    self.scopes.append(frozenset(_bindings(node)))
    for field in ("elt", "key", "value"):
      if hasattr(node, field):
        self.visit(getattr(node, field))
    for i, generator in enumerate(node.generators):
      self.visit(generator.target)
      if i:
        self.visit(generator.iter)
      for condition in generator.ifs:
        self.visit(condition)
    self.scopes.pop()

  visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

  def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
    self._add(node, "async functions are not allowed; a processor is synchronous")

  def visit_ClassDef(self, node: ast.ClassDef) -> None:
    self._shadows_alias(node, node.name, "defining class")
    if node.keywords:
      self._add(node, "class keywords (metaclass=...) are not allowed; subclass hk.Module "
                "plainly")
    self.self_names.append(None)
    self.generic_visit(node)
    self.self_names.pop()

  def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
    if node.name:
      self._shadows_alias(node, node.name, "except ... as")
    self.generic_visit(node)

  def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
    self._annotation(node.annotation)
    self.generic_visit(node)

  def visit_Global(self, node: ast.Global) -> None:
    self._add(node, "global statements are not allowed (no module state); pass values "
              "explicitly")

  def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
    self._add(node, "nonlocal statements are not allowed (no hidden state); return the "
              "value instead")

  def visit_Match(self, node: ast.AST) -> None:
    self._add(node, "match statements are not allowed (class patterns read attributes); "
              "use if/elif")


def check_policy(source: str | ast.Module) -> list[Violation]:
  """Returns the policy violations of a program, in line order (empty: allowed).

  Args:
    source: program text or an already parsed module.

  Raises:
    SyntaxError: if ``source`` is text that does not parse (the ``parse`` stage).
  """
  tree = ast.parse(source) if isinstance(source, str) else source
  checker = _Checker()
  checker.run(tree)
  return sorted(checker.violations, key=lambda v: v.line)


__all__ = ["ALLOWED_BUILTINS", "ALLOWED_IMPORTS", "DENIED_BUILTINS", "FORBIDDEN_ATTRIBUTES",
           "FORBIDDEN_NAMES", "INTERNAL_ATTRIBUTES", "MODULE_ONLY_ATTRIBUTES", "Violation",
           "allowed_names", "check_policy"]
