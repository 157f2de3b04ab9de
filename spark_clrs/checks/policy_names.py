"""Which module names a candidate may use: the installed public API minus what is dangerous.

A hand-written allow-list refuses what its author forgot (``jnp.concat``, ``jnp.isclose``,
``jax.nn.dot_product_attention``, ...), and a model refused by a rule it was never told
cannot fix its program. So the names are *derived*: every public name (no leading
underscore) of each offered module of the installed versions (:data:`OFFERED`), minus a
short deny-list with a reason per entry (:data:`DENY`) and three rules that find
dangerous objects by what they are, not by their name:

* JAX configuration states (``jax.enable_x64``, ``jax.debug_nans``, ...): global configuration;
* JAX primitives (``jax.lax.add_p``): ``def_impl``/``bind`` re-register JAX internals;
* the interpreter's constructors (``types.FunctionType`` re-exported as
  ``dataclasses.FunctionType``, ...): they build functions from code objects.

A name whose value is a module counts only when that module is itself offered.

Deriving needs JAX, Haiku, chex, numpy and optax imported (seconds), which the search's
parent process never does. The catalogue is therefore computed once per set of installed
versions -- in this process when those modules are already imported, else by running this
file as a script in a fresh interpreter -- and kept as JSON in the user's cache
(``$SPARK_CLRS_CACHE_DIR``, else ``$XDG_CACHE_HOME/spark_clrs``, else
``~/.cache/spark_clrs``), keyed by the versions and this file's own text. The jail never
sees the cache writable; the policy is a fast first filter, not the boundary.

The name-level deny-lists the checker applies whatever the receiver live here too: the
refused builtins (each with what to write instead), the attributes that reach frames, code
objects, tracebacks or compiled internals on any object, and the module-level I/O and
callback names refused on anything but the candidate's own ``self``.

This file imports only the standard library, so it runs as a script on its own.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import types
import warnings
from collections.abc import Mapping

# The maths, network and typing modules a candidate may import, submodules included.
OFFERED = (
    "jax", "jax.numpy", "jax.numpy.linalg", "jax.numpy.fft", "jax.nn", "jax.nn.initializers",
    "jax.lax", "jax.random", "jax.tree_util", "jax.tree", "jax.ops", "jax.image", "jax.dtypes",
    "jax.typing", "jax.scipy", "jax.scipy.special", "jax.scipy.linalg",
    "haiku", "haiku.nets", "haiku.initializers", "haiku.pad",
    "chex", "optax",
    "numpy", "numpy.linalg", "numpy.fft", "numpy.random",
    "math", "cmath", "functools", "typing", "dataclasses", "collections", "collections.abc",
    "abc", "enum", "itertools", "operator", "numbers",
)
ROOTS = tuple(dict.fromkeys(m.split(".")[0] for m in OFFERED))
# Installed distributions whose versions decide the catalogue.
DISTRIBUTIONS = ("jax", "jaxlib", "dm-haiku", "chex", "numpy", "optax")

# Why a name is refused (``<name> is refused as <what>``) and what to write instead.
CATEGORIES: dict[str, tuple[str, str | None]] = {
    "io": ("file I/O", "compute from the step's inputs and create weights with hk.get_parameter"),
    "callback": ("a host callback (Python run outside the compiled step)",
                 "compute it with jax.numpy inside the step"),
    "debug": ("debug output through a host callback",
              "use print(...), which runs once while tracing, or remove it"),
    "config": ("global configuration", "remove it; the trainer fixes the configuration"),
    "reflection": ("reflection on interpreter or JAX internals (jaxprs, tracebacks, primitives, "
                   "code objects)", "remove it"),
    "compile": ("a compilation or export object", "call the function directly (jax.jit is fine)"),
    "registry": ("a process-wide registration",
                 "use a tuple, dict or chex.dataclass, which JAX already handles"),
    "intercept": ("an interceptor that changes other modules' behaviour",
                  "make the change in your own module's code"),
    "memory": ("raw memory or foreign code (dlpack, ctypes, FFI, f2py)", "use jax.numpy arrays"),
    "test": ("a testing utility", "use chex.assert_* checks"),
    "host": ("host or process information", "remove it"),
    "loop": ("a compiled loop whose cost (MACs) cannot be counted from one step",
             "use a Python for loop over a fixed range (it is unrolled while tracing)"),
    "dynamic": ("code built from strings", "write the class or function directly"),
    "constructor": ("a constructor of functions, code or modules", "define functions with def"),
    "module": ("a module that is not offered", None),
}

_LOOPS = {n: "loop" for n in ("while_loop", "scan", "fori_loop", "map")}
_IO = {n: "io" for n in ("load", "save", "savez", "savez_compressed", "savetxt", "loadtxt",
                         "genfromtxt", "fromfile", "fromregex", "memmap", "DataSource", "lib",
                         "rec")}
# Module -> name -> category: what the public API offers that a processor must not touch.
DENY: dict[str, dict[str, str]] = {
    "jax": {
        "config": "config", "clear_caches": "config", "disable_jit": "config",
        "checking_leaks": "config", "transfer_guard": "config", "make_user_context": "config",
        "set_mesh": "config",
        "debug": "debug", "experimental": "callback", "pure_callback": "callback",
        "make_array_from_callback": "callback", "effects_barrier": "callback",
        "make_jaxpr": "reflection", "closure_convert": "reflection", "live_arrays": "reflection",
        "ad": "reflection", "core": "reflection", "extend": "reflection",
        "interpreters": "reflection", "api_util": "reflection", "monitoring": "reflection",
        "lib": "reflection", "export": "compile", "stages": "compile", "dlpack": "memory",
        "ffi": "memory", "profiler": "io", "test_util": "test", "distributed": "host",
        "print_environment_info": "host",
    },
    "jax.numpy": {"load": "io", "save": "io", "savez": "io", "fromfile": "io",
                  "from_dlpack": "memory", "printoptions": "config",
                  "set_printoptions": "config"},
    "jax.lax": dict(_LOOPS),
    "jax.tree_util": {"register_dataclass": "registry", "register_pytree_node": "registry",
                      "register_pytree_node_class": "registry",
                      "register_pytree_with_keys": "registry",
                      "register_pytree_with_keys_class": "registry", "register_static": "registry",
                      "default_registry": "registry"},
    "haiku": {**_LOOPS, "dynamic_unroll": "loop", "layer_stack": "loop", "config": "config",
              "mixed_precision": "config", "experimental": "reflection", "to_dot": "reflection",
              "intercept_methods": "intercept", "custom_creator": "intercept",
              "custom_getter": "intercept", "custom_setter": "intercept", "testing": "test"},
    "chex": {"TestCase": "test", "variants": "test", "all_variants": "test",
             "params_product": "test", "set_n_cpu_devices": "config",
             "disable_asserts": "config", "enable_asserts": "config",
             "restrict_backends": "config", "fake_jit": "config", "fake_pmap": "config",
             "fake_pmap_and_jit": "config", "register_dataclass_type_with_jax_tree_util":
             "registry", "chexify": "callback", "with_jittable_assertions": "callback",
             "block_until_chexify_assertions_complete": "callback"},
    "numpy": {**_IO, "ctypeslib": "memory", "f2py": "memory", "testing": "test",
              "test": "test", "errstate": "config", "seterr": "config", "seterrcall": "config",
              "setbufsize": "config", "set_printoptions": "config", "printoptions": "config",
              "show_config": "host", "show_runtime": "host", "info": "host",
              "get_include": "host"},
    "functools": {"update_wrapper": "reflection", "wraps": "reflection"},
    "typing": {"get_type_hints": "dynamic", "ForwardRef": "dynamic"},
    "dataclasses": {"make_dataclass": "dynamic"},
    "operator": {"attrgetter": "reflection", "itemgetter": "reflection",
                 "methodcaller": "reflection"},
    "enum": {"global_enum": "reflection"},
}

# Builtins refused, with what to write instead; every other public builtin is allowed.
DENIED_BUILTINS: dict[str, str] = {
    "open": "file I/O; a processor computes from its inputs (weights: hk.get_parameter)",
    "input": "console I/O; remove it",
    "eval": "dynamic code; write the code directly",
    "exec": "dynamic code; write the code directly",
    "compile": "dynamic code; write the code directly",
    "getattr": "reflection; write obj.name with the attribute spelled out",
    "setattr": "reflection; assign self.name = value inside your own methods",
    "delattr": "reflection; remove it",
    "hasattr": "reflection; use isinstance(...) or pass a flag",
    "vars": "reflection; refer to names directly",
    "dir": "reflection; refer to names directly",
    "globals": "reflection; refer to names directly",
    "locals": "reflection; refer to names directly",
    "breakpoint": "interactive debugging; remove it",
    "help": "interactive help; remove it",
    "memoryview": "raw memory; use jax.numpy arrays",
    "exit": "ends the process; return from __call__ instead",
    "quit": "ends the process; return from __call__ instead",
    "copyright": "host information; remove it",
    "credits": "host information; remove it",
    "license": "host information (reads files); remove it",
    "aiter": "async iteration; a processor is synchronous",
    "anext": "async iteration; a processor is synchronous",
}
ALLOWED_BUILTINS = frozenset(n for n in dir(builtins)
                             if not n.startswith("_") and n not in DENIED_BUILTINS)

# Modules that are never offered, named so a bare use reads better than "undefined".
FORBIDDEN_NAMES = frozenset({
    "os", "sys", "subprocess", "socket", "pathlib", "importlib", "builtins", "shutil",
    "ctypes", "pickle", "marshal", "io", "tempfile", "threading", "multiprocessing",
    "signal", "resource", "inspect", "gc", "code", "runpy", "urllib", "http", "requests",
    "sqlite3", "spark_clrs", "processors", "clrs", "types",
})

# Attributes refused on any object: they reach frames, code objects, tracebacks, jaxprs or
# compiled executables (JAX arrays and jitted functions expose some of them), from which a
# function with the real builtins can be rebuilt.
INTERNAL_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "f_globals",
    "f_locals", "f_builtins", "f_back", "f_code", "f_trace", "tb_frame", "tb_next",
    "co_code", "co_consts", "co_names", "co_varnames", "co_filename", "co_name",
    "co_qualname", "co_lines", "co_positions", "func_globals", "func_code", "func_closure",
    "cell_contents", "traceback", "raw_frames", "as_python_traceback", "get_traceback",
    "traceback_from_frames", "code_addr2line", "code_addr2location", "source_info", "jaxpr",
    "jaxprs", "lojax", "eqns", "runtime_executable", "compiler_ir", "mro",
})
# Module-level I/O, callback and reflection names, refused on anything but the candidate's
# own ``self`` (a module reached as another object's attribute must not reopen them).
MODULE_ONLY_ATTRIBUTES = frozenset({
    "load", "loads", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt",
    "fromfile", "tofile", "dump", "dumps", "memmap", "DataSource", "ctypeslib", "ctypes",
    "f2py", "pure_callback", "io_callback", "host_callback", "debug_callback",
    "get_type_hints", "ForwardRef", "attrgetter", "itemgetter", "methodcaller",
    "update_wrapper", "wraps",
})
# Kept for callers that list every attribute name refused without looking at the receiver.
FORBIDDEN_ATTRIBUTES = INTERNAL_ATTRIBUTES | MODULE_ONLY_ATTRIBUTES | {"format_map"}

CACHE_ENV = "SPARK_CLRS_CACHE_DIR"
_DERIVE_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True)
class Catalogue:
  """The derived allow-list.

  Attributes:
    versions: installed version of each of :data:`DISTRIBUTIONS` it was derived from.
    allowed: module path -> the names a candidate may use (offered submodules included).
    refused: module path -> refused public name -> category key of :data:`CATEGORIES`.
  """

  versions: Mapping[str, str]
  allowed: Mapping[str, frozenset[str]]
  refused: Mapping[str, Mapping[str, str]]

  def to_json(self) -> dict:
    return {"versions": dict(self.versions),
            "allowed": {m: sorted(n) for m, n in self.allowed.items()},
            "refused": {m: dict(sorted(r.items())) for m, r in self.refused.items()}}

  @classmethod
  def from_json(cls, data: Mapping) -> Catalogue:
    return cls(versions=dict(data["versions"]),
               allowed={m: frozenset(n) for m, n in data["allowed"].items()},
               refused={m: dict(r) for m, r in data["refused"].items()})


def _versions() -> dict[str, str]:
  found = {}
  for dist in DISTRIBUTIONS:
    try:
      found[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      found[dist] = "missing"
  return found


def _rule(value: object) -> str | None:
  """The category of a dangerous object found by what it is, not by its name."""
  kind = type(value)
  if kind.__module__ == "jax._src.config" or getattr(value, "__module__", "") == "jax._src.config":
    return "config"
  if any(k.__name__ == "Primitive" for k in kind.__mro__):
    return "reflection"
  constructors = (types.FunctionType, types.CodeType, types.ModuleType, types.MethodType,
                  types.CellType, types.FrameType, types.TracebackType, types.GeneratorType,
                  types.CoroutineType, types.AsyncGeneratorType)
  if any(value is c for c in constructors):
    return "constructor"
  return None


def derive() -> Catalogue:
  """Computes the catalogue from the installed modules (imports all of :data:`OFFERED`)."""
  allowed: dict[str, frozenset[str]] = {}
  refused: dict[str, dict[str, str]] = {}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for path in OFFERED:
      module = importlib.import_module(path)
      deny = DENY.get(path, {})
      ok, bad = set(), {}
      for name in dir(module):
        if name.startswith("_"):
          continue
        try:
          value = getattr(module, name)
        except Exception:  # A deprecated name that raises on access is not offered.
          continue
        if isinstance(value, types.ModuleType):
          if f"{path}.{name}" in OFFERED:
            ok.add(name)
          else:
            bad[name] = deny.get(name, "module")
          continue
        category = deny.get(name) or _rule(value)
        if category is None:
          ok.add(name)
        else:
          bad[name] = category
      allowed[path] = frozenset(ok)
      refused[path] = bad
  return Catalogue(_versions(), allowed, refused)


def _cache_dir() -> pathlib.Path:
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "spark_clrs"


def cache_key(versions: Mapping[str, str] | None = None) -> str:
  """Hash of the installed versions, the Python version and this file's text."""
  text = json.dumps({"versions": dict(versions or _versions()),
                     "python": sys.version_info[:3],
                     "source": hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()},
                    sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:20]


