"""SQLite storage of a run's archive: candidates, LLM calls, events, island state.

This module is only the storage layer (schema, rows, transactions) of the
archive; selection (islands, MAP-Elites, elites, sampling) lives in
archive.py. The database is an embedded SQLite file in WAL mode, written by
one process (the search driver) and readable by others (reports, notebooks)
while a search runs. Every write commits immediately, so a killed search
loses nothing it had recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
  id INTEGER PRIMARY KEY,            -- the iteration that proposed it; 0 is the seed
  parent_id INTEGER REFERENCES candidates(id),
  island INTEGER,
  strategy TEXT NOT NULL,
  scope TEXT,                        -- JSON list of factors, NULL when none was selected
  directive TEXT,
  decision TEXT NOT NULL,            -- JSON: router / bandit / proposer decisions
  code TEXT,                         -- program text, NULL when the proposer gave none
  changed_factors TEXT,              -- JSON list of factors whose body changed
  entangled INTEGER,                 -- 1 when the child changed text outside its scope
  status TEXT NOT NULL,              -- proposed | evaluating | evaluated | rejected | failed
  stage TEXT,                        -- where it stopped (a check stage, 'entangled', ...)
  reason TEXT,
  metrics TEXT,                      -- JSON of the evaluator's metrics
  fitness REAL,                      -- ood_val_acc; NULL unless evaluated
  features TEXT,                     -- JSON {feature dim: value}
  created_at REAL NOT NULL,
  finished_at REAL,
  comparison TEXT                    -- JSON: paired difference with the best so far (standing.py)
);
CREATE TABLE IF NOT EXISTS final_evaluations (
  candidate_id INTEGER NOT NULL REFERENCES candidates(id),
  seeds TEXT NOT NULL,               -- JSON list of the fresh training seeds
  status TEXT NOT NULL,              -- evaluating | evaluated | failed
  reason TEXT,
  metrics TEXT,                      -- JSON of the evaluator's metrics
  started_at REAL NOT NULL,
  finished_at REAL,
  PRIMARY KEY (candidate_id, seeds)
);
CREATE TABLE IF NOT EXISTS llm_calls (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  candidate_id INTEGER REFERENCES candidates(id),  -- NULL: an attempt a provider failure ended
  role TEXT NOT NULL,
  model TEXT,
  messages TEXT NOT NULL,            -- JSON list of chat messages
  reply TEXT,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cost REAL,                         -- USD; NULL when the model has no known price
  latency_s REAL NOT NULL,
  error TEXT,
  cached INTEGER NOT NULL,
  request_key TEXT,
  iteration INTEGER,                 -- the proposal it was made for (= candidate_id if recorded)
  finish_reason TEXT,
  attempts INTEGER,                  -- requests sent (retries and continuations included)
  sample INTEGER,
  error_kind TEXT,                   -- auth | not_found | connection | rate_limit | server | ...
  estimated INTEGER,                 -- 1: token counts are estimates (the offline provider)
  continuations INTEGER,
  context TEXT                       -- JSON: what the prompt builder dropped to fit the window
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  time REAL NOT NULL,
  kind TEXT NOT NULL,
  candidate_id INTEGER,
  data TEXT NOT NULL                 -- JSON
);
CREATE TABLE IF NOT EXISTS island_members (
  island INTEGER NOT NULL,
  candidate_id INTEGER NOT NULL REFERENCES candidates(id),
  PRIMARY KEY (island, candidate_id)
);
CREATE TABLE IF NOT EXISTS grid_cells (
  island INTEGER NOT NULL,
  cell TEXT NOT NULL,                -- JSON list of bin indices
  candidate_id INTEGER NOT NULL REFERENCES candidates(id),
  PRIMARY KEY (island, cell)
);
"""

STATUSES = ("proposed", "evaluating", "evaluated", "rejected", "failed")
PENDING_STATUSES = ("proposed", "evaluating")


def _dumps(value: Any) -> str:
  return json.dumps(value, sort_keys=True, default=_json_default, allow_nan=True)


