"""The trusted side of an evaluation (``evaluation.evaluate``) against a fake jail, no JAX run.

An honest fake run scores perfectly, with per-graph accuracies that agree with the
per-seed ones, and reuses the checks' cost (no second export) only when its parameter
count is the trained processor's. Then a fake worker plays a hostile trainer: it runs nothing, plants in the workdir what a
hostile candidate could leave there (a FIFO or a ``/dev/zero`` link for the predictions,
links from ``state/``, ``ckpt/`` or ``exchange/`` itself to host folders, header and zip
bombs, predictions of the wrong dtype or shape) and reports success. Each must come back
as a rejected candidate (status ``error``) with a one-line reason, within a timeout,
with bounded parent memory, and with a victim file and folder outside the workdir
byte-identical; never a hang, an exception or a host write.
"""

import hashlib
import io
import os
import pathlib
import threading
import tracemalloc
import zipfile
from unittest import mock

import numpy as np
from absl.testing import absltest

from spark_clrs.checks.verdict import Verdict
from spark_clrs.evaluation import data, evaluate, profiles, protocol, scoring
from spark_clrs.isolation import exchange, sandbox

PROFILE = profiles.get_profile("quick", train_steps=1, hidden=8)
SEED = pathlib.Path(__file__).resolve().parent.parent / "seeds" / "triplet_gmpnn.py"
MB = 1 << 20


