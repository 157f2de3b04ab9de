"""examples/quickstart.ipynb runs top to bottom in a real Jupyter kernel (nbclient).

The notebook's ``parameters`` cell is replaced, as papermill would do, by the settings of
the session's real tiny search (tests/helpers.py) with ``OUTPUT`` a copy of its run
directory: ``spark_clrs.search(...)`` in the kernel opens that run, finds it finished
(nothing is trained again) and returns its result, which the notebook prints, plots and
diffs. The real training behind it is the shared run's.
"""

import os
import pathlib
import sys
from unittest import mock

import nbformat
from absl.testing import absltest
from nbclient import NotebookClient

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import helpers  # noqa: E402

NOTEBOOK = helpers.ROOT / "examples" / "quickstart.ipynb"
SET_BY_NAME = ("profile", "iterations", "profile_overrides")  # The notebook's own arguments.


class QuickstartNotebookTest(absltest.TestCase):

  def test_notebook_executes_and_shows_the_plot(self):
    tiny = helpers.tiny_run()
    tmp = pathlib.Path(self.create_tempdir().full_path)
    out = tiny.copy(tmp / "nb_run")
    before = sorted(p.name for p in (out / "programs").iterdir())
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    self.assertLen(params, 1)
    overrides = {k: v for k, v in helpers.TINY.items() if k not in SET_BY_NAME}
    self.assertEqual(helpers.TINY["profile"], "quick")  # What the notebook passes itself.
    params[0].source = (f"ITERATIONS = {helpers.TINY['iterations']}\nOUTPUT = {str(out)!r}\n"
                        f"PROFILE_OVERRIDES = {helpers.TINY['profile_overrides']!r}\n"
                        f"SEARCH_OVERRIDES = {overrides!r}\n")
    # Not helpers.ENV's MPLBACKEND=Agg: the kernel's inline backend must show the figure.
    env = {"JAX_COMPILATION_CACHE_DIR": str(helpers.JAX_CACHE), "PYTHONPATH": str(helpers.ROOT)}
    with mock.patch.dict(os.environ, env):
      client = NotebookClient(nb, timeout=1200, kernel_name="python3",
                              resources={"metadata": {"path": str(tmp)}})
      client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    self.assertFalse([o for o in outputs if o.output_type == "error"])
    self.assertTrue(any("image/png" in o.get("data", {}) for o in outputs),
                    "result.plot() displayed no figure")
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    self.assertIn("best_ood_val_acc", text)
    n = helpers.TINY["iterations"]
    self.assertIn(f"{n} proposal{'' if n == 1 else 's'}, search-time best candidate", text)
    self.assertIn("result (final re-evaluation, fresh seeds", text)
    self.assertTrue((out / "results" / "summary.json").is_file())
    # The kernel's search resumed the finished run: no candidate was added.
    self.assertEqual(sorted(p.name for p in (out / "programs").iterdir()), before)


if __name__ == "__main__":
  absltest.main()