def _json_default(value: Any) -> Any:
  if hasattr(value, "tolist"):
    return value.tolist()
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return dataclasses.asdict(value)
  return str(value)


def _loads(text: str | None, empty: Any = None) -> Any:
  return empty if text is None else json.loads(text)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One archived candidate (a row of the candidates table)."""

  id: int
  parent_id: int | None
  island: int | None
  strategy: str
  scope: tuple[str, ...] | None
  directive: str | None
  decision: dict[str, Any]
  code: str | None
  changed_factors: tuple[str, ...]
  entangled: bool | None
  status: str
  stage: str | None
  reason: str | None
  metrics: dict[str, Any]
  fitness: float | None
  features: dict[str, float]
  created_at: float
  finished_at: float | None
  comparison: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def is_proposal(self) -> bool:
    """False for the seed (candidate 0), which is evaluated but not proposed."""
    return self.parent_id is not None

  @property
  def can_be_parent(self) -> bool:
    return (self.status == "evaluated" and self.fitness is not None and
            math.isfinite(self.fitness))

  def to_row(self) -> dict[str, Any]:
    """A flat dict for tables and notebooks (code left out)."""
    row = {k: v for k, v in dataclasses.asdict(self).items() if k != "code"}
    row["scope"] = ",".join(self.scope) if self.scope else None
    row["changed_factors"] = ",".join(self.changed_factors)
    return row


# llm_calls columns added after schema 1, added to older archives on open.
_LLM_CALL_COLUMNS = (("iteration", "INTEGER"), ("finish_reason", "TEXT"), ("attempts", "INTEGER"),
                     ("sample", "INTEGER"), ("error_kind", "TEXT"), ("estimated", "INTEGER"),
                     ("continuations", "INTEGER"), ("context", "TEXT"))


def _migrate_llm_calls(conn: sqlite3.Connection) -> None:
  """Brings an older archive's llm_calls table to the current columns (rows kept).

  Old archives had ``candidate_id NOT NULL``; the table is rebuilt once so that the calls
  of a proposal attempt ended by a provider failure can be stored without a candidate.
  """
  info = {r["name"]: r for r in conn.execute("PRAGMA table_info(llm_calls)").fetchall()}
  missing = [(n, t) for n, t in _LLM_CALL_COLUMNS if n not in info]
  if not missing and not info["candidate_id"]["notnull"]:
    return
  conn.execute("BEGIN IMMEDIATE")
  try:
    for name, kind in missing:
      conn.execute(f"ALTER TABLE llm_calls ADD COLUMN {name} {kind}")
    if info["candidate_id"]["notnull"]:
      columns = [r["name"] for r in conn.execute("PRAGMA table_info(llm_calls)").fetchall()]
      create = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS llm_calls"):]
      create = create[:create.index(");") + 2].replace("llm_calls", "llm_calls_new", 1)
      conn.execute(create)
      names = ", ".join(columns)
      conn.execute(f"INSERT INTO llm_calls_new ({names}) SELECT {names} FROM llm_calls")
      conn.execute("DROP TABLE llm_calls")
      conn.execute("ALTER TABLE llm_calls_new RENAME TO llm_calls")
    conn.execute("UPDATE llm_calls SET iteration = candidate_id WHERE iteration IS NULL")
  except BaseException:
    conn.execute("ROLLBACK")
    raise
  conn.execute("COMMIT")


def _migrate_candidates(conn: sqlite3.Connection) -> None:
  """Adds the ``comparison`` column to an older archive's candidates table.

  Its rows get their comparisons when a search resumes them (standing.py replays the
  decisions); readers compute them on the fly until then.
  """
  names = {r["name"] for r in conn.execute("PRAGMA table_info(candidates)").fetchall()}
  if "comparison" not in names:
    conn.execute("ALTER TABLE candidates ADD COLUMN comparison TEXT")


def _candidate(row: sqlite3.Row) -> Candidate:
  scope = _loads(row["scope"])
  entangled = row["entangled"]
  return Candidate(
      id=row["id"], parent_id=row["parent_id"], island=row["island"], strategy=row["strategy"],
      scope=tuple(scope) if scope is not None else None, directive=row["directive"],
      decision=_loads(row["decision"], {}), code=row["code"],
      changed_factors=tuple(_loads(row["changed_factors"], [])),
      entangled=None if entangled is None else bool(entangled), status=row["status"],
      stage=row["stage"], reason=row["reason"], metrics=_loads(row["metrics"], {}),
      fitness=row["fitness"], features=_loads(row["features"], {}),
      created_at=row["created_at"], finished_at=row["finished_at"],
      comparison=_loads(row["comparison"], {}))


class ArchiveDB:
  """Rows and transactions of one archive.sqlite file."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)
    self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
    self._conn.row_factory = sqlite3.Row
    self._conn.execute("PRAGMA journal_mode=WAL")
    self._conn.execute("PRAGMA synchronous=NORMAL")
    self._conn.execute("PRAGMA foreign_keys=ON")
    self._conn.executescript(_SCHEMA)
    _migrate_llm_calls(self._conn)
    _migrate_candidates(self._conn)
    version = self.get_meta("schema_version")
    if version is None:
      self.set_meta("schema_version", SCHEMA_VERSION)
    elif version != SCHEMA_VERSION:
      raise ValueError(f"{self.path} has archive schema {version}, this spark_clrs writes "
                       f"{SCHEMA_VERSION}; use a new --output")

  def close(self) -> None:
    self._conn.close()

  @contextlib.contextmanager
  def transaction(self) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); nestable (inner ones join the outer)."""
    if self._conn.in_transaction:
      yield self._conn
      return
    self._conn.execute("BEGIN IMMEDIATE")
    try:
      yield self._conn
    except BaseException:
      self._conn.execute("ROLLBACK")
      raise
    self._conn.execute("COMMIT")

  # meta -------------------------------------------------------------------
  def get_meta(self, key: str, default: Any = None) -> Any:
    row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row["value"])

  def set_meta(self, key: str, value: Any) -> None:
    with self.transaction() as c:
      c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, _dumps(value)))

  # candidates -------------------------------------------------------------
  def insert_candidate(self, *, candidate_id: int, parent_id: int | None, island: int | None,
                       strategy: str, scope: Sequence[str] | None, directive: str | None,
                       decision: dict[str, Any], code: str | None,
                       changed_factors: Sequence[str] = (), entangled: bool | None = None,
                       status: str = "proposed", stage: str | None = None,
                       reason: str | None = None) -> None:
    """Inserts a new candidate; its id must not exist yet (ids are never reused)."""
    if status not in STATUSES:
      raise ValueError(f"status {status!r} is not one of {STATUSES}")
    with self.transaction() as c:
      c.execute(
          "INSERT INTO candidates(id, parent_id, island, strategy, scope, directive, decision, "
          "code, changed_factors, entangled, status, stage, reason, created_at) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
          (candidate_id, parent_id, island, strategy,
           None if scope is None else _dumps(list(scope)), directive, _dumps(decision), code,
           _dumps(list(changed_factors)), None if entangled is None else int(entangled), status,
           stage, reason, time.time()))

  def update_candidate(self, candidate_id: int, *, status: str, stage: str | None = None,
                       reason: str | None = None, metrics: dict[str, Any] | None = None,
                       fitness: float | None = None,
                       features: dict[str, float] | None = None) -> None:
    if status not in STATUSES:
      raise ValueError(f"status {status!r} is not one of {STATUSES}")
    # finished_at is the first time it finished (the recording order standing.py replays);
    # metrics added later (a deferred OOD-test) leave it alone.
    finished = None if status in PENDING_STATUSES else time.time()
    with self.transaction() as c:
      cursor = c.execute(
          "UPDATE candidates SET status = ?, stage = ?, reason = ?, metrics = ?, fitness = ?, "
          "features = ?, finished_at = CASE WHEN ? IS NULL THEN NULL "
          "ELSE COALESCE(finished_at, ?) END WHERE id = ?",
          (status, stage, reason, None if metrics is None else _dumps(metrics), fitness,
           None if features is None else _dumps(features), finished, finished, candidate_id))
      if cursor.rowcount != 1:
        raise KeyError(f"no candidate {candidate_id} in {self.path}")

  def get(self, candidate_id: int) -> Candidate | None:
    row = self._conn.execute("SELECT * FROM candidates WHERE id = ?", (candidate_id,)).fetchone()
    return None if row is None else _candidate(row)

  def candidates(self, where: str = "1", params: Sequence[Any] = (),
                 order: str = "id") -> list[Candidate]:
    rows = self._conn.execute(f"SELECT * FROM candidates WHERE {where} ORDER BY {order}",
                              tuple(params)).fetchall()
    return [_candidate(r) for r in rows]

  def set_comparison(self, candidate_id: int, comparison: dict[str, Any]) -> None:
    """Stores a candidate's paired comparison with the best so far (decided once)."""
    with self.transaction() as c:
      c.execute("UPDATE candidates SET comparison = ? WHERE id = ?",
                (_dumps(comparison), candidate_id))

  def max_candidate_id(self) -> int | None:
    return self._conn.execute("SELECT MAX(id) AS m FROM candidates").fetchone()["m"]

  # final re-evaluations ---------------------------------------------
  def final_evaluations(self) -> list[dict[str, Any]]:
    """Every re-evaluation with fresh seeds: candidate_id, seeds, status, reason, metrics."""
    rows = self._conn.execute("SELECT * FROM final_evaluations ORDER BY started_at, "
                              "candidate_id").fetchall()
    return [dict(r, seeds=json.loads(r["seeds"]), metrics=_loads(r["metrics"], {}))
            for r in rows]

  def start_final_evaluation(self, candidate_id: int, seeds: Sequence[int]) -> None:
    """Marks a re-evaluation as running (a crash leaves it so; it is run again)."""
    with self.transaction() as c:
      c.execute("INSERT OR REPLACE INTO final_evaluations(candidate_id, seeds, status, "
                "started_at) VALUES (?, ?, 'evaluating', ?)",
                (candidate_id, _dumps(list(seeds)), time.time()))

  def finish_final_evaluation(self, candidate_id: int, seeds: Sequence[int], status: str,
                              reason: str, metrics: dict[str, Any]) -> None:
    with self.transaction() as c:
      c.execute("UPDATE final_evaluations SET status = ?, reason = ?, metrics = ?, "
                "finished_at = ? WHERE candidate_id = ? AND seeds = ?",
                (status, reason, _dumps(metrics), time.time(), candidate_id,
                 _dumps(list(seeds))))

  # LLM calls and events ---------------------------------------------------
  def insert_llm_call(self, candidate_id: int | None, record: dict[str, Any],
                      iteration: int | None = None) -> None:
    """Stores one LLM call; ``candidate_id=None`` for an attempt ended by a provider failure."""
    context = record.get("context")
    with self.transaction() as c:
      c.execute(
          "INSERT INTO llm_calls(candidate_id, role, model, messages, reply, prompt_tokens, "
          "completion_tokens, cost, latency_s, error, cached, request_key, iteration, "
          "finish_reason, attempts, sample, error_kind, estimated, continuations, context) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
          (candidate_id, record.get("role", ""), record.get("model"),
           _dumps(record.get("messages", [])), record.get("reply"),
           int(record.get("prompt_tokens") or 0), int(record.get("completion_tokens") or 0),
           None if record.get("cost") is None else float(record["cost"]),
           float(record.get("latency_s") or 0.0),
           record.get("error"), int(bool(record.get("cached"))), record.get("request_key"),
           candidate_id if iteration is None else iteration, record.get("finish_reason"),
           record.get("attempts"), record.get("sample"), record.get("error_kind"),
           int(bool(record.get("estimated"))), record.get("continuations"),
           None if not context else _dumps(context)))

  def llm_calls(self, candidate_id: int | None = None) -> list[dict[str, Any]]:
    """Every stored call (those of failed attempts too, ``candidate_id`` None), or one candidate's."""
    if candidate_id is None:
      rows = self._conn.execute("SELECT * FROM llm_calls ORDER BY id").fetchall()
    else:
      rows = self._conn.execute("SELECT * FROM llm_calls WHERE candidate_id = ? ORDER BY id",
                                (candidate_id,)).fetchall()
    out = []
    for r in rows:
      d = dict(r)
      d["messages"] = json.loads(d["messages"])
      d["cached"] = bool(d["cached"])
      d["estimated"] = bool(d.get("estimated"))
      d["context"] = _loads(d.get("context"))
      out.append(d)
    return out

  def llm_usage(self) -> tuple[int, float]:
    """(tokens, USD) of every LLM request sent: cached replies left out, estimates kept.

    What ``--budget=tokens|cost`` counts; the offline provider's token counts
    are estimates, so an offline comparison can be matched by tokens too.
    """
    row = self._conn.execute(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS t, "
        "COALESCE(SUM(cost), 0.0) AS c FROM llm_calls WHERE cached = 0").fetchone()
    return int(row["t"]), float(row["c"])

  def insert_event(self, kind: str, candidate_id: int | None, data: dict[str, Any]) -> float:
    now = time.time()
    with self.transaction() as c:
      c.execute("INSERT INTO events(time, kind, candidate_id, data) VALUES (?, ?, ?, ?)",
                (now, kind, candidate_id, _dumps(data)))
    return now

  def events(self, kind: str | None = None) -> list[dict[str, Any]]:
    query, params = "SELECT * FROM events", ()
    if kind is not None:
      query, params = query + " WHERE kind = ?", (kind,)
    rows = self._conn.execute(query + " ORDER BY id", params).fetchall()
    return [dict(r, data=json.loads(r["data"])) for r in rows]

  # island state -----------------------------------------------------------
  def island_member_ids(self, island: int) -> list[int]:
    rows = self._conn.execute(
        "SELECT candidate_id FROM island_members WHERE island = ? ORDER BY candidate_id",
        (island,)).fetchall()
    return [r["candidate_id"] for r in rows]

  def add_member(self, island: int, candidate_id: int) -> None:
    with self.transaction() as c:
      c.execute("INSERT OR IGNORE INTO island_members(island, candidate_id) VALUES (?, ?)",
                (island, candidate_id))

  def remove_member(self, island: int, candidate_id: int) -> None:
    with self.transaction() as c:
      c.execute("DELETE FROM island_members WHERE island = ? AND candidate_id = ?",
                (island, candidate_id))

  def grid(self, island: int) -> dict[tuple[int, ...], int]:
    rows = self._conn.execute("SELECT cell, candidate_id FROM grid_cells WHERE island = ?",
                              (island,)).fetchall()
    return {tuple(json.loads(r["cell"])): r["candidate_id"] for r in rows}

  def set_cell(self, island: int, cell: Sequence[int], candidate_id: int) -> None:
    with self.transaction() as c:
      c.execute("INSERT OR REPLACE INTO grid_cells(island, cell, candidate_id) VALUES (?, ?, ?)",
                (island, json.dumps(list(cell)), candidate_id))

  def delete_cell(self, island: int, cell: Sequence[int]) -> None:
    with self.transaction() as c:
      c.execute("DELETE FROM grid_cells WHERE island = ? AND cell = ?",
                (island, json.dumps(list(cell))))

  def clear_island(self, island: int) -> None:
    """Removes every member and MAP-Elites cell of an island (the candidates stay)."""
    with self.transaction() as c:
      c.execute("DELETE FROM island_members WHERE island = ?", (island,))
      c.execute("DELETE FROM grid_cells WHERE island = ?", (island,))
