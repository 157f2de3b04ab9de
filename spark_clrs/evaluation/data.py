"""CLRS data sampled on the fly: training streams and fixed evaluation sets.

No dataset download and no network: every batch comes from ``clrs.build_sampler``.

* Training follows CLRS's ``examples/run.py``: one infinite sampler per training size,
  seeded from the training seed, edge probabilities p = (0.1, ..., 0.9) (halved for
  articulation_points, bridges, mst_kruskal and bipartite_matching), randomised ``pos``
  inputs, ``pred_h`` moved to inputs for the algorithms CLRS lists, permutation pointers
  enforced; steps cycle through the sizes.
* Evaluation sets are generated once, in full, from their own seed and cut in order into
  equal batches, as CLRS's ``dataset.py`` + ``tfds.batch`` do. ``test`` and ``ood_val``
  are drawn like the official test split (sampler defaults, ``pos`` not randomised):
  ``clrs.build_sampler(algorithm, seed=3, num_samples=32, length=64)`` is exactly CLRS's
  test split, and OOD-val is an independent draw of that distribution from another seed.
  ``val`` is drawn like CLRS's validation data (training p, randomised ``pos``).
  pred-as-input and permutation processing apply to every set, as in ``run.py``.
* Sets of the same graph size are padded to a common number of hint steps. Padding is
  exact: the network freezes each sample's outputs after its own length (CLRS pads every
  batch to its longest sample the same way), and it means one predict compile per size.
* What a jailed trainer gets of an evaluation set (SPEC §9) is :func:`export_features`:
  the inputs, the lengths and the hints with every step after the first zeroed
  (:func:`blank_hints`). CLRS's ``nets.Net`` takes its number of message-passing steps
  from the hints' time dimension, so that dimension is kept; at prediction time
  (``repred=True``) it reads only step 0 of the hints (later steps are its own decoded
  predictions, and with hints not encoded it reads none), so the predictions are
  bit-identical to those from the full set (tested). The outputs never leave the
  trusted process; the jail gets only their names, types and shapes.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import chex
import clrs
import numpy as np

from spark_clrs.evaluation import profiles as profiles_lib

# CLRS's examples/run.py: algorithms whose fixed pred_h hint becomes an input.
PRED_AS_INPUT_ALGOS = frozenset({
    "binary_search", "minimum", "find_maximum_subarray", "find_maximum_subarray_kadane",
    "matrix_chain_order", "lcs_length", "optimal_bst", "activity_selector",
    "task_scheduling", "naive_string_matcher", "kmp_matcher", "jarvis_march"})
# CLRS's examples/run.py: sparser training graphs, else trajectories get very long.
HALF_P_ALGOS = frozenset({"articulation_points", "bridges", "mst_kruskal",
                          "bipartite_matching"})
STRING_MATCHERS = frozenset({"naive_string_matcher", "kmp_matcher"})
TRAIN_P = tuple(0.1 + 0.1 * i for i in range(9))
LENGTH_NEEDLE = -8  # run.py's default: needle length uniform in 1..8 for string matchers.

EVAL_SET_NAMES = ("ood_val", "test", "val")


@dataclasses.dataclass(frozen=True)
class EvalSetConfig:
  """How one fixed evaluation set is drawn.

  Attributes:
    name: ``ood_val``, ``test`` or ``val``.
    length: graph size n.
    num_samples: number of graphs.
    seed: sampler seed (the whole set is a function of it).
    train_distribution: True = CLRS validation style (training p, random ``pos``);
      False = CLRS test-split style (sampler defaults, ``pos`` as generated).
  """

  name: str
  length: int
  num_samples: int
  seed: int
  train_distribution: bool


@dataclasses.dataclass
class EvalSet:
  """A fixed evaluation set.

  Attributes:
    config: how it was drawn.
    batches: ``num_samples // batch_size`` Feedback batches of equal shapes: inputs
      [B, n, ...], hints [T, B, n, ...], outputs [B, n, ...].
  """

  config: EvalSetConfig
  batches: list[clrs.Feedback]

  @property
  def num_samples(self) -> int:
    return sum(len(b.features.lengths) for b in self.batches)

  @property
  def hint_steps(self) -> int:
    return int(self.batches[0].features.hints[0].data.shape[0])


def train_sampler_kwargs(algorithm: str) -> dict[str, object]:
  """Sampler kwargs CLRS's run.py uses for training and validation data."""
  p = TRAIN_P
  if algorithm in HALF_P_ALGOS:
    p = tuple(x / 2 for x in p)
  kwargs: dict[str, object] = {"p": p}
  if algorithm in STRING_MATCHERS:
    kwargs["length_needle"] = LENGTH_NEEDLE
  return kwargs


