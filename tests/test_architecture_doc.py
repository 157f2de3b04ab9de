"""ARCHITECTURE.md's module map matches the tree file for file.

Pure file reading (no import of spark_clrs): every module under ``spark_clrs/`` (and each
viewer asset) is named in ARCHITECTURE.md by its repository-relative path, and every
``spark_clrs/...`` path the map names exists.
"""

import pathlib
import re

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spark_clrs"
DOC = ROOT / "ARCHITECTURE.md"
MAPPED_SUFFIXES = (".py", ".js", ".css")
# A repository-relative path into the package, as the map writes it.
PATH_RE = re.compile(r"spark_clrs/[A-Za-z0-9_./-]*?\.(?:py|js|css)\b")


def tree_files() -> set[str]:
  """Repository-relative paths of the package's modules and viewer assets."""
  return {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*")
          if p.is_file() and p.suffix in MAPPED_SUFFIXES and "__pycache__" not in p.parts}


def mentioned_paths(text: str) -> set[str]:
  return set(PATH_RE.findall(text))


class ArchitectureDocTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.text = DOC.read_text()
    cls.tree = tree_files()
    cls.mentioned = mentioned_paths(cls.text)

  def test_every_module_is_mapped(self):
    missing = sorted(self.tree - self.mentioned)
    self.assertEqual(missing, [], "modules missing from ARCHITECTURE.md's map: add a line each")

  def test_every_mapped_path_exists(self):
    stale = sorted(p for p in self.mentioned if not (ROOT / p).is_file())
    self.assertEqual(stale, [], "ARCHITECTURE.md names files that do not exist")

  def test_the_tree_is_not_empty(self):
    # Guards the test itself: a wrong ROOT would make both comparisons vacuous.
    self.assertIn("spark_clrs/__init__.py", self.tree)
    self.assertIn("spark_clrs/isolation/exchange.py", self.mentioned)

  def test_path_pattern(self):
    self.assertEqual(mentioned_paths("see `spark_clrs/a/b.py`, spark_clrs/c.js and "
                                     "spark_clrs/py.typed, spark_clrs/x.pyc"),
                     {"spark_clrs/a/b.py", "spark_clrs/c.js"})


if __name__ == "__main__":
  absltest.main()
