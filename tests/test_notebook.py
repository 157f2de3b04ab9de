"""examples/quickstart.ipynb runs top to bottom in a real Jupyter kernel (nbclient).

The notebook's `parameters` cell is replaced by a tiny search (1 proposal, 2
training steps, hidden 8) in a temporary directory, as papermill would do.
"""

import os
import pathlib
import tempfile
from unittest import mock

import nbformat
from absl.testing import absltest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
JAX_CACHE = pathlib.Path(tempfile.gettempdir()) / "spark_clrs_test_jax_cache"


class QuickstartNotebookTest(absltest.TestCase):

  def test_notebook_executes_and_shows_the_plot(self):
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    out = pathlib.Path(tmp.name) / "nb_run"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    self.assertLen(params, 1)
    params[0].source = (f"ITERATIONS = 1\nOUTPUT = {str(out)!r}\n"
                        "PROFILE_OVERRIDES = ('train_steps=2', 'hidden=8')\n")
    env = {"JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE), "PYTHONPATH": str(ROOT)}
    with mock.patch.dict(os.environ, env):
      client = NotebookClient(nb, timeout=1200, kernel_name="python3",
                              resources={"metadata": {"path": tmp.name}})
      client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    self.assertFalse([o for o in outputs if o.output_type == "error"])
    self.assertTrue(any("image/png" in o.get("data", {}) for o in outputs),
                    "result.plot() displayed no figure")
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    self.assertIn("best_ood_val_acc", text)
    self.assertIn("1 proposal, best candidate", text)
    self.assertTrue((out / "results" / "summary.json").is_file())


if __name__ == "__main__":
  absltest.main()
