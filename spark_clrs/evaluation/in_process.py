"""An evaluation in this process, with no jail: for trusted programs only.

``python -m spark_clrs.evaluate --in_process --unsafe_no_jail`` and the tests' reference
numbers use it: the same :class:`~spark_clrs.evaluation.trainer.Trainer` and the same
scoring as the jailed path (:mod:`spark_clrs.evaluation.evaluate`), scored in memory on
the full evaluation sets, so the two give the same numbers for the same seeds (tested).
Nothing here protects the host from the program it runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import clrs
import jax
import numpy as np
from absl import logging

from spark_clrs.evaluation import data as data_lib
from spark_clrs.evaluation import macs as macs_lib
from spark_clrs.evaluation import profiles as profiles_lib
from spark_clrs.evaluation import protocol, scoring
from spark_clrs.evaluation.timing import Phases, timing_metrics
from spark_clrs.evaluation.trainer import (
  Trainer,
  configure_jax,
  finite_or_none,
  processor_params,
)
from spark_clrs.isolation import sandbox


def _concat(trees: list[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *x: np.concatenate(x, axis=0), *trees)


def score(model: clrs.models.BaselineModel, eval_set: data_lib.EvalSet,
          key: jax.Array) -> float:
  """``clrs.evaluate`` of CLRS's own ``model.predict`` on a whole evaluation set.

  The reference the trusted path is tested against (same keys, same numbers); the
  evaluation itself uses the trainer's predictor and :mod:`scoring`.
  """
  outputs, preds = [], []
  for batch in eval_set.batches:
    key, sub = jax.random.split(key)
    pred, _ = model.predict(sub, batch.features)
    preds.append(jax.device_get(pred))
    outputs.append(batch.outputs)
  return float(clrs.evaluate(_concat(outputs), _concat(preds))["score"])


def _as_datapoints(preds: dict[str, Any], outputs: Sequence[clrs.DataPoint]
                   ) -> dict[str, clrs.DataPoint]:
  return {dp.name: clrs.DataPoint(dp.name, dp.location, dp.type_, preds[dp.name])
          for dp in outputs}


def evaluate_program(program_path: str, profile: profiles_lib.EvalProfile,
                     seeds: Sequence[int], *, visible_device: str | None = None
                     ) -> dict[str, Any]:
  """Trains ``program_path``'s processor under ``profile`` once per seed and scores it,
  all in this process (trusted programs only: nothing is jailed).

  Args:
    program_path: a program file or a seed name (see ``processors.load``).
    profile: the evaluation protocol.
    seeds: training seeds (>= 1); accuracies are reported as mean, std and per seed.
    visible_device: optional accelerator id to restrict the process to.

  Returns:
    JSON-able metrics: ``ood_val_acc`` (fitness), ``ood_acc`` (test), ``val_acc``, each
    with ``_std``, ``_per_seed``, ``_ci`` (95 % bootstrap half-width over graphs, of
    the mean), ``_ci_per_seed`` and ``_per_graph``; ``param_count`` (whole model),
    ``processor_param_count``, ``macs`` at ``macs_nb_nodes`` and ``macs_source``;
    ``compile_seconds``, ``init_seconds``, ``train_seconds``, ``step_seconds``,
    ``eval_seconds`` (and ``eval_seconds_by_set``), ``data_seconds``, ``load_seconds``,
    ``total_seconds``; ``cpu_seconds`` (user + system of this process so far: robust to
    other load) and ``train_cpu_seconds`` (of the training loop, compilation excluded);
    ``peak_rss_mb``, ``peak_device_mb`` (accelerators only, else None),
    ``compile_seconds_by_phase``; the resolved profile, seeds, final losses, device and
    whether ``fast_compile`` took effect.

  Raises:
    processors.ProgramLoadError: the program does not load or has no factory.
    ValueError: bad seeds, or a processor whose parameters CLRS would not train.
  """
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError("no training seeds given; pass at least one, e.g. seeds=[0]")
  phases = Phases()
  fast_compile = configure_jax(visible_device, profile.fast_compile)
  sandbox.report_progress(stage="data")
  spec, eval_sets = phases.run("data", lambda: data_lib.build_eval_sets(profile))
  dummy = eval_sets["val"].batches[0]
  trainer = Trainer(str(program_path), profile, spec, dummy, phases, first_seed=seeds[0],
                    count_cost=True)
  truths = {name: scoring.truth(s) for name, s in eval_sets.items()}
  features = {name: [b.features for b in s.batches] for name, s in eval_sets.items()}
  preds: dict[str, list[dict[str, clrs.DataPoint]]] = {name: [] for name in eval_sets}
  losses = []
  for seed in seeds:
    best: dict[str, Any] = {"val": -math.inf, "params": None}

    def on_eval(step: int, key: jax.Array, seed: int = seed, best: dict = best) -> None:
      values, _ = trainer.predict(features["val"], key, "val")
      val = scoring.score(truths["val"], _as_datapoints(values, truths["val"]))
      logging.info("seed %d step %d val %.4f", seed, step, val)
      if val > best["val"] or best["params"] is None:
        best["val"], best["params"] = val, trainer.model.params

    loss, keys = trainer.train(seed, on_eval)
    losses.append(finite_or_none(loss))
    if best["params"] is not None:
      trainer.model.params = best["params"]
    sandbox.report_progress(stage="eval", seed=seed)
    for name in protocol.EVAL_SET_NAMES:
      values, _ = trainer.predict(features[name], keys[name], name)
      preds[name].append(_as_datapoints(values, truths[name]))
  metrics: dict[str, Any] = {"program": str(program_path), "profile": profile.name,
                             "algorithm": profile.algorithm, "seeds": seeds}
  for key, name in protocol.SET_FOR_KEY.items():
    metrics.update(scoring.accuracy_metrics(key, truths[name], preds[name]))
  metrics["final_loss_per_seed"] = losses
  params = trainer.model.params
  assert trainer.cost is not None
  metrics.update(param_count=macs_lib.param_count(params),
                 processor_param_count=macs_lib.param_count(processor_params(params)),
                 macs=trainer.cost.macs, macs_nb_nodes=trainer.cost.nb_nodes,
                 macs_source="in_process_jaxpr")
  metrics.update(timing_metrics(phases, profile.train_steps * len(seeds)))
  metrics["fast_compile"] = fast_compile
  metrics["profile_config"] = profile.to_dict()
  return metrics


__all__ = ["evaluate_program", "score"]