def _postprocess(algorithm: str, spec: clrs.Spec, batches: Iterator[clrs.Feedback],
                 pos_rng: np.random.RandomState | None
                 ) -> tuple[clrs.Spec, Iterator[clrs.Feedback]]:
  """Applies run.py's random-pos, pred-as-input and permutation processing."""
  if pos_rng is not None:
    batches = clrs.process_random_pos(batches, pos_rng)
  if algorithm in PRED_AS_INPUT_ALGOS:
    spec, batches = clrs.process_pred_as_input(spec, batches)
  spec, batches = clrs.process_permutations(spec, batches, True)
  return spec, batches


def _batches(sampler: clrs.Sampler, batch_size: int) -> Iterator[clrs.Feedback]:
  while True:
    yield sampler.next(batch_size)


def train_lengths_for(algorithm: str, lengths: tuple[int, ...]) -> tuple[int, ...]:
  """Training sizes after run.py's rule for string matchers (haystack = 5/4 of max)."""
  if algorithm in STRING_MATCHERS:
    return ((max(lengths) * 5) // 4,)
  return tuple(lengths)


def make_train_stream(algorithm: str, lengths: tuple[int, ...], batch_size: int,
                      seed: int) -> tuple[clrs.Spec, Iterator[clrs.Feedback]]:
  """An infinite stream of training batches cycling through ``lengths``.

  Seeding follows run.py: ``rng = RandomState(seed)`` draws each sampler's seed and then
  randomises ``pos``. Each sampler pads hints to the longest of 1000 pre-drawn samples,
  so every batch of one size has the same shape (one compile per size).

  Returns:
    The processed spec and an iterator of Feedback with inputs [B, n, ...], hints
    [T, B, n, ...], outputs [B, n, ...], lengths [B].
  """
  profiles_lib.check_algorithm(algorithm)
  rng = np.random.RandomState(seed)
  streams = []
  spec = None
  for length in train_lengths_for(algorithm, lengths):
    sampler, raw_spec = clrs.build_sampler(
        algorithm, num_samples=-1, length=length, seed=rng.randint(2**32),
        **train_sampler_kwargs(algorithm))
    spec, stream = _postprocess(algorithm, raw_spec, _batches(sampler, batch_size), rng)
    streams.append(stream)

  def cycle() -> Iterator[clrs.Feedback]:
    while True:
      for stream in streams:
        yield next(stream)

  return spec, cycle()


def _slice_feedback(full: clrs.Feedback, start: int, stop: int) -> clrs.Feedback:
  """Samples [start, stop) of a whole-dataset Feedback (hints are time-major)."""
  def cut(dps, axis):
    return tuple(clrs.DataPoint(dp.name, dp.location, dp.type_,
                                np.take(dp.data, np.arange(start, stop), axis=axis))
                 for dp in dps)
  features = full.features
  return clrs.Feedback(
      clrs.Features(cut(features.inputs, 0), cut(features.hints, 1),
                    features.lengths[start:stop]),
      cut(full.outputs, 0))


def pad_hint_steps(feedback: clrs.Feedback, steps: int) -> clrs.Feedback:
  """Zero-pads every hint of ``feedback`` from [T, B, ...] to [steps, B, ...]."""
  def pad(dp):
    extra = steps - dp.data.shape[0]
    if extra < 0:
      raise ValueError(f"cannot pad hint {dp.name} with {dp.data.shape[0]} steps to {steps}")
    widths = [(0, extra)] + [(0, 0)] * (dp.data.ndim - 1)
    return clrs.DataPoint(dp.name, dp.location, dp.type_, np.pad(dp.data, widths))
  hints = tuple(pad(dp) for dp in feedback.features.hints)
  return feedback._replace(features=feedback.features._replace(hints=hints))


def build_eval_set(algorithm: str, config: EvalSetConfig,
                   batch_size: int) -> tuple[clrs.Spec, EvalSet]:
  """Draws ``config`` in full and cuts it, in order, into batches of ``batch_size``."""
  profiles_lib.check_algorithm(algorithm)
  if config.num_samples % batch_size:
    raise ValueError(f"{config.name}: {config.num_samples} samples is not a multiple of "
                     f"the evaluation batch size {batch_size}")
  kwargs = train_sampler_kwargs(algorithm) if config.train_distribution else {}
  sampler, raw_spec = clrs.build_sampler(
      algorithm, num_samples=config.num_samples, length=config.length, seed=config.seed,
      **kwargs)
  full = sampler.next()  # The whole set, hints padded to its longest trajectory.
  raw = iter([_slice_feedback(full, i, i + batch_size)
              for i in range(0, config.num_samples, batch_size)])
  # Its own position stream, independent of the sampler's RandomState(seed).
  pos_rng = np.random.RandomState([config.seed, 1]) if config.train_distribution else None
  spec, stream = _postprocess(algorithm, raw_spec, raw, pos_rng)
  batches = [next(stream) for _ in range(config.num_samples // batch_size)]
  chex.assert_shape([b.features.lengths for b in batches], (batch_size,))
  chex.assert_equal_shape([b.features.hints[0].data for b in batches])
  return spec, EvalSet(config=config, batches=batches)


def eval_set_configs(profile: profiles_lib.EvalProfile) -> dict[str, EvalSetConfig]:
  """The profile's ``ood_val``, ``test`` and ``val`` set descriptions."""
  mult = 1
  if profile.scale_eval_samples:
    mult = clrs.CLRS_30_ALGS_SETTINGS[profile.algorithm]["num_samples_multiplier"]
  return {
      "ood_val": EvalSetConfig("ood_val", profile.ood_val_length,
                               profile.ood_val_samples * mult, profile.ood_val_seed, False),
      "test": EvalSetConfig("test", profile.test_length, profile.test_samples * mult,
                            profile.test_seed, False),
      "val": EvalSetConfig("val", profile.val_length, profile.val_samples * mult,
                           profile.val_seed, True),
  }


def build_eval_sets(profile: profiles_lib.EvalProfile
                    ) -> tuple[clrs.Spec, dict[str, EvalSet]]:
  """Draws the profile's evaluation sets; sets of equal size share one hint length.

  Returns:
    The processed spec (the same for training data) and the sets by name.
  """
  sets = {}
  for name, config in eval_set_configs(profile).items():
    spec, sets[name] = build_eval_set(profile.algorithm, config, profile.eval_batch_size)
  for length in {s.config.length for s in sets.values()}:
    same = [s for s in sets.values() if s.config.length == length]
    steps = max(s.hint_steps for s in same)
    for s in same:
      s.batches = [pad_hint_steps(b, steps) for b in s.batches]
  return spec, sets


_CACHE: dict[tuple, tuple[clrs.Spec, dict[str, EvalSet]]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def cached_eval_sets(profile: profiles_lib.EvalProfile
                     ) -> tuple[clrs.Spec, dict[str, EvalSet]]:
  """:func:`build_eval_sets`, cached per set definition (do not mutate the result).

  The sets are a function of the algorithm, their configs and the batch size; sampling
  the spark sets takes ~2 s, so concurrent evaluations of one run share one copy.
  """
  configs = eval_set_configs(profile)
  key = (profile.algorithm, profile.eval_batch_size,
         tuple(dataclasses.astuple(c) for c in configs.values()))
  with _CACHE_LOCK:
    if key not in _CACHE:
      if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
      _CACHE[key] = build_eval_sets(profile)
    return _CACHE[key]


def count_shared_samples(a: EvalSet, b: EvalSet) -> int:
  """Number of samples of ``a`` whose inputs equal those of some sample of ``b``."""
  def keys(s: EvalSet) -> list[bytes]:
    out = []
    for batch in s.batches:
      for i in range(len(batch.features.lengths)):
        out.append(b"".join(np.ascontiguousarray(dp.data[i]).tobytes()
                            for dp in batch.features.inputs if dp.name != "pos"))
    return out
  other = set(keys(b))
  return sum(k in other for k in keys(a))


def blank_hints(features: clrs.Features) -> clrs.Features:
  """``features`` with every hint step after the first set to zero (same shapes).

  Later hint steps give the answer away (e.g. DFS's last ``pi_h`` is its output); the
  time dimension stays because ``nets.Net`` derives its step count from it.
  """
  def blank(dp: clrs.DataPoint) -> clrs.DataPoint:
    data = np.zeros_like(dp.data)
    data[:1] = dp.data[:1]
    return clrs.DataPoint(dp.name, dp.location, dp.type_, data)
  return features._replace(hints=tuple(blank(dp) for dp in features.hints))


def _describe(dps: Sequence[clrs.DataPoint]) -> list[list[str]]:
  return [[dp.name, str(dp.location), str(dp.type_)] for dp in dps]


def export_features(sets: Mapping[str, EvalSet], spec: clrs.Spec
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """What a jailed trainer may see of ``sets``: arrays (for an ``.npz``) and a manifest.

  Arrays are named ``SET|BATCH|inputs|NAME``, ``SET|BATCH|hints|NAME`` (hints blanked by
  :func:`blank_hints`) and ``SET|BATCH|lengths``. The JSON-able manifest holds the spec
  and, per set, the number of batches, each DataPoint's name/location/type and the
  outputs' names, types, per-batch shapes and dtypes (never their values).
  """
  arrays: dict[str, np.ndarray] = {}
  manifest: dict[str, Any] = {
      "spec": {name: [str(x) for x in value] for name, value in spec.items()}, "sets": {}}
  for set_name, eval_set in sets.items():
    first = eval_set.batches[0]
    manifest["sets"][set_name] = {
        "batches": len(eval_set.batches),
        "inputs": _describe(first.features.inputs),
        "hints": _describe(first.features.hints),
        "outputs": [[dp.name, str(dp.location), str(dp.type_), list(dp.data.shape),
                     str(dp.data.dtype)] for dp in first.outputs],
    }
    for i, batch in enumerate(eval_set.batches):
      features = blank_hints(batch.features)
      for dp in features.inputs:
        arrays[f"{set_name}|{i}|inputs|{dp.name}"] = np.asarray(dp.data)
      for dp in features.hints:
        arrays[f"{set_name}|{i}|hints|{dp.name}"] = np.asarray(dp.data)
      arrays[f"{set_name}|{i}|lengths"] = np.asarray(features.lengths)
  return arrays, manifest


def import_features(arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]
                    ) -> tuple[clrs.Spec, dict[str, list[clrs.Features]]]:
  """Inverse of :func:`export_features` (jail side): the spec and each set's batches."""
  spec = {name: tuple(value) for name, value in manifest["spec"].items()}

  def dps(prefix: str, described: Sequence[Sequence[str]]) -> tuple[clrs.DataPoint, ...]:
    return tuple(clrs.DataPoint(name, loc, typ, arrays[f"{prefix}|{name}"])
                 for name, loc, typ in described)

  sets: dict[str, list[clrs.Features]] = {}
  for set_name, info in manifest["sets"].items():
    sets[set_name] = [
        clrs.Features(dps(f"{set_name}|{i}|inputs", info["inputs"]),
                      dps(f"{set_name}|{i}|hints", info["hints"]),
                      arrays[f"{set_name}|{i}|lengths"])
        for i in range(info["batches"])]
  return spec, sets


def placeholder_feedback(features: clrs.Features, manifest_set: Mapping[str, Any]
                         ) -> clrs.Feedback:
  """A Feedback with zero outputs of the right shapes: enough to size a BaselineModel
  (it reads only the outputs' last dimension), useless for scoring."""
  outputs = tuple(clrs.DataPoint(name, loc, typ, np.zeros(shape, dtype=np.dtype(dtype)))
                  for name, loc, typ, shape, dtype in manifest_set["outputs"])
  return clrs.Feedback(features, outputs)


__all__ = ["EVAL_SET_NAMES", "EvalSet", "EvalSetConfig", "blank_hints", "build_eval_set",
           "build_eval_sets", "cached_eval_sets", "count_shared_samples", "eval_set_configs",
           "export_features", "import_features", "make_train_stream", "pad_hint_steps",
           "placeholder_feedback", "train_sampler_kwargs"]
