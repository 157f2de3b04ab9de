"""When proposals are made and evaluations run: one at a time, in generations, or asynchronously.

With ``--parallel_evaluations=N > 1`` N evaluations are in flight, each checked and trained
from its own thread; only the driver thread proposes and writes the archive.

* Asynchronous (the default): the next proposal is made while the others train and is
  queued, so a slot that frees starts at once, and results are archived as they finish.
* ``--synchronous`` (and N = 1): generations of N proposals made from the same archive state
  (each iteration's RNG is seeded by ``(seed, iteration)``), evaluated in parallel and
  archived in iteration order, so a given seed and N give the same run however the
  evaluations interleave.

Candidates left pending by an earlier invocation (a crash) are evaluated first.
"""

from __future__ import annotations

import concurrent.futures
import math
import queue
import threading
from collections.abc import Callable
from typing import Any

from spark_clrs import config as config_lib
from spark_clrs.search import archive as archive_lib
from spark_clrs.search.archive_db import PENDING_STATUSES, Candidate
from spark_clrs.search.dispatch import Evaluations, Outcome
from spark_clrs.search.events import EventLog
from spark_clrs.search.proposal import Proposals
from spark_clrs.search.spend import Spend

SEED_ID = 0


class Scheduler:
  """Drives proposals and evaluations of one run; ``record`` archives an outcome."""

  def __init__(self, config: config_lib.SearchConfig, archive: archive_lib.Archive,
               proposals: Proposals, evaluations: Evaluations, spend: Spend, log: EventLog,
               record: Callable[[Candidate, Outcome], None]):
    self.config = config
    self.archive = archive
    self.proposals = proposals
    self.evaluations = evaluations
    self.spend = spend
    self.log = log
    self.record = record

  def run(self, next_id: int) -> None:
    """Proposals ``next_id`` .. ``--iterations`` (or until proposing stops), all evaluated."""
    if self.config.parallel_evaluations > 1 and not self.config.synchronous:
      self._asynchronous(next_id)
    else:
      self._generations(next_id)

  def start(self, c: Candidate) -> str | None:
    """Marks ``c`` as evaluating; its parent's text (for the scope check)."""
    parent = self.archive.get(c.parent_id) if c.parent_id is not None else None
    self.archive.mark_evaluating(c.id)
    self.log.event("evaluating", c.id)
    return parent.code if parent is not None else None

  def process(self, batch: list[Candidate]) -> None:
    """Checks and evaluates candidates (in parallel threads), archived in id order."""
    if not batch:
      return
    parents = {c.id: self.start(c) for c in batch}
    workers = min(self.config.parallel_evaluations, len(batch))
    if workers == 1:
      for c in batch:
        self.record(c, self.evaluations.safe_evaluate(c, parents[c.id]))
      return
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      futures = [(c, pool.submit(self.evaluations.safe_evaluate, c, parents[c.id]))
                 for c in batch]
      for c, future in futures:
        self.record(c, future.result())

  def _generations(self, next_id: int) -> None:
    """Generations of N proposals, evaluated in parallel, archived in iteration order."""
    cfg = self.config
    n = cfg.parallel_evaluations
    # Finish the generation that was interrupted, then the candidates left in flight.
    generation_end = min(cfg.iterations, SEED_ID + n * math.ceil((next_id - 1) / n))
    for k in range(next_id, generation_end + 1):
      self.proposals.propose(k)
    self.process(self.archive.pending())
    k = max(next_id, generation_end + 1)
    while k <= cfg.iterations and not self.spend.exhausted():
      batch = list(range(k, min(k + n, cfg.iterations + 1)))
      for j in batch:
        self.proposals.propose(j)
      self.process([c for c in (self.archive.get(j) for j in batch)
                    if c is not None and c.status in PENDING_STATUSES])
      k = batch[-1] + 1

  def _asynchronous(self, next_id: int) -> None:
    """N evaluations in flight and one proposal queued; results archived as they finish."""
    cfg = self.config
    n = cfg.parallel_evaluations
    todo: queue.Queue = queue.Queue()
    done: queue.Queue = queue.Queue()
    stop = object()

    def evaluation_thread() -> None:
      while True:
        item = todo.get()
        if item is stop:
          return
        c, parent_text = item
        try:
          done.put((c, self.evaluations.safe_evaluate(c, parent_text)))
        except BaseException as e:  # e.g. KeyboardInterrupt: the driver re-raises it.
          done.put((c, e))

    threads = [threading.Thread(target=evaluation_thread, name=f"evaluation-{i}", daemon=True)
               for i in range(n)]
    for t in threads:
      t.start()
    queued = 0

    def enqueue(c: Candidate) -> None:
      nonlocal queued
      todo.put((c, self.start(c)))
      queued += 1

    def record(item: tuple[Candidate, Any]) -> None:
      nonlocal queued
      c, outcome = item
      queued -= 1
      if isinstance(outcome, BaseException):
        raise outcome
      self.record(c, outcome)

    try:
      for c in self.archive.pending():
        enqueue(c)
      k = next_id
      while (k <= cfg.iterations and self.spend.stop_reason is None) or queued:
        while True:  # Archive what finished, so that the next proposal sees it.
          try:
            record(done.get_nowait())
          except queue.Empty:
            break
        if k <= cfg.iterations and queued <= n and self.spend.stop_reason is None:
          self.proposals.propose(k)
          c = self.archive.get(k)
          if c is not None and c.status in PENDING_STATUSES:
            enqueue(c)
          k += 1
        elif queued:
          record(done.get())
    finally:
      while True:  # Nothing queued starts any more; running evaluations end with the executor.
        try:
          todo.get_nowait()
        except queue.Empty:
          break
      for _ in threads:
        todo.put(stop)
