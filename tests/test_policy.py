"""Tests for ``spark_clrs.checks.policy``: the AST allow-list never runs the code it judges."""

import textwrap

from absl.testing import absltest, parameterized

import processors
from spark_clrs.checks import policy
from spark_clrs.llm import offline_moves
from spark_clrs.programs import regions

ALLOWED = textwrap.dedent('''
    import collections
    import dataclasses
    import functools
    import math
    from collections.abc import Callable
    from typing import Any

    import chex
    import haiku as hk
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import nn


    @dataclasses.dataclass(frozen=True)
    class Widths:
      hidden: int = 4


    class P(hk.Module):

      def __init__(self, name: str = "p_clrs_processor"):
        super().__init__(name=name)
        self.width = Widths().hidden
        self.layers = collections.OrderedDict()

      @property
      def inf_bias(self) -> bool:
        return False

      def __call__(self, x: chex.Array, act: Callable[..., Any] = nn.relu) -> Any:
        fn = functools.partial(jnp.sum, axis=-1)
        def inner(y):
          self.last = y
          return act(y)
        print(f"{self.module_name}: {x.shape} {type(x)}")
        w = hk.get_parameter("w", (4,), init=hk.initializers.Constant(0.0))
        x = jax.lax.stop_gradient(x) * w
        return fn(inner(x)) * math.sqrt(2.0) + np.float32(0) + jax.scipy.special.logsumexp(x)
    ''')


