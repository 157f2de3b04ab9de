"""AST allow-list for candidate programs (the ``policy`` stage of SPEC §3).

A candidate is LLM-written and untrusted. Before any of it runs its syntax tree is checked
here, without executing it. The policy is an ALLOW-list wherever it can be:

* imports only of the modules in :data:`ALLOWED`, and through each module (whatever alias
  or ``from`` import reaches it) only the names listed for it: maths, array, NN and
  typing functions; no file, network, process, callback, configuration or introspection
  API of any library (``np.load``, ``jnp.save``, ``jax.config``, ``jax.pure_callback``,
  ``jax.debug``, ``np.lib``, ``np.ctypeslib``, ...) is on a list;
* a module may only be used as ``module.name``: never bound to another name, passed,
  returned or stored (so ``n = np; n.load`` or ``f(np)`` cannot launder it);
* builtins only from :data:`ALLOWED_BUILTINS` (no ``getattr``/``setattr``/``vars``/
  ``globals``/``dir``/``open``/``eval``/``__import__``...), ``type()`` with one argument;
* no attribute that starts with ``_`` on anything (so no dunder walk, no private API),
  except ``__init__``/``__call__``; no ``.format``/``.format_map`` (format strings walk
  attributes); no attribute names that reach files or frames on any object;
* no attribute assignment except ``self.x = ...`` inside the candidate's own methods; no
  ``global``/``nonlocal``, no ``match`` (class patterns read attributes), no metaclasses,
  no ``async``, no dunder methods other than ``__init__``/``__call__``;
* no string annotations and no ``from __future__ import ...`` (string annotations are
  evaluated later by ``typing``/``dataclasses`` with real builtins);
* ``lax.while_loop``/``scan``/``fori_loop`` and Haiku's loops are not on the lists either:
  a processor step's MACs must be countable from its export (use a Python loop).

The jail (``spark_clrs.isolation.sandbox``) is the security boundary; this stage turns attacks and
accidents into a one-line reason before any process starts.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import re


def _names(text: str) -> frozenset[str]:
  return frozenset(text.split())


_MATH = _names("""
    sqrt log exp pi e inf nan tau ceil floor prod isqrt log2 log10 log1p expm1 sin cos tan
    tanh sinh cosh asin acos atan atan2 fabs pow hypot comb factorial gcd isfinite isnan
    isinf copysign erf erfc gamma lgamma fsum trunc degrees radians""")

_JNP = _names("""
    abs absolute add subtract multiply divide true_divide floor_divide mod remainder power
    float_power square sqrt cbrt exp exp2 expm1 log log1p log2 log10 logaddexp sin cos tan
    arcsin arccos arctan arctan2 sinh cosh tanh arcsinh arccosh arctanh sign floor ceil
    round rint clip maximum minimum fmax fmin reciprocal negative positive where select
    isnan isinf isfinite nan_to_num logical_and logical_or logical_not logical_xor equal
    not_equal less less_equal greater greater_equal all any sum mean max min prod std var
    median argmax argmin amax amin cumsum cumprod average nanmean nansum nanmax nanmin
    linalg reshape ravel transpose swapaxes moveaxis expand_dims squeeze concatenate stack
    hstack vstack split tile repeat broadcast_to broadcast_arrays pad flip roll take
    take_along_axis einsum matmul dot tensordot inner outer trace diagonal diag eye
    identity tril triu zeros ones full zeros_like ones_like full_like arange linspace
    array asarray astype shape ndim size sort argsort top_k float32 float16 bfloat16
    float64 int32 int64 int8 uint8 uint32 bool_ complex64 dtype finfo iinfo inf nan pi e
    newaxis ndarray heaviside sinc""")

_NUMPY = _names("""
    float32 float16 float64 int32 int64 int8 uint8 uint32 bool_ sqrt log exp pi e inf nan
    prod zeros ones full eye arange linspace array asarray sum mean max min maximum minimum
    abs clip where concatenate stack reshape ones_like zeros_like finfo iinfo isfinite isnan
    ndarray dtype sin cos tanh floor ceil round log1p expm1 power square""")

# Module -> the names a candidate may reach in it. A name N of module M is itself a module
# when "M.N" is a key (e.g. jax -> numpy, jax.numpy -> linalg).
ALLOWED: dict[str, frozenset[str]] = {
    "jax": _names("""numpy nn lax random tree_util tree scipy jit vmap grad value_and_grad
        checkpoint remat named_call ShapeDtypeStruct Array"""),
    "jax.numpy": _JNP,
    "jax.numpy.linalg": _names("norm"),
    "jax.nn": _names("""relu relu6 gelu silu swish elu selu celu leaky_relu softplus sigmoid
        log_sigmoid hard_tanh hard_sigmoid hard_silu hard_swish glu tanh softmax log_softmax
        logsumexp one_hot standardize squareplus mish soft_sign"""),
    "jax.lax": _names("""cond switch select stop_gradient dot_general dot batch_matmul
        conv_general_dilated rsqrt erf tanh logistic exp log max min abs sqrt pow
        integer_pow reduce_max reduce_min reduce_sum top_k sort cumsum cummax cumprod
        broadcast broadcast_in_dim reshape transpose concatenate pad slice dynamic_slice
        dynamic_update_slice index_in_dim expand_dims squeeze clamp full full_like iota
        convert_element_type square sign floor ceil round neg add sub mul div rem eq ne lt
        le gt ge associative_scan"""),
    "jax.random": _names("""PRNGKey key split fold_in normal uniform bernoulli
        truncated_normal categorical permutation"""),
    "jax.tree_util": _names("tree_map tree_leaves tree_structure tree_flatten tree_unflatten"),
    "jax.tree": _names("map leaves structure flatten unflatten reduce"),
    "jax.scipy": _names("special"),
    "jax.scipy.special": _names("logsumexp erf erfc expit logit gammaln xlogy"),
    "haiku": _names("""Module Linear LayerNorm RMSNorm GroupNorm Sequential MultiHeadAttention
        Conv1D Conv2D Bias Embed GRU LSTM nets initializers get_parameter next_rng_key
        maybe_next_rng_key dropout remat running_init"""),
    "haiku.nets": _names("MLP"),
    "haiku.initializers": _names("""Constant RandomNormal RandomUniform TruncatedNormal
        VarianceScaling Orthogonal UniformScaling Identity"""),
    "numpy": _NUMPY,
    "chex": _names("""Array ArrayTree PRNGKey Numeric Scalar Shape assert_shape assert_rank
        assert_type assert_equal_shape assert_tree_all_finite assert_axis_dimension
        assert_scalar_positive assert_equal dataclass"""),
    "math": _MATH,
    "cmath": _names("sqrt exp log pi e phase polar rect"),
    "functools": _names("partial reduce lru_cache cache cached_property"),
    "typing": _names("""Any Optional Union Callable Sequence Mapping Tuple List Dict Iterable
        Iterator NamedTuple TypeVar Generic cast Protocol ClassVar Final overload"""),
    "dataclasses": _names("dataclass field replace fields asdict astuple"),
    "collections": _names("abc OrderedDict defaultdict deque Counter"),
    "collections.abc": _names("""Callable Sequence Mapping Iterable Iterator MutableMapping
        MutableSequence Set"""),
    "abc": _names("ABC abstractmethod"),
    "enum": _names("Enum IntEnum auto"),
    "itertools": _names("""product combinations permutations chain accumulate islice starmap
        zip_longest repeat pairwise"""),
    "operator": _names("""add sub mul truediv floordiv mod pow neg pos abs matmul eq ne lt le
        gt ge and_ or_ not_"""),
    "numbers": _names("Number Real Integral"),
}
ALLOWED_IMPORTS = frozenset(m.split(".")[0] for m in ALLOWED)

# Builtins a candidate may use; every other builtin (getattr, vars, open, eval, ...) is refused.
ALLOWED_BUILTINS = _names("""
    abs all any bool complex dict divmod enumerate filter float frozenset int isinstance
    issubclass iter len list map max min next object pow print property range repr reversed
    round set slice sorted staticmethod classmethod str sum super tuple type zip callable
    ArithmeticError AssertionError AttributeError Exception IndexError KeyError LookupError
    NotImplementedError OverflowError RuntimeError StopIteration TypeError ValueError
    ZeroDivisionError NotImplemented Ellipsis True False None""")
_BUILTIN_NAMES = frozenset(dir(builtins))

# Module names that are clearly not for candidates (a clearer message than "undefined").
FORBIDDEN_NAMES = frozenset({
    "os", "sys", "subprocess", "socket", "pathlib", "importlib", "builtins", "shutil",
    "ctypes", "pickle", "marshal", "io", "tempfile", "threading", "multiprocessing",
    "signal", "resource", "inspect", "gc", "code", "runpy", "urllib", "http", "requests",
    "sqlite3", "spark_clrs", "processors", "clrs",
})

# Attribute names refused on ANY object (arrays and other values included): file I/O,
# host callbacks, configuration, frames and format strings (which walk attributes).
FORBIDDEN_ATTRIBUTES = frozenset({
    "load", "loads", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt",
    "fromfile", "tofile", "dump", "dumps", "memmap", "ctypeslib", "ctypes", "f2py", "lib",
    "DataSource", "io_callback", "pure_callback", "host_callback", "callback",
    "debug_callback", "debug", "config", "distributed", "profiler", "compilation_cache",
    "system", "popen", "get_type_hints", "ForwardRef", "format", "format_map", "mro",
    "gi_frame", "gi_code", "cr_frame", "ag_frame", "f_globals", "f_locals", "f_builtins",
    "f_back", "tb_frame", "tb_next", "co_code", "func_globals", "attrgetter", "itemgetter",
    "methodcaller", "update_wrapper", "wraps", "frombuffer", "fromstring",
})

ALLOWED_DUNDER_ATTRIBUTES = frozenset({"__init__", "__call__"})
_DUNDER = re.compile(r"^__\w+__$")
_FORMAT_DUNDER = re.compile(r"\{[^{}]*__\w+__[^{}]*\}")
_LOOP_HINT = ("lax.while_loop/scan/fori_loop and Haiku loops are not allowed: a processor "
              "step's MACs must be countable; use a Python loop")
_LOOPS = frozenset({"while_loop", "scan", "fori_loop", "map"})


@dataclasses.dataclass(frozen=True)
class Violation:
  """One policy violation: 1-based ``line`` and a message saying what to change."""

  line: int
  message: str

  def __str__(self) -> str:
    return f"line {self.line}: {self.message}"


def _short(name: str) -> str:
  """A candidate-chosen identifier, as quoted in a reason (length-capped)."""
  return name if len(name) <= 40 else name[:37] + "..."


class _Checker(ast.NodeVisitor):
  """Collects violations; never executes anything."""

  def __init__(self):
    self.violations: list[Violation] = []
    self.modules: dict[str, str] = {}  # Local alias -> allowed module path.
    self.parents: dict[int, ast.AST] = {}
    self.self_names: list[str | None] = []  # ``self`` of the enclosing method, if any.
    self.class_depth = 0

  def _add(self, node: ast.AST, message: str) -> None:
    self.violations.append(Violation(getattr(node, "lineno", 0), message))

  def run(self, tree: ast.Module) -> None:
    for parent in ast.walk(tree):
      for child in ast.iter_child_nodes(parent):
        self.parents[id(child)] = parent
    # Imports first, wherever they are, so every alias is known before it is used.
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        self._import(node)
      elif isinstance(node, ast.ImportFrom):
        self._import_from(node)
    self.visit(tree)

  # ------------------------------------------------------------------------- imports

  def _import(self, node: ast.Import) -> None:
    for alias in node.names:
      if alias.name not in ALLOWED:
        self._add(node, f"import {_short(alias.name)} is not allowed; use only "
                  f"{', '.join(sorted(ALLOWED_IMPORTS))} (and their listed submodules)")
        continue
      if alias.asname:
        self.modules[alias.asname] = alias.name
      else:
        self.modules[alias.name.split(".")[0]] = alias.name.split(".")[0]

  def _import_from(self, node: ast.ImportFrom) -> None:
    module = node.module or ""
    if module == "__future__":
      self._add(node, "from __future__ import ... is not allowed (postponed annotations are "
                "strings evaluated later); remove it")
      return
    if node.level or module not in ALLOWED:
      shown = "." * node.level + module
      self._add(node, f"from {_short(shown)} import ... is not allowed; import only from "
                f"{', '.join(sorted(ALLOWED_IMPORTS))} (and their listed submodules)")
      return
    for alias in node.names:
      if alias.name == "*":
        self._add(node, f"from {module} import * is not allowed; import names explicitly")
      elif alias.name not in ALLOWED[module]:
        self._add(node, f"{module}.{_short(alias.name)} is not on the candidate allow-list "
                  f"({self._why(alias.name)})")
      elif f"{module}.{alias.name}" in ALLOWED:
        self.modules[alias.asname or alias.name] = f"{module}.{alias.name}"

  def visit_Import(self, node: ast.Import) -> None:
    pass  # Handled in run().

  def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
    pass

  # ---------------------------------------------------------------- names and modules

  @staticmethod
  def _why(name: str) -> str:
    if name in _LOOPS:
      return _LOOP_HINT
    if name in FORBIDDEN_ATTRIBUTES:
      return "file, callback, configuration or reflection API"
    if name.startswith("_"):
      return "private"
    return "see spark_clrs.checks.policy.ALLOWED for what each module offers"

  def _module_path(self, node: ast.AST) -> str | None:
    """The allowed module an expression denotes (``np``, ``jax.numpy``), else None."""
    if isinstance(node, ast.Name):
      return self.modules.get(node.id)
    if isinstance(node, ast.Attribute):
      base = self._module_path(node.value)
      if base is not None and node.attr in ALLOWED[base] and f"{base}.{node.attr}" in ALLOWED:
        return f"{base}.{node.attr}"
    return None

  def _bare_module(self, node: ast.AST, path: str) -> None:
    """A module used other than as ``module.name`` (bound, passed, returned, stored)."""
    parent = self.parents.get(id(node))
    if isinstance(parent, ast.Attribute) and parent.value is node:
      return
    self._add(node, f"module {path} may only be used as {path}.<name>; do not bind, pass "
              "or store a module")

  def visit_Name(self, node: ast.Name) -> None:
    name = node.id
    if name in self.modules:
      if not isinstance(node.ctx, ast.Load):
        self._add(node, f"rebinding the module alias {name!r} is not allowed; use another "
                  "name")
      else:
        self._bare_module(node, self.modules[name])
    elif _DUNDER.match(name) or name.startswith("__"):
      self._add(node, f"dunder name {_short(name)!r} is not allowed; remove it")
    elif name in FORBIDDEN_NAMES:
      self._add(node, f"use of {name!r} is not allowed in a candidate; remove it")
    elif name == "type" and not self._called_with_one_argument(node):
      self._add(node, "type may only be called as type(x); passed on, it builds classes "
                "at run time")
    elif (isinstance(node.ctx, ast.Load) and name in _BUILTIN_NAMES
          and name not in ALLOWED_BUILTINS):
      self._add(node, f"use of {name!r} is not allowed in a candidate (builtins are "
                "allow-listed: no reflection, I/O or dynamic code); remove it")

  def _called_with_one_argument(self, node: ast.Name) -> bool:
    parent = self.parents.get(id(node))
    return (isinstance(parent, ast.Call) and parent.func is node and len(parent.args) == 1
            and not parent.keywords and not isinstance(parent.args[0], ast.Starred))

  def visit_Attribute(self, node: ast.Attribute) -> None:
    attr = node.attr
    base = self._module_path(node.value)
    if not isinstance(node.ctx, ast.Load):
      self._attribute_store(node)
    if base is not None:
      if attr not in ALLOWED[base]:
        self._add(node, f"{base}.{_short(attr)} is not on the candidate allow-list "
                  f"({self._why(attr)})")
      elif f"{base}.{attr}" in ALLOWED:
        self._bare_module(node, f"{base}.{attr}")
      return  # node.value is a module chain, already resolved.
    if attr.startswith("_") and attr not in ALLOWED_DUNDER_ATTRIBUTES:
      kind = "dunder" if _DUNDER.match(attr) else "private"
      self._add(node, f"{kind} attribute .{_short(attr)} is not allowed (interpreter or "
                "library internals); remove it")
    elif attr in FORBIDDEN_ATTRIBUTES:
      self._add(node, f"attribute .{attr} is not allowed (file, callback, configuration, "
                "format or frame access); remove it")
    self.generic_visit(node)

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
    if isinstance(node.value, str) and _FORMAT_DUNDER.search(node.value):
      self._add(node, "format string reaching a dunder attribute is not allowed; remove it")

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
        if arg.arg.startswith("__"):
          self._add(arg, f"dunder name {_short(arg.arg)!r} is not allowed; rename it")
    in_class = isinstance(self.parents.get(id(node)), ast.ClassDef)
    if isinstance(node, ast.FunctionDef):
      self._annotation(node.returns)
      if node.name.startswith("__") and node.name not in ALLOWED_DUNDER_ATTRIBUTES:
        self._add(node, f"defining {_short(node.name)} is not allowed (only __init__ and "
                  "__call__ dunder methods); rename it")
    positional = args.posonlyargs + args.args
    decorators = {d.id for d in getattr(node, "decorator_list", ()) if isinstance(d, ast.Name)}
    if in_class and positional and "staticmethod" not in decorators:
      self.self_names.append(positional[0].arg)
    else:
      # A nested function keeps the method's ``self`` only if it does not rebind it.
      outer = self.self_names[-1] if self.self_names else None
      rebinds = outer in {a.arg for a in positional + args.kwonlyargs}
      self.self_names.append(None if rebinds else outer)
    self.generic_visit(node)
    self.self_names.pop()

  def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
    self._function(node)

  def visit_Lambda(self, node: ast.Lambda) -> None:
    self._function(node)

  def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
    self._add(node, "async functions are not allowed; a processor is synchronous")

  def visit_ClassDef(self, node: ast.ClassDef) -> None:
    if node.keywords:
      self._add(node, "class keywords (metaclass=...) are not allowed; subclass hk.Module "
                "plainly")
    self.self_names.append(None)
    self.generic_visit(node)
    self.self_names.pop()

  def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
    self._annotation(node.annotation)
    self.generic_visit(node)

  def visit_Global(self, node: ast.Global) -> None:
    self._add(node, "global statements are not allowed (no module state); pass values "
              "explicitly")

  def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
    self._add(node, "nonlocal statements are not allowed (no hidden state); pass values "
              "explicitly")

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


__all__ = ["ALLOWED", "ALLOWED_BUILTINS", "ALLOWED_IMPORTS", "FORBIDDEN_ATTRIBUTES",
           "FORBIDDEN_NAMES", "Violation", "check_policy"]
