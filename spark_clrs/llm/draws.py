"""Which model answers a request, and which sample of it this is: seeded, resumable counters.

A role's model is one name, or a weighted mixture (``--llm_models=a:0.7,b:0.3``) drawn
with a generator seeded by the run's seed, the role, the messages and how often this
request was drawn before; and identical requests get consecutive sample indexes. Both
counters can be saved and restored, so a proposal asked again after a provider failure
draws the same models and samples a resumed run would (and hits the reply cache).
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import threading
from collections.abc import Mapping, Sequence

from spark_clrs.llm.settings import LLMConfig

State = tuple[collections.Counter[str], collections.Counter[str]]


class Draws:
  """The sample and mixture-draw counters of one client (thread-safe)."""

  def __init__(self, config: LLMConfig):
    self.config = config
    self._lock = threading.Lock()
    self._samples: collections.Counter[str] = collections.Counter()
    self._draws: collections.Counter[str] = collections.Counter()

  def save(self) -> State:
    with self._lock:
      return collections.Counter(self._samples), collections.Counter(self._draws)

  def load(self, state: State) -> None:
    with self._lock:
      self._samples, self._draws = collections.Counter(state[0]), collections.Counter(state[1])

  def next_sample(self, base_key: str) -> int:
    """The index of this request among identical ones (0 for the first)."""
    with self._lock:
      sample = self._samples[base_key]
      self._samples[base_key] += 1
    return sample

  def model(self, role: str, messages: Sequence[Mapping[str, str]]) -> str:
    """The role's model; a mixture is drawn with a generator seeded by the run and request."""
    choices = self.config.models_for(role)
    if len(choices) == 1:
      return choices[0][0]
    blob = json.dumps([self.config.seed, role, [dict(m) for m in messages]], sort_keys=True)
    digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    with self._lock:
      n = self._draws[digest]
      self._draws[digest] += 1
    rng = random.Random(f"{digest}:{n}")
    names, weights = zip(*choices, strict=True)
    return rng.choices(names, weights=weights)[0]


__all__ = ["Draws", "State"]
