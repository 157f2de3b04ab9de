"""Ordinary code a strong model writes passes every check (issue 19).

``tests/data/candidates/model_edits/`` holds region edits in the style of a frontier model:
GRU-style gates, attention-weighted aggregation, multi-head triplets with a Python loop
over heads, RMSNorm, einsum edge gates, degree normalisation, ``stop_gradient``, typed
helpers, ``import math`` in the region, ``.format`` names and the public names a
hand-written allow-list once refused. The text-only stages (parse, scope, policy) run over
all of them in the default suite; the jailed stages (interface, shape, finite, budget) run
over a representative subset there, and over all of them in the slow suite, one warm check
worker shared by the candidates.
"""

import collections
import importlib.util
import pathlib
import sys

import pytest
from absl.testing import absltest

from spark_clrs import checks
from spark_clrs.isolation import sandbox
from spark_clrs.programs import regions

REPO = pathlib.Path(__file__).resolve().parent.parent
CORPUS_PY = REPO / "tests" / "data" / "candidates" / "corpus.py"
LIMITS = sandbox.Limits(timeout_s=60.0, memory_mb=4096, max_output_bytes=1 << 20)
# The jailed stages in the default suite, on three edits that a text check cannot vouch
# for: a Python loop over heads with .format names, masked jax.nn.dot_product_attention,
# and count_nonzero + einsum degree normalisation on another seed. Each costs a real
# shape/finite/budget pass (~3 s idle, ~12 s on a loaded 2-core machine) after the warm
# worker starts; the whole corpus runs in the slow suite.
FAST_SUBSET = ("act_multihead_triplets", "act_dot_product_attention",
               "act_degree_normalised_mean")
MIN_CASES = 24


def load_model_edits():
  spec = importlib.util.spec_from_file_location("spark_candidate_corpus", CORPUS_PY)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module.load_model_edits()


class ModelEditsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cases = load_model_edits()

  def test_the_corpus_covers_both_factors_and_the_three_seeds(self):
    self.assertGreaterEqual(len(self.cases), MIN_CASES)
    factors = collections.Counter(c.factor for c in self.cases)
    self.assertGreaterEqual(factors["ACTION"], 10)
    self.assertGreaterEqual(factors["OPERATOR"], 6)
    self.assertEqual({c.name.split("_")[0] for c in self.cases}, {"act", "op"})
    for case in self.cases:
      diff = regions.diff_factors(case.parent, case.candidate)
      self.assertEqual(diff.changed, (case.factor,), case.name)
      self.assertFalse(diff.outside_changed, case.name)
    self.assertContainsSubset(FAST_SUBSET, [c.name for c in self.cases])

  def test_every_edit_passes_the_text_stages(self):
    refused = []
    for case in self.cases:
      verdict = checks.static_checks(case.candidate, parent_text=case.parent, scope=case.scope)
      if verdict is not None:
        refused.append(f"{case.name} ({case.why}): {verdict.reason}")
    self.assertEqual(refused, [])

  def _run_checks(self, cases) -> list[str]:
    budget = checks.default_budget()
    tmp = pathlib.Path(self.create_tempdir().full_path)
    refused = []
    with checks.make_worker(tmp / "worker") as worker:
      for case in cases:
        verdict = checks.run_checks(case.candidate, parent_text=case.parent, scope=case.scope,
                                    budget=budget, workdir=tmp / case.name, limits=LIMITS,
                                    worker=worker)
        if not verdict.feasible or verdict.param_count <= 0 or verdict.macs <= 0:
          refused.append(f"{case.name} ({case.why}): {verdict.stage}: {verdict.reason}")
    return refused

  def test_a_representative_subset_passes_every_check(self):
    self.assertEqual(self._run_checks([c for c in self.cases if c.name in FAST_SUBSET]), [])

  @pytest.mark.slow
  def test_every_edit_passes_every_check(self):
    self.assertEqual(self._run_checks(self.cases), [])


if __name__ == "__main__":
  absltest.main()
