"""One definition of uncertainty (issue 18): interval coverage, paired decisions, formatting.

Simulated accuracies follow a[s, g] = mu + u_s + v_g + e_sg (training seed, graph and
their interaction), sized like the quick profile (seed std about 0.01, 128 graphs). No
training: the statistics are checked on data whose truth is known.
"""

import numpy as np
from absl.testing import absltest

from spark_clrs.evaluation import noise, statistics
from spark_clrs.evaluation.statistics import Samples, SeedSpread

G = 128
SEED_SD, GRAPH_SD, NOISE_SD = 0.01, 0.05, 0.03


def metrics_of(matrix: np.ndarray, seeds=None, name="ood_val_acc") -> dict:
  """Evaluator-style metrics of a [K, G] per-graph accuracy matrix."""
  per_seed = matrix.mean(axis=1)
  out = {name: float(per_seed.mean()), f"{name}_per_seed": per_seed.tolist(),
         f"{name}_per_graph": matrix.tolist()}
  if seeds is not None:
    out["seeds"] = list(seeds)
  return out


def simulate(rng, mu, k, graphs=None):
  """[k, G] accuracies of one program; ``graphs`` = the set's graph effects (shared)."""
  graphs = rng.normal(0, GRAPH_SD, G) if graphs is None else graphs
  return (mu + rng.normal(0, SEED_SD, (k, 1)) + graphs[None, :]
          + rng.normal(0, NOISE_SD, (k, G)))


class IntervalTest(absltest.TestCase):

  def coverage(self, k, borrowed, trials=400):
    rng = np.random.default_rng(k * 10 + borrowed)
    hits = widths = 0
    for _ in range(trials):
      spread = None
      if borrowed:  # The seed program: another architecture, same seed spread, 3 seeds.
        spread = SeedSpread.of(Samples.of(metrics_of(simulate(rng, 0.3, 3)), "ood_val_acc"))
      e = statistics.estimate(Samples.of(metrics_of(simulate(rng, 0.5, k)), "ood_val_acc"),
                              spread)
      hits += e.lo <= 0.5 <= e.hi
      widths += e.half_width
    return hits / trials, widths / trials

  def test_k_seed_interval_covers_the_truth(self):
    rate, width = self.coverage(k=3, borrowed=False)
    self.assertGreaterEqual(rate, 0.93)
    self.assertLess(width, 0.1)

  def test_single_seed_borrowing_the_seed_spread_covers_the_truth(self):
    rate, _ = self.coverage(k=1, borrowed=True)
    self.assertGreaterEqual(rate, 0.93)

  def test_single_seed_without_a_seed_spread_is_labelled_and_narrower(self):
    rng = np.random.default_rng(0)
    samples = Samples.of(metrics_of(simulate(rng, 0.5, 1)), "ood_val_acc")
    alone = statistics.estimate(samples)
    borrowed = statistics.estimate(samples, SeedSpread(variance=0.02 ** 2, seeds=3))
    self.assertEqual((alone.seed_term, borrowed.seed_term), ("unknown", "borrowed"))
    self.assertLess(alone.half_width, borrowed.half_width)
    # Three seeds' spread gives 2 degrees of freedom: t = 4.30, not 1.96.
    self.assertAlmostEqual(statistics.t_quantile(2.0), 4.3027, places=3)
    self.assertAlmostEqual(statistics.t_quantile(None), 1.95996, places=4)

  def test_old_metrics_fall_back_to_the_bootstrap_half_width(self):
    old = {"ood_val_acc": 0.17, "ood_val_acc_per_seed": [0.16, 0.17, 0.18],
           "ood_val_acc_std": 0.008, "ood_val_acc_ci": 0.01}
    e = statistics.estimate(Samples.of(old, "ood_val_acc"))
    self.assertEqual((e.seeds, e.graphs, e.seed_term), (3, None, "measured"))
    # se² = var(seeds)/3 + (0.01/1.96)², t with Satterthwaite df (seed term's 2 dominates).
    se = np.sqrt(np.var([0.16, 0.17, 0.18], ddof=1) / 3 + (0.01 / statistics.Z) ** 2)
    self.assertGreater(e.half_width, 1.96 * se)
    self.assertLess(e.half_width, 4.31 * se)
    self.assertIsNone(statistics.estimate(Samples.of({"ood_val_acc": 0.5}, "ood_val_acc"))
                      .half_width)