def _derive_in_subprocess() -> Catalogue:
  """Runs this file in a fresh interpreter so the calling process never imports JAX."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env,
                        timeout=_DERIVE_TIMEOUT_S, check=False)
  if done.returncode != 0:
    tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"could not derive the policy's allow-list from the installed "
                       f"modules: {tail[0]}")
  return Catalogue.from_json(json.loads(done.stdout))


def _write_cache(path: pathlib.Path, catalogue: Catalogue) -> None:
  """Best effort: an unwritable cache only means deriving again next time."""
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False,
                                     prefix=".policy_names") as f:
      json.dump(catalogue.to_json(), f)
    os.replace(f.name, path)
  except OSError:
    pass


@functools.lru_cache(maxsize=1)
def catalogue() -> Catalogue:
  """The catalogue of the installed versions (cached on disk and in this process)."""
  versions = _versions()
  path = _cache_dir() / f"policy_names-{cache_key(versions)}.json"
  try:
    return Catalogue.from_json(json.loads(path.read_text()))
  except (OSError, ValueError, KeyError, TypeError):
    pass
  if all(root in sys.modules for root in ("jax", "haiku", "chex", "numpy", "optax")):
    found = derive()
  else:
    found = _derive_in_subprocess()
  _write_cache(path, found)
  return found


def explain(category: str) -> str:
  """``as <what it is>; <what to write instead>``: the tail of a refusal's reason."""
  what, instead = CATEGORIES[category]
  return f"as {what}; {instead}" if instead else f"as {what}"


if __name__ == "__main__":
  json.dump(derive().to_json(), sys.stdout)
