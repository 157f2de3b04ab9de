"""Tests for ``spark_clrs.evaluation.scoring`` (the trusted scorer) and what the jail is given.

No training and no child process: the Triplet-GMPNN seed at its initial parameters
proves that blanking every hint step after the first leaves CLRS's predictions
bit-identical, and that the trusted score of predictions that crossed the boundary as
``.npz`` equals ``clrs.evaluate`` and the in-process ``in_process.score`` exactly, and
that per-graph accuracies average to it. The checkpoint selector is driven with
hand-made checkpoints, hostile ones included (the file reader's own attacks are in
``test_exchange``).
"""

import json
import os
import pathlib
import tempfile
import threading
import time

import clrs
import jax
import numpy as np
from absl.testing import absltest

import processors
from spark_clrs.evaluation import data, in_process, profiles, protocol, scoring, trainer
from spark_clrs.isolation import exchange
from spark_clrs.isolation.exchange import BoundaryError

PROFILE = profiles.get_profile("quick", hidden=16)


def _bits(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x).view(np.uint8)


class SeedPredictionsTest(absltest.TestCase):
  """One model at its initial parameters, predicted on full and on blanked hints."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    trainer.configure_jax()
    cls.spec, cls.sets = data.build_eval_sets(PROFILE)
    factory = processors.load("triplet_gmpnn", use_ln=True, nb_triplet_fts=8)
    dummy = cls.sets["val"].batches[0]
    cls.model = trainer.build_model(PROFILE, factory, cls.spec, dummy, "/tmp")
    trainer.make_initializer(cls.model)(dummy.features, 1)
    cls.fns = {"predict": trainer.make_predictor(cls.model, cls.spec)}
    cls.key = jax.random.PRNGKey(7)

  def _predict(self, eval_set, blank: bool):
    """(concatenated predictions, all finite) as the jailed child computes them."""
    key, parts, finite = self.key, [], True
    for batch in eval_set.batches:
      key, sub = jax.random.split(key)
      features = data.blank_hints(batch.features) if blank else batch.features
      pred, ok = jax.device_get(self.fns["predict"](self.model._device_params, sub, features))  # pylint: disable=protected-access
      parts.append({k: np.asarray(v.data) for k, v in pred.items()})
      finite = finite and bool(ok)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, finite

  def test_blank_hints_keep_first_step_and_shape(self):
    batch = self.sets["ood_val"].batches[0]
    blanked = data.blank_hints(batch.features)
    self.assertGreater(batch.features.hints[0].data.shape[0], 2)
    changed = False
    for old, new in zip(batch.features.hints, blanked.hints, strict=True):
      self.assertEqual(new.data.shape, old.data.shape)
      self.assertEqual(new.data.dtype, old.data.dtype)
      np.testing.assert_array_equal(new.data[0], old.data[0])
      self.assertFalse(new.data[1:].any())
      changed = changed or old.data[1:].any()
    self.assertTrue(changed)  # The full hints did carry later steps (e.g. pi_h).

  def test_blanked_hints_give_bit_identical_predictions(self):
    for name, eval_set in self.sets.items():
      full, full_finite = self._predict(eval_set, blank=False)
      blank, blank_finite = self._predict(eval_set, blank=True)
      self.assertTrue(full_finite and blank_finite)
      reference, key = [], self.key  # CLRS's own model.predict on the full set.
      for batch in eval_set.batches:
        key, sub = jax.random.split(key)
        pred, _ = self.model.predict(sub, batch.features)
        reference.append({k: np.asarray(v.data) for k, v in jax.device_get(pred).items()})
      self.assertEqual(set(full), {dp.name for dp in eval_set.batches[0].outputs})
      for out in full:
        ref = np.concatenate([r[out] for r in reference])
        self.assertEqual(blank[out].dtype, ref.dtype)
        np.testing.assert_array_equal(_bits(full[out]), _bits(ref), err_msg=name)
        np.testing.assert_array_equal(_bits(blank[out]), _bits(ref), err_msg=name)

  def test_trusted_score_equals_clrs_evaluate_and_in_process_score(self):
    with tempfile.TemporaryDirectory() as tmp:
      root = pathlib.Path(tmp)
      for name, eval_set in self.sets.items():
        values, _ = self._predict(eval_set, blank=True)
        exchange.save_npz(root, f"exchange/{name}.npz",
                          {protocol.prediction_key(name, 3, k): v for k, v in values.items()},
                          parents=True)
        outputs = scoring.truth(eval_set)
        spec = protocol.prediction_spec({name: scoring.output_shapes(outputs)}, [3])
        arrays = exchange.load_npz(root, f"exchange/{name}.npz",
                                   max_bytes=protocol.spec_bytes(spec), expect=spec)
        preds = scoring.predictions_for(arrays, outputs, name, 3)
        trusted = scoring.score(outputs, preds)
        self.assertEqual(trusted, clrs.evaluate(outputs, preds)["score"])
        self.assertEqual(trusted, in_process.score(self.model, eval_set, self.key))
        per_graph = scoring.per_graph_scores(outputs, preds)
        self.assertLen(per_graph, outputs[0].data.shape[0])
        self.assertAlmostEqual(float(np.mean(per_graph)), trusted, places=6)

  def test_features_round_trip_without_outputs(self):
    arrays, manifest = data.export_features(self.sets, self.spec)
    manifest = json.loads(json.dumps(manifest))  # It travels in the JSON payload.
    self.assertFalse([k for k in arrays if "|outputs|" in k or k.endswith("|pi")])
    for info in manifest["sets"].values():
      self.assertEqual([o[0] for o in info["outputs"]], ["pi"])
      self.assertNotIn("data", json.dumps(info["outputs"]))
    spec, sets = data.import_features(arrays, manifest)
    self.assertEqual(spec, dict(self.spec))
    for name, eval_set in self.sets.items():
      self.assertLen(sets[name], len(eval_set.batches))
      for got, batch in zip(sets[name], eval_set.batches, strict=True):
        want = data.blank_hints(batch.features)
        np.testing.assert_array_equal(got.lengths, want.lengths)
        for a, b in zip((*got.inputs, *got.hints), (*want.inputs, *want.hints), strict=True):
          self.assertEqual((a.name, a.location, a.type_), (b.name, b.location, b.type_))
          np.testing.assert_array_equal(a.data, b.data)
          self.assertEqual(a.data.dtype, b.data.dtype)
    dummy = data.placeholder_feedback(sets["val"][0], manifest["sets"]["val"])
    truth = self.sets["val"].batches[0].outputs
    self.assertEqual([(d.name, d.data.shape) for d in dummy.outputs],
                     [(d.name, d.data.shape) for d in truth])
    self.assertFalse(dummy.outputs[0].data.any())


def _pointer_set(n_graphs: int = 64, n_nodes: int = 4) -> tuple[clrs.DataPoint, ...]:
  rng = np.random.default_rng(0)
  return (clrs.DataPoint("pi", "node", "pointer",
                         rng.integers(0, n_nodes, (n_graphs, n_nodes))),)


def _preds(data_: np.ndarray) -> dict[str, clrs.DataPoint]:
  return {"pi": clrs.DataPoint("pi", "node", "pointer", data_.astype(np.float32))}


def _header_bomb() -> bytes:
  """A ~300-byte .npz whose one member claims 10^12 float32 values."""
  import io  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top

  text = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
  body = (text + " " * (118 - len(text)) + "\n").encode()
  header = b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as archive:
    archive.writestr("val|0|pi.npy", header)
  return buf.getvalue()


class BootstrapTest(absltest.TestCase):

  def test_perfect_predictions_have_no_spread(self):
    (truth,) = _pointer_set()
    ci, per_seed = scoring.bootstrap_half_widths((truth,), [_preds(truth.data)] * 2)
    self.assertEqual((ci, per_seed), (0.0, [0.0, 0.0]))

  def test_half_width_matches_the_binomial_spread_and_is_reproducible(self):
    (truth,) = _pointer_set()
    pred = truth.data.copy()
    pred[::2] = (pred[::2] + 1) % 4  # Every other graph entirely wrong: score 0.5.
    metrics = scoring.accuracy_metrics("ood_val_acc", (truth,), [_preds(pred)])
    self.assertEqual(metrics["ood_val_acc"], 0.5)
    # Mean of 64 per-graph 0/1 scores: sd 0.0625, so a 95 % half-width near 1.96 sd.
    self.assertBetween(metrics["ood_val_acc_ci"], 0.09, 0.15)
    self.assertEqual(metrics["ood_val_acc_ci_per_seed"], [metrics["ood_val_acc_ci"]])
    (row,) = metrics["ood_val_acc_per_graph"]
    self.assertEqual(row, [0.0, 1.0] * 32)  # Graph order kept: the even ones are wrong.
    self.assertEqual(np.mean(row), metrics["ood_val_acc"])
    again = scoring.accuracy_metrics("ood_val_acc", (truth,), [_preds(pred)])
    self.assertEqual(again, metrics)

  def test_mean_over_seeds_uses_the_same_graphs(self):
    (truth,) = _pointer_set()
    wrong = (truth.data + 1) % 4
    half = truth.data.copy()
    half[::2] = wrong[::2]
    other = truth.data.copy()
    other[1::2] = wrong[1::2]  # The complement: every resample's mean is exactly 0.5.
    ci, per_seed = scoring.bootstrap_half_widths((truth,), [_preds(half), _preds(other)])
    self.assertAlmostEqual(ci, 0.0, places=12)
    self.assertGreater(min(per_seed), 0.05)


class ValidationTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    (self.truth,) = _pointer_set(8)
    self.good = {"val|0|pi": self.truth.data.astype(np.float32)}

  def test_valid(self):
    preds = scoring.predictions_for(self.good, (self.truth,), "val", 0)
    self.assertEqual(scoring.score((self.truth,), preds), 1.0)

  def test_each_defect_is_named(self):
    cases = [({}, r"no prediction 'val\|0\|pi'"),
             ({"val|0|pi": np.zeros((8, 3), np.float32)}, r"shape \(8, 3\), expected \(8, 4\)"),
             ({"val|0|pi": self.good["val|0|pi"].astype(np.float64)}, "dtype float64"),
             ({"val|0|pi": np.full((8, 4), np.nan, np.float32)}, "^nonfinite: .*NaN")]
    for arrays, pattern in cases:
      with self.assertRaisesRegex(BoundaryError, pattern):
        scoring.predictions_for(arrays, (self.truth,), "val", 0)

  def test_param_counts(self):
    arrays = protocol.flatten_params({
        "net/algo_0_pos_enc_linear": {"w": np.ones((1, 4), np.float32)},
        "net/triplet_gmpnn_clrs_processor/linear": {"w": np.ones((4, 4), np.float32),
                                                    "b": np.ones(4, np.float32)}})
    arrays["key|val"] = np.zeros(2, np.uint32)
    self.assertEqual(scoring.count_params(arrays, "state"), scoring.ParamCounts(24, 20))
    self.assertEqual(protocol.unflatten_params(arrays)["net/algo_0_pos_enc_linear"]["w"].shape,
                     (1, 4))
    arrays["params|net/x|w"] = np.array([np.inf], np.float32)
    with self.assertRaisesRegex(BoundaryError, "^nonfinite: state: parameter net/x/w"):
      scoring.count_params(arrays, "state")
    with self.assertRaisesRegex(BoundaryError, "holds no parameters"):
      scoring.count_params({"key|val": np.zeros(2, np.uint32)}, "state")


class CheckpointSelectorTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = pathlib.Path(self.create_tempdir().full_path)
    (self.truth,) = _pointer_set(16)
    self.ckpt = self.root / protocol.CKPT_DIR

  def _write(self, seed: int, step: int, correct: int, finite: bool = True):
    pred = self.truth.data.copy()
    pred[correct:] = (pred[correct:] + 1) % 4
    params_name, val_name = protocol.checkpoint_names(seed, step)
    exchange.save_npz(self.root, f"{protocol.CKPT_DIR}/{params_name}",
                      {"params|net/m|w": np.full(2, step, np.float32)}, parents=True)
    exchange.save_npz(self.root, f"{protocol.CKPT_DIR}/{val_name}",
                      {f"val|{seed}|pi": pred.astype(np.float32), "finite": np.asarray(finite)})

  def test_keeps_the_first_strictly_best_while_the_child_writes(self):
    selector = scoring.CheckpointSelector(self.root, protocol.CKPT_DIR, (self.truth,), [0, 1],
                                          poll_s=0.01)
    selector.start()

    def child():
      for step, correct, finite in ((0, 4, True), (5, 10, True), (10, 10, True),
                                    (15, 16, False), (20, 8, True)):
        self._write(0, step, correct, finite)
        time.sleep(0.05)
      self._write(1, 0, 2)

    writer = threading.Thread(target=child)
    writer.start()
    writer.join()
    selector.stop()
    self.assertEqual(selector.best_step(0), 5)  # 10/16 first at step 5; step 15 is NaN.
    self.assertEqual(selector.best_step(1), 0)
    self.assertEqual([s for s, _ in selector.scores[0]], [0, 5, 10, 15, 20])
    self.assertEqual(sorted(os.listdir(self.ckpt)),
                     ["seed0_step5.params.npz", "seed1_step0.params.npz"])
    np.testing.assert_array_equal(selector.best_params(0)["params|net/m|w"], [5, 5])

  def test_malformed_checkpoint_fails_with_its_name(self):
    selector = scoring.CheckpointSelector(self.root, protocol.CKPT_DIR, (self.truth,), [0])
    _, val_name = protocol.checkpoint_names(0, 50)
    exchange.save_npz(self.root, f"{protocol.CKPT_DIR}/{val_name}",
                      {"val|0|pi": np.zeros((16, 2), np.float32), "finite": np.asarray(True)},
                      parents=True)
    with self.assertRaisesRegex(BoundaryError, r"seed0_step50\.val\.npz: array val\|0\|pi is "
                                r"float32\[16, 2\], expected float32\[16, 4\]"):
      selector.stop()

  def test_hostile_checkpoints_are_rejected_without_touching_the_host(self):
    outside = pathlib.Path(self.create_tempdir().full_path)
    (outside / "seed0_step0.params.npz").write_bytes(b"KEEP")
    cases = {
        "fifo": lambda p: os.mkfifo(p),
        "dev_zero": lambda p: os.symlink("/dev/zero", p),
        "bomb": lambda p: p.write_bytes(_header_bomb()),
    }
    for label, plant in cases.items():
      root = self.root / label
      (root / protocol.CKPT_DIR).mkdir(parents=True)
      plant(root / protocol.CKPT_DIR / protocol.checkpoint_names(0, 0)[1])
      selector = scoring.CheckpointSelector(root, protocol.CKPT_DIR, (self.truth,), [0])
      start = time.monotonic()
      with self.assertRaises(BoundaryError) as ctx:
        selector.stop()
      self.assertLess(time.monotonic() - start, 5.0, label)
      self.assertNotIn("\n", str(ctx.exception))
    root = self.root / "linked"
    (root / protocol.EXCHANGE_DIR).mkdir(parents=True)
    os.symlink(outside, root / protocol.CKPT_DIR)
    selector = scoring.CheckpointSelector(root, protocol.CKPT_DIR, (self.truth,), [0])
    with self.assertRaisesRegex(BoundaryError, "ckpt is not a plain directory"):
      selector.stop()
    self.assertEqual((outside / "seed0_step0.params.npz").read_bytes(), b"KEEP")

  def test_no_checkpoint(self):
    selector = scoring.CheckpointSelector(self.root, protocol.CKPT_DIR, (self.truth,), [0])
    selector.stop()
    with self.assertRaisesRegex(BoundaryError, "no val checkpoint for seed 0"):
      selector.best_params(0)


if __name__ == "__main__":
  absltest.main()
