"""Tests for ``spark_clrs.policy``: the AST allow-list never runs the code it judges."""

import textwrap

from absl.testing import absltest, parameterized

import processors
from spark_clrs import policy

ALLOWED = textwrap.dedent('''
    from __future__ import annotations
    import collections
    import dataclasses
    import functools
    import math
    from typing import Any

    import chex
    import haiku as hk
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax


    class P(hk.Module):

      def __init__(self, name: str = "p_clrs_processor"):
        super().__init__(name=name)
        self.width = getattr(self, "width", 4)

      def __call__(self, x: Any) -> Any:
        fn = functools.partial(jnp.sum, axis=-1)
        print(f"{self.module_name}: {x.shape}")
        return fn(jax.nn.relu(x)) * math.sqrt(2.0) + np.float32(0)
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
      ("dunder_import", "m = __import__('os')", "'__import__'"),
      ("open", "f = open('/etc/passwd')", "'open'"),
      ("eval", "x = eval('1')", "'eval'"),
      ("exec", "exec('x = 1')", "'exec'"),
      ("compile", "c = compile('1', 'f', 'eval')", "'compile'"),
      ("globals", "g = globals()", "'globals'"),
      ("locals", "g = locals()", "'locals'"),
      ("vars", "g = vars()", "'vars'"),
      ("breakpoint", "breakpoint()", "'breakpoint'"),
      ("input", "x = input()", "'input'"),
      ("builtins_name", "b = __builtins__", "'__builtins__'"),
      ("subclasses", "c = ().__class__.__bases__[0].__subclasses__()", ".__subclasses__"),
      ("func_globals", "def f(): pass\ng = f.__globals__", ".__globals__"),
      ("getattr_dunder", "g = getattr(int, '__subclasses__')", "'__subclasses__'"),
      ("getattr_computed", "name = 'x'\ng = getattr(int, name)", "literal attribute name"),
      ("setattr_dunder", "setattr(int, '__call__', None)", "'__call__'"),
      ("format_escape", "s = '{0.__class__}'.format(1)", "format string"),
      ("namespace_subscript", "import jax\nb = jax.__dict__['x']", ".__dict__"),
      ("dunder_subscript", "d = {}\nb = d['__builtins__']", "['__builtins__']"),
      ("frame_walk", "g = (i for i in ()).gi_frame.f_globals", ".gi_frame"),
      ("numpy_load", "import numpy as np\nw = np.load('w.npy')", ".load"),
      ("numpy_tofile", "import numpy as np\nnp.zeros(2).tofile('x')", ".tofile"),
      ("from_numpy_load", "from numpy import load", "'load'"),
      ("pure_callback", "import jax\njax.pure_callback(print, None)", ".pure_callback"),
      ("debug_callback", "import jax\njax.debug.callback(print)", ".callback"),
      ("private_module_attr", "import jax\nc = jax._src", "._src"),
      ("type_hints", "import typing\ntyping.get_type_hints(int)", ".get_type_hints"),
      ("module_name_os", "x = os", "'os'"),
  )
  def test_forbidden(self, source, fragment):
    violations = policy.check_policy(source)
    self.assertNotEmpty(violations, source)
    self.assertIn(fragment, " ".join(str(v) for v in violations))
    last_line = source.count("\n") + 1
    self.assertBetween(violations[0].line, 1, last_line)

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
    self.assertEqual(policy.check_policy("raise SystemExit(3)\n"), [])

  def test_syntax_error_raises(self):
    with self.assertRaises(SyntaxError):
      policy.check_policy("def f(:\n")


if __name__ == "__main__":
  absltest.main()