def _digest(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  for p in sorted([path, *path.rglob("*")] if path.is_dir() else [path]):
    h.update(str(p).encode())
    if p.is_file() and not p.is_symlink():
      h.update(p.read_bytes())
  return h.hexdigest()


def _bomb(member: str) -> bytes:
  """A ~300-byte .npz whose member claims 10^12 float32 values."""
  text = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
  body = (text + " " * (118 - len(text)) + "\n").encode()
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as archive:
    archive.writestr(f"{member}.npy", b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little")
                     + body)
  return buf.getvalue()


def _zip_bomb(member: str) -> bytes:
  """A member that deflates 64 MiB of zeros into ~64 KiB, its header honest."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
    with archive.open(f"{member}.npy", "w", force_zip64=True) as f:
      np.lib.format.write_array_header_1_0(
          f, {"descr": "<f4", "fortran_order": False, "shape": (16 * MB,)})
      for _ in range(64):
        f.write(bytes(MB))
  return buf.getvalue()


class FakeWorker:
  """Stands in for ``sandbox.Worker``: ``plant(exchange_dir, payload)`` then success."""

  def __init__(self, plant):
    self.plant = plant
    self.payloads = []

  def run(self, target, payload, *, workdir, limits=None):
    del limits
    self.payloads.append(payload)
    self.plant(pathlib.Path(workdir) / protocol.EXCHANGE_DIR, payload)
    seeds = payload["seeds"]
    report = {"final_loss_per_seed": [0.5] * len(seeds), "nonfinite_outputs": []}
    return sandbox.ChildResult(status="ok", value=report, reason="", wall_seconds=0.1,
                               peak_rss_mb=1.0, stderr_tail="")


def _good_predictions(payload) -> dict[str, np.ndarray]:
  _, sets = data.cached_eval_sets(PROFILE)
  out = {}
  for name in payload["predict_sets"]:
    for dp in scoring.truth(sets[name]):
      for seed in payload["seeds"]:
        out[protocol.prediction_key(name, seed, dp.name)] = dp.data.astype(np.float32)
  return out


def _plant_good_run(ex: pathlib.Path, payload) -> None:
  """What an honest trainer leaves: perfect predictions and one state file per seed."""
  root = ex.parent
  exchange.save_npz(root, f"{protocol.EXCHANGE_DIR}/{payload['predictions']}",
                    _good_predictions(payload))
  for seed in payload["seeds"]:
    state = protocol.flatten_params({"net/enc": {"w": np.ones(2, np.float32)},
                                     "net/mine_clrs_processor/lin": {"w": np.ones((4, 4),
                                                                                  np.float32)}})
    state.update({f"{protocol.KEY_PREFIX}{n}": np.zeros(2, np.uint32)
                  for n in protocol.EVAL_SET_NAMES})
    exchange.save_npz(root, protocol.state_file(seed), state, parents=True)


CHECKED = {"check_param_count": 16, "check_macs": 1234, "check_macs_nb_nodes": 16,
           "check_macs_by_shape": {"b1_n16": 1234}}


class CheckedCostTest(absltest.TestCase):
  """The whole trusted side on an honest fake run, with the checks' cost reused."""

  def test_checked_cost_is_reused_and_per_graph_scores_agree(self):
    workdir = pathlib.Path(self.create_tempdir().full_path)
    worker = FakeWorker(_plant_good_run)
    result = evaluate.evaluate(SEED, PROFILE, [0, 1], workdir=workdir, runner=worker,
                               cost=CHECKED)
    self.assertTrue(result.ok, result.reason)
    self.assertLen(worker.payloads, 1)  # Costed once, by the checks: no jailed costing here.
    metrics = result.metrics
    self.assertEqual((metrics["macs"], metrics["macs_nb_nodes"], metrics["macs_source"]),
                     (1234, 16, "check"))
    self.assertEqual((metrics["param_count"], metrics["processor_param_count"]), (18, 16))
    sizes = {c.name: c.num_samples for c in data.eval_set_configs(PROFILE).values()}
    for key, name in protocol.SET_FOR_KEY.items():
      self.assertEqual(metrics[key], 1.0)
      rows = metrics[f"{key}_per_graph"]
      self.assertEqual([len(r) for r in rows], [sizes[name]] * 2)
      self.assertEqual(metrics[f"{key}_per_seed"], [sum(r) / len(r) for r in rows])

  def test_unchecked_program_is_costed_by_the_checks_outside_the_workdir(self):
    """Without a cost the checks measure it, in a fresh directory beside the workdir: a
    link the trainer planted in its workdir is never handed to the costing jail."""
    base = pathlib.Path(self.create_tempdir().full_path)
    workdir, victim = base / "work", base / "victim"
    victim.mkdir()
    (victim / "keep").write_text("KEEP")
    seen = []

    def plant(ex, payload):
      _plant_good_run(ex, payload)
      for name in ("cost", ".cost", "check"):
        os.symlink(victim, ex.parent / name)

    def fake_measure_cost(text, *, workdir, hidden, config):
      del text, config
      seen.append(workdir)
      self.assertTrue(workdir.is_dir() and not workdir.is_symlink())
      self.assertEqual(hidden, PROFILE.hidden)
      return Verdict(feasible=True, stage="ok", reason="", param_count=16, macs=99,
                     macs_nb_nodes=16, macs_by_shape={"b1_n16": 99})

    with mock.patch.object(evaluate, "measure_cost", fake_measure_cost):
      result = evaluate.evaluate(SEED, PROFILE, [0], workdir=workdir,
                                 runner=FakeWorker(plant))
    self.assertTrue(result.ok, result.reason)
    self.assertEqual((result.metrics["macs"], result.metrics["macs_source"]), (99, "check"))
    (cost_dir,) = seen
    self.assertEqual(cost_dir.parent, base)  # Beside the workdir, in its trusted parent.
    self.assertFalse(cost_dir.exists())
    self.assertEqual(os.listdir(victim), ["keep"])

  def test_checked_cost_of_another_processor_is_refused(self):
    workdir = pathlib.Path(self.create_tempdir().full_path)
    result = evaluate.evaluate(SEED, PROFILE, [0], workdir=workdir,
                               runner=FakeWorker(_plant_good_run),
                               cost={**CHECKED, "check_param_count": 17})
    self.assertEqual(result.status, "error")
    self.assertEqual(result.reason, "error: the checked processor has 17 parameters but the "
                     "trained model's processor has 16")


class TrustedSideAttackTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    data.cached_eval_sets(PROFILE)  # Sampled once, outside the measured calls.

  def setUp(self):
    super().setUp()
    base = pathlib.Path(self.create_tempdir().full_path)
    self.workdir = base / "work"
    self.victim = base / "victim.txt"
    self.victim.write_text("TOP-SECRET-CONTENT\n")
    self.victim_dir = base / "victim_dir"
    self.victim_dir.mkdir()
    (self.victim_dir / "seed0.npz").write_bytes(b"KEEP")
    (self.victim_dir / "inputs_predict.npz").write_bytes(b"KEEP")
    self.before = (_digest(self.victim), _digest(self.victim_dir))

  def tearDown(self):
    self.assertEqual((_digest(self.victim), _digest(self.victim_dir)), self.before,
                     "a host file or folder outside the workdir changed")
    super().tearDown()

  def run_evaluation(self, plant, *, profile=PROFILE, timeout_s: float = 60.0):
    """``evaluate.evaluate`` with the fake jail; asserts a one-line rejection in time."""
    results = []
    worker = FakeWorker(plant)
    thread = threading.Thread(target=lambda: results.append(evaluate.evaluate(
        SEED, profile, [0], workdir=self.workdir, runner=worker)), daemon=True)
    thread.start()
    thread.join(timeout_s)
    self.assertTrue(results, "the parent did not return within the timeout")
    (result,) = results
    self.assertEqual(result.status, "error")
    self.assertNotIn("\n", result.reason)
    self.assertNotIn("TOP-SECRET", result.reason)
    return result

  def test_fifo_for_the_predictions(self):
    result = self.run_evaluation(
        lambda ex, payload: os.mkfifo(ex / payload["predictions"]), timeout_s=30)
    self.assertRegex(result.reason, r"^error: exchange/predictions_train\.npz is not a "
                     r"regular file$")

  def test_dev_zero_and_host_file_links_for_the_predictions(self):
    for target in ("/dev/zero", self.victim):
      result = self.run_evaluation(
          lambda ex, payload, t=target: os.symlink(t, ex / payload["predictions"]))
      self.assertRegex(result.reason, "predictions_train.npz cannot be opened as a plain file")

  def test_header_bomb_predictions_with_bounded_memory(self):
    key = protocol.prediction_key("ood_val", 0, "pi")
    tracemalloc.start()
    try:
      result = self.run_evaluation(
          lambda ex, payload: (ex / payload["predictions"]).write_bytes(_bomb(key)))
      _, peak = tracemalloc.get_traced_memory()
    finally:
      tracemalloc.stop()
    self.assertRegex(result.reason, r"claims float32\[1000000000000\]")
    self.assertLess(peak, 64 * MB)

  def test_zip_bomb_predictions(self):
    key = protocol.prediction_key("ood_val", 0, "pi")
    tracemalloc.start()
    try:
      result = self.run_evaluation(
          lambda ex, payload: (ex / payload["predictions"]).write_bytes(_zip_bomb(key)))
      _, peak = tracemalloc.get_traced_memory()
    finally:
      tracemalloc.stop()
    self.assertRegex(result.reason, r"predictions_train\.npz (has|unpacks to) \d+ bytes, "
                     r"over the \d+ byte limit")
    self.assertLess(peak, 64 * MB)

  def test_wrong_dtype_or_shape(self):
    def wrong(cast):
      def plant(ex, payload):
        preds = _good_predictions(payload)
        key = protocol.prediction_key("ood_val", 0, "pi")
        preds[key] = cast(preds[key])
        exchange.save_npz(ex.parent, f"{protocol.EXCHANGE_DIR}/{payload['predictions']}",
                          preds)
      return plant

    result = self.run_evaluation(wrong(lambda x: x.astype(np.float64)))
    self.assertRegex(result.reason, r"array ood_val\|0\|pi is float64\[\d+, \d+\], expected "
                     r"float32\[\d+, \d+\]$")
    result = self.run_evaluation(wrong(lambda x: x[:, :-1]))
    self.assertRegex(result.reason, r"array ood_val\|0\|pi is float32\[\d+, \d+\], expected")

  def test_state_directory_linked_to_a_host_folder(self):
    def plant(ex, payload):
      exchange.save_npz(ex.parent, f"{protocol.EXCHANGE_DIR}/{payload['predictions']}",
                        _good_predictions(payload))
      os.symlink(self.victim_dir, ex / protocol.STATE_NAME)

    result = self.run_evaluation(plant)
    self.assertRegex(result.reason, r"^error: exchange/state is not a plain directory")

  def test_checkpoint_directory_linked_to_a_host_folder(self):
    def plant(ex, payload):
      os.symlink(self.victim_dir, ex / "ckpt")

    result = self.run_evaluation(plant, profile=profiles.get_profile(
        "quick", train_steps=1, hidden=8, eval_every=1))
    self.assertRegex(result.reason, r"^error: exchange/ckpt is not a plain directory")

  def test_links_planted_before_the_parent_writes(self):
    """A previous phase's jail leaves links where the parent writes next; the parent's
    next evaluation in that workdir replaces them and never writes through them."""
    ex = self.workdir / protocol.EXCHANGE_DIR
    ex.mkdir(parents=True)
    os.symlink(self.victim, ex / "inputs_train.npz")
    os.symlink(self.victim_dir, ex / "ckpt")
    seen = []

    def plant(ex, payload):
      seen.append(sorted(os.listdir(ex)))
      os.mkfifo(ex / payload["predictions"])

    self.run_evaluation(plant)
    self.assertEqual(seen, [["inputs_train.npz"]])
    self.assertFalse((ex / "inputs_train.npz").is_symlink())
    self.workdir.joinpath(protocol.EXCHANGE_DIR).rename(self.workdir / "old")
    os.symlink(self.victim_dir, self.workdir / protocol.EXCHANGE_DIR)
    self.run_evaluation(lambda ex, payload: os.mkfifo(ex / payload["predictions"]))
    self.assertFalse((self.workdir / protocol.EXCHANGE_DIR).is_symlink())

  def test_deferred_test_with_a_linked_state_directory(self):
    ex = self.workdir / protocol.EXCHANGE_DIR
    ex.mkdir(parents=True)
    os.symlink(self.victim_dir, ex / protocol.STATE_NAME)
    result = evaluate.evaluate_test(SEED, PROFILE, [0], workdir=self.workdir,
                                    runner=FakeWorker(lambda ex, payload: None))
    self.assertEqual(result.status, "error")
    self.assertRegex(result.reason, r"^error: exchange/state is not a plain directory")


if __name__ == "__main__":
  absltest.main()
