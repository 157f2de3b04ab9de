"""The code base stays in shape: `ruff` clean, short modules, a flat top level, no import cycles.

The structure checks read the source (no imports): every ``import``/``from ... import`` of a
``spark_clrs`` module, at module level or inside a function, is an edge of the package's import
graph; the graph must have no cycle, so data and dependencies flow one way
(config -> proposer -> checks -> jail/trainer -> trusted scorer -> archive -> report).
"""

import ast
import pathlib
import shutil
import subprocess

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spark_clrs"
MAX_LINES = 600
MAX_TOP_LEVEL_MODULES = 8


def module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def modules() -> dict[str, pathlib.Path]:
  return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, known: dict[str, pathlib.Path]) -> str | None:
  """The longest known module that ``name`` names (a module, or a name inside one)."""
  while name:
    if name in known:
      return name
    name = name.rpartition(".")[0]
  return None


def import_graph() -> dict[str, set[str]]:
  """module -> the spark_clrs modules it imports."""
  known = modules()
  graph: dict[str, set[str]] = {name: set() for name in known}
  for name, path in known.items():
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      targets: list[str] = []
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          anchor = package.split(".")
          anchor = anchor[:len(anchor) - (node.level - 1)]
          base = ".".join([*anchor, base] if base else anchor)
        # ``from pkg import sub`` depends on pkg.sub; ``from pkg import name`` on pkg.
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                   for alias in node.names]
      for target in targets:
        if not target.startswith("spark_clrs"):
          continue
        resolved = _resolve(target, known)
        if resolved and resolved != name:
          graph[name].add(resolved)
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as a path ``[a, b, ..., a]``, or None."""
  state: dict[str, int] = {}  # 1 = on the stack, 2 = done.
  stack: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


class RuffTest(absltest.TestCase):

  def test_ruff_check_is_clean(self):
    ruff = shutil.which("ruff")
    if ruff is None:
      self.skipTest("ruff is not installed; pip install -e '.[test]'")
    result = subprocess.run([ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    self.assertEqual(result.returncode, 0, result.stdout[-4000:] + result.stderr[-2000:])


class StructureTest(absltest.TestCase):

  def test_no_module_over_the_line_ceiling(self):
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    self.assertEqual(long, {}, f"modules over {MAX_LINES} lines: split them by concept")

  def test_flat_top_level_is_small(self):
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    self.assertLessEqual(len(top), MAX_TOP_LEVEL_MODULES, top)

  def test_no_import_cycles(self):
    self.assertIsNone(find_cycle(import_graph()))

  def test_cycle_finder_finds_a_cycle(self):
    # The checker itself: a two-module cycle and a longer one are found, a DAG is not.
    self.assertEqual(find_cycle({"a": {"b"}, "b": {"a"}}), ["a", "b", "a"])
    self.assertEqual(find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])
    self.assertIsNone(find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}))

  def test_graph_sees_function_level_imports(self):
    graph = import_graph()
    self.assertIn("spark_clrs.search.api", graph)
    self.assertTrue(any(graph.values()))

  def test_trainer_side_never_imports_the_llm_side(self):
    # The process that runs candidate code holds no keys: nothing it imports reaches llm/.
    graph = import_graph()
    # The child loads its target by name: the trainer and the jailed checks are roots too.
    jail_side = [m for m in graph if m.startswith((
        "spark_clrs.isolation.child", "spark_clrs.evaluation.trainer",
        "spark_clrs.checks.jailed"))]
    self.assertEqual(len(jail_side), 3, jail_side)
    seen, todo = set(), list(jail_side)
    while todo:
      m = todo.pop()
      if m in seen:
        continue
      seen.add(m)
      todo.extend(graph.get(m, ()))
    self.assertFalse([m for m in seen if m.startswith(
        ("spark_clrs.llm", "spark_clrs.proposers", "spark_clrs.search"))])


if __name__ == "__main__":
  absltest.main()
