"""What happened during a run, written as it happens (SPEC §5).

Every event goes to three places: the archive's ``events`` table, one JSON line in
``logs/events.jsonl`` and, when it carries a message, a line in ``logs/search.log`` and on
the console (above the progress bar, or as a plain line with the bar's figures).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from spark_clrs.search import progress, rundir
from spark_clrs.search.archive_db import ArchiveDB

LOGGER = "spark_clrs"


class EventLog:
  """Persists events to the archive, ``logs/events.jsonl`` and ``logs/search.log``."""

  def __init__(self, run: rundir.RunDir, db: ArchiveDB, bar: progress.Progress):
    self._db = db
    self._bar = bar
    self._events = open(run.events_path, "a", encoding="utf-8")  # noqa: SIM115
    self._handler = logging.FileHandler(run.log_path, encoding="utf-8")
    self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    self._logger = logging.getLogger(LOGGER)
    self._logger.addHandler(self._handler)
    if self._logger.level == logging.NOTSET or self._logger.level > logging.INFO:
      self._logger.setLevel(logging.INFO)
    self._logger.propagate = False  # The console gets our own lines (or the bar) instead.

  def event(self, kind: str, candidate_id: int | None = None, message: str | None = None,
            **data: Any) -> None:
    """Records one event; ``message`` also goes to the text log and the console."""
    now = self._db.insert_event(kind, candidate_id, data)
    line = {"time": now, "kind": kind, "candidate_id": candidate_id, **data}
    self._events.write(json.dumps(line, default=str, sort_keys=True) + "\n")
    self._events.flush()
    if message:
      self.say(message)

  def say(self, message: str, level: int = logging.INFO) -> None:
    """One line to the text log and the console (no event row)."""
    self._logger.log(level, message)
    self._bar.message(message)

  def close(self) -> None:
    self._events.close()
    self._logger.removeHandler(self._handler)
    self._handler.close()
    self._logger.propagate = True