class PolicyTest(parameterized.TestCase):

  @parameterized.parameters(*processors.seed_names())
  def test_seeds_are_allowed(self, seed):
    self.assertEqual(policy.check_policy(processors.resolve(seed).read_text()), [])

  def test_ordinary_numerics_are_allowed(self):
    self.assertEqual(policy.check_policy(ALLOWED), [])

  @parameterized.named_parameters(
      ("import_os", "import os", "import os"),
      ("import_os_path", "import os.path as p", "import os.path"),
      ("from_subprocess", "from subprocess import run", "from subprocess"),
      ("private_submodule", "import jax._src.core", "import jax._src.core"),
      ("relative_import", "from . import x", "from ."),
      ("star_import", "from jax import *", "import *"),
      ("our_package", "import spark_clrs.checks", "import spark_clrs"),
      ("our_processors", "from processors import load", "from processors"),
      ("clrs", "import clrs", "import clrs"),
      ("future_annotations", "from __future__ import annotations", "__future__"),
      ("dunder_import", "m = __import__('os')", "'__import__'"),
      ("open", "f = open('/etc/passwd')", "'open'"),
      ("eval", "x = eval('1')", "'eval'"),
      ("exec", "exec('x = 1')", "'exec'"),
      ("compile", "c = compile('1', 'f', 'eval')", "'compile'"),
      ("globals", "g = globals()", "'globals'"),
      ("locals", "g = locals()", "'locals'"),
      ("vars", "g = vars()", "'vars'"),
      ("dir", "g = dir()", "'dir'"),
      ("breakpoint", "breakpoint()", "'breakpoint'"),
      ("input", "x = input()", "'input'"),
      ("getattr_literal", "w = getattr(int, 'real')", "'getattr'"),
      ("hasattr", "w = hasattr(int, 'real')", "'hasattr'"),
      ("setattr", "class A:\n  pass\nsetattr(A, 'x', 1)", "'setattr'"),
      ("delattr", "class A:\n  x = 1\ndelattr(A, 'x')", "'delattr'"),
      ("type_three_args", "A = type('A', (), {})", "type may only be called as type(x)"),
      ("type_passed_on", "import functools\nmk = functools.partial(type, 'A', ())",
       "type may only be called as type(x)"),
      ("type_starred", "A = type(*args)", "type may only be called as type(x)"),
      ("builtins_name", "b = __builtins__", "'__builtins__'"),
      ("loader_name", "b = __loader__", "'__loader__'"),
      ("subclasses", "c = ().__class__.__bases__[0].__subclasses__()", ".__class__"),
      ("func_globals", "def f(): pass\ng = f.__globals__", ".__globals__"),
      ("dict_attr", "import jax\nb = jax.numpy.__dict__", "jax.numpy.__dict__"),
      ("private_attr_any_object", "x = (1).__abs__\ny = x._foo", "._foo"),
      ("private_self_attr", "class A:\n  def f(self):\n    return self._submodules", "._submodules"),
      ("format_escape", "s = '{0.__class__}'.format(1)", "format string"),
      ("format_runtime", "s = ('{0._' + '_class__}').format(1)", ".format"),
      ("format_map", "s = '{x}'.format_map({})", ".format_map"),
      ("dunder_subscript", "d = {}\nb = d['__builtins__']", "['__builtins__']"),
      ("frame_walk", "g = (i for i in ()).gi_frame.f_globals", ".gi_frame"),
      ("numpy_load", "import numpy as np\nw = np.load('w.npy')", "numpy.load"),
      ("numpy_alias_load", "import numpy as n\nw = n.load('w.npy')", "numpy.load"),
      ("numpy_fromfile", "import numpy\nw = numpy.fromfile('/etc/passwd')", "numpy.fromfile"),
      ("numpy_loadtxt", "import numpy as np\nw = np.loadtxt('x')", "numpy.loadtxt"),
      ("numpy_genfromtxt", "import numpy as np\nw = np.genfromtxt('x')", "numpy.genfromtxt"),
      ("numpy_memmap", "import numpy as np\nw = np.memmap('x')", "numpy.memmap"),
      ("numpy_datasource", "import numpy as np\nw = np.DataSource()", "numpy.DataSource"),
      ("numpy_lib_npyio", "import numpy as np\nw = np.lib.npyio", "numpy.lib"),
      ("numpy_ctypeslib", "import numpy as np\nw = np.ctypeslib", "numpy.ctypeslib"),
      ("numpy_tofile", "import numpy as np\nnp.zeros(2).tofile('x')", ".tofile"),
      ("ndarray_tofile", "import numpy as np\nnp.ndarray.tofile(np.zeros(2), 'x')", ".tofile"),
      ("numpy_dump", "import numpy as np\nnp.zeros(2).dump('x')", ".dump"),
      ("jnp_load", "import jax.numpy as jnp\nw = jnp.load('x')", "jax.numpy.load"),
      ("from_numpy_load", "from numpy import load", "numpy.load"),
      ("from_numpy_lib", "from numpy import lib", "numpy.lib"),
      ("jax_config", "import jax\njax.config.update('jax_enable_x64', True)", "jax.config"),
      ("from_jax_config", "from jax import config", "jax.config"),
      ("pure_callback", "import jax\njax.pure_callback(print, None)", "jax.pure_callback"),
      ("debug_callback", "import jax\njax.debug.callback(print)", "jax.debug"),
      ("io_callback", "from jax.experimental import io_callback", "jax.experimental"),
      ("while_loop", "import jax\nx = jax.lax.while_loop(f, g, 0)", "MACs must be"),
      ("scan", "import haiku as hk\nx = hk.scan(f, 0, None)", "MACs must be"),
      ("private_module_attr", "import jax\nc = jax._src", "jax._src"),
      ("type_hints", "import typing\ntyping.get_type_hints(int)", "typing.get_type_hints"),
      ("operator_attrgetter", "import operator\nf = operator.attrgetter('x')",
       "operator.attrgetter"),
      ("operator_itemgetter", "from operator import itemgetter", "operator.itemgetter"),
      ("operator_methodcaller", "import operator as o\no.methodcaller('x')",
       "operator.methodcaller"),
      ("functools_wraps", "import functools\nfunctools.update_wrapper(f, g)",
       "functools.update_wrapper"),
      ("module_name_os", "x = os", "'os'"),
      ("module_bound", "import numpy as np\nn = np", "may only be used as numpy.<name>"),
      ("module_passed", "import numpy as np\nf(np)", "may only be used as numpy.<name>"),
      ("submodule_bound", "import jax\nm = jax.numpy", "may only be used as jax.numpy"),
      ("module_in_list", "import numpy as np\nms = [np]", "may only be used"),
      ("module_rebound", "import numpy as np\nnp = 3", "rebinding the module alias"),
      ("string_annotation", "def f(x: 'int') -> None: pass", "string annotations"),
      ("string_return_annotation", "def f(x) -> 'os.system': pass", "string annotations"),
      ("string_var_annotation", "x: 'int' = 3", "string annotations"),
      ("nested_string_annotation", "from typing import Optional\ndef f(x: Optional['X']):"
       " pass", "string annotations"),
      ("module_attr_store", "import jax\njax.numpy.sum = max", "assigning or deleting"),
      ("function_attr_store", "import jax\njax.nn.relu.x = 1", "assigning or deleting"),
      ("foreign_attr_store", "class A:\n  def f(self, other):\n    other.x = 1",
       "assigning or deleting"),
      ("class_body_store", "import haiku as hk\nclass A:\n  hk.Linear.w = 1",
       "assigning or deleting"),
      ("attr_delete", "import haiku as hk\ndel hk.Linear.w", "assigning or deleting"),
      ("for_target_store", "import haiku as hk\nfor hk.Linear.w in range(2): pass",
       "assigning or deleting"),
      ("module_subscript_store", "import jax\njax.numpy.ndarray[0] = 1", "module's data"),
      ("global", "X = 1\ndef f():\n  global X\n  X = 2", "global statements"),
      ("nonlocal", "def f():\n  x = 1\n  def g():\n    nonlocal x\n    x = 2", "nonlocal"),
      ("metaclass", "class A(metaclass=M): pass", "metaclass"),
      ("dunder_method", "class A:\n  def __getattr__(self, n): return 1", "__getattr__"),
      ("del_method", "class A:\n  def __del__(self): pass", "__del__"),
      ("match_class_pattern", "match 1:\n  case object(__class__=c): pass", "match"),
      ("async_def", "async def f(): pass", "async"),
  )
  def test_forbidden(self, source, fragment):
    violations = policy.check_policy(source)
    self.assertNotEmpty(violations, source)
    self.assertIn(fragment, " ".join(str(v) for v in violations))
    last_line = source.count("\n") + 1
    self.assertBetween(violations[0].line, 1, last_line)

  def test_every_offline_move_is_allowed(self):
    count = 0
    for seed in processors.seed_names():
      text = processors.resolve(seed).read_text()
      for factor in ("OPERATOR", "ACTION"):
        body = regions.get_region(text, factor)
        for move in offline_moves.applicable(factor, body):
          child = regions.replace_region(text, factor, move.apply(body))
          self.assertEqual(policy.check_policy(child), [], f"{seed} {move.name}")
          count += 1
    self.assertGreater(count, 100)

  def test_allow_lists_name_only_listed_modules(self):
    for module, names in policy.ALLOWED.items():
      self.assertIn(module.split(".")[0], policy.ALLOWED_IMPORTS)
      for name in names:
        self.assertFalse(name.startswith("_"), f"{module}.{name}")
        self.assertNotIn(name, policy.FORBIDDEN_ATTRIBUTES, f"{module}.{name}")
    for name in ("getattr", "setattr", "delattr", "hasattr", "vars", "globals", "locals",
                 "dir", "open", "eval", "exec", "compile", "__import__", "memoryview"):
      self.assertNotIn(name, policy.ALLOWED_BUILTINS)

  def test_long_identifiers_are_capped_in_reasons(self):
    name = "x" * 5000
    violations = policy.check_policy(f"import numpy as np\nw = np.{name}\n")
    self.assertLen(violations, 1)
    self.assertLess(len(str(violations[0])), 300)

  def test_reason_names_the_line_and_the_fix(self):
    violations = policy.check_policy("import jax\n\n\nimport socket\n")
    self.assertLen(violations, 1)
    self.assertEqual(violations[0].line, 4)
    self.assertRegex(str(violations[0]), r"^line 4: import socket is not allowed; use only .*jax")

  def test_violations_are_sorted_by_line(self):
    violations = policy.check_policy("x = eval('1')\nimport os\ny = open('f')\n")
    self.assertEqual([v.line for v in violations], [1, 2, 3])

  def test_never_executes_the_program(self):
    # A program whose top level would raise: checking it must not run it.
    self.assertEqual(policy.check_policy("raise RuntimeError(3)\n"), [])

  def test_syntax_error_raises(self):
    with self.assertRaises(SyntaxError):
      policy.check_policy("def f(:\n")


if __name__ == "__main__":
  absltest.main()