class PairedDecisionTest(absltest.TestCase):
  """A reordered child (same architecture, another initialisation) ties; a real gain wins."""

  def decide(self, rng, gain, child_k=1, best_k=3):
    graphs = rng.normal(0, GRAPH_SD, G)  # Same architecture family: same hard graphs.
    spread = SeedSpread.of(Samples.of(metrics_of(simulate(rng, 0.4, 3, graphs)),
                                      "ood_val_acc"))
    best = metrics_of(simulate(rng, 0.4, best_k, graphs))
    child = metrics_of(simulate(rng, 0.4 + gain, child_k, graphs))
    return statistics.difference(Samples.of(child, "ood_val_acc"),
                                 Samples.of(best, "ood_val_acc"), spread)

  def test_reordered_child_is_almost_never_better(self):
    rng = np.random.default_rng(1)
    verdicts = [self.decide(rng, 0.0).verdict for _ in range(600)]
    self.assertLessEqual(verdicts.count(statistics.BETTER) / len(verdicts), 0.03)
    self.assertGreater(verdicts.count(statistics.TIE) / len(verdicts), 0.9)
    one_to_one = [self.decide(rng, 0.0, best_k=1).verdict for _ in range(600)]
    self.assertLessEqual(one_to_one.count(statistics.BETTER) / len(one_to_one), 0.03)

  def test_clearly_better_child_is_better(self):
    rng = np.random.default_rng(2)
    verdicts = [self.decide(rng, 0.1).verdict for _ in range(200)]
    self.assertGreaterEqual(verdicts.count(statistics.BETTER) / len(verdicts), 0.95)
    self.assertEqual(self.decide(rng, -0.1).verdict, statistics.WORSE)

  def test_pairing_over_graphs_is_sharper_than_unpaired(self):
    rng = np.random.default_rng(3)
    graphs = rng.normal(0, GRAPH_SD, G)
    a = metrics_of(simulate(rng, 0.45, 3, graphs), seeds=(0, 1, 2))
    b = metrics_of(simulate(rng, 0.40, 3, graphs), seeds=(0, 1, 2))
    paired = statistics.difference(Samples.of(a, "ood_val_acc"), Samples.of(b, "ood_val_acc"))
    self.assertEqual(paired.paired, "seeds+graphs")
    unpaired_a = {k: v for k, v in a.items() if not k.endswith("_per_graph")}
    unpaired_a["ood_val_acc_ci"] = statistics.estimate(Samples.of(a, "ood_val_acc")).half_width
    unpaired = statistics.difference(Samples.of(unpaired_a, "ood_val_acc"),
                                     Samples.of(b, "ood_val_acc"))
    self.assertEqual(unpaired.paired, "unpaired")
    self.assertLess(paired.half_width, unpaired.half_width)
    self.assertAlmostEqual(paired.value, a["ood_val_acc"] - b["ood_val_acc"])

  def test_without_any_spread_the_sign_decides_and_says_so(self):
    d = statistics.difference(Samples.of({"ood_val_acc": 0.6}, "ood_val_acc"),
                              Samples.of({"ood_val_acc": 0.5}, "ood_val_acc"))
    self.assertEqual((d.verdict, d.half_width), (statistics.BETTER, None))
    self.assertIn("no interval", noise.format_difference(d))


class FormatTest(absltest.TestCase):

  def test_one_format_everywhere(self):
    e = statistics.Estimate(0.1789, 0.0123, seeds=3, graphs=128, seed_term="measured", df=2.4)
    self.assertEqual(noise.format_estimate(e), "0.179 ± 0.012 (95% CI, 3 seeds x 128 graphs)")
    one = statistics.Estimate(0.172, 0.031, seeds=1, graphs=128, seed_term="borrowed")
    self.assertEqual(noise.format_estimate(one), "0.172 ± 0.031 (95% CI, 1 seed x 128 graphs; "
                     "seed spread of the seed program)")
    self.assertEqual(noise.format_estimate(statistics.Estimate(None)), "-")
    self.assertEqual(noise.format_metric({"ood_val_acc": 0.5}),
                     "0.500 (no interval: seed and graph spread unknown)")
    # A stored interval (the search's, with the seed spread) wins over recomputing.
    stored = {"ood_val_acc": 0.172, "ood_val_acc_interval": one.to_json()}
    self.assertEqual(noise.of(stored), one)
    self.assertEqual(statistics.Estimate.from_json(e.to_json()), e)

  def test_difference_and_verdict_text(self):
    d = statistics.Difference(0.031, 0.027, statistics.BETTER, "graphs", graphs=128)
    self.assertEqual(noise.format_difference(d),
                     "+0.031 (95% CI +0.004..+0.058, paired over 128 graphs)")
    self.assertTrue(noise.verdict_text(d, "the seed").startswith("NEW BEST: +0.031"))
    tie = statistics.Difference(0.006, 0.03, statistics.TIE, "graphs", graphs=128)
    self.assertTrue(noise.verdict_text(tie, "candidate 2").startswith(
        "tie within noise with candidate 2: +0.006"))
    self.assertEqual(statistics.Difference.from_json(d.to_json()), d)


if __name__ == "__main__":
  absltest.main()
