"""The history index in SQLite beside the recordings (`captures/index.sqlite3`): the default,
with no server to run. Several processes share it (WAL: readers never wait)."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from callrelay.logs import log_event
from callrelay.storage.index import MAX_PAGE, CallQuery, CallRow, sql_conditions

logger = logging.getLogger("callrelay.history")

INDEX_FILE = "index.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_sid TEXT PRIMARY KEY,
    started_at REAL,
    ended_at REAL,
    direction TEXT,
    from_number TEXT,
    to_number TEXT,
    status TEXT,
    seconds REAL,
    transcript TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS calls_by_time ON calls (started_at DESC);
CREATE TABLE IF NOT EXISTS forgotten (call_sid TEXT PRIMARY KEY, deleted_at REAL);
"""
COLUMNS = tuple(field.name for field in dataclasses.fields(CallRow))


class SqliteHistoryIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = _connect(self.path)
        except sqlite3.DatabaseError as error:
            log_event(logger, "history_index_unreadable", logging.WARNING, error=str(error))
            self.path.unlink(missing_ok=True)
            self._db = _connect(self.path)

    def migrate(self) -> None:
        """The schema is created as the file is opened."""

    def known(self, call_sids: Sequence[str]) -> set[str]:
        with self._lock:
            if self._db is None or not call_sids:
                return set()
            rows = self._db.execute(
                f"SELECT call_sid FROM calls WHERE call_sid IN ({', '.join('?' * len(call_sids))})",
                list(call_sids),
            ).fetchall()
        return {row[0] for row in rows}

    def record(self, row: CallRow) -> None:
        with self._lock:
            if self._db is not None:
                self._db.execute(
                    f"INSERT OR REPLACE INTO calls ({', '.join(COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(COLUMNS))})",
                    dataclasses.astuple(row),
                )

    def query(self, query: CallQuery) -> list[CallRow]:
        where, values = sql_conditions(query, "?")
        sql = f"SELECT {', '.join(COLUMNS)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC LIMIT ?"
        values.append(max(1, min(query.limit, MAX_PAGE)))
        with self._lock:
            if self._db is None:
                return []
            rows = self._db.execute(sql, values).fetchall()
        return [CallRow(*row) for row in rows]

    def forget(self, call_sid: str) -> None:
        with self._lock:
            if self._db is not None:
                self._db.execute("DELETE FROM calls WHERE call_sid = ?", (call_sid,))
                self._db.execute(
                    "INSERT OR REPLACE INTO forgotten VALUES (?, ?)", (call_sid, time.time())
                )

    def forgotten(self, call_sids: Sequence[str]) -> set[str]:
        with self._lock:
            if self._db is None or not call_sids:
                return set()
            rows = self._db.execute(
                "SELECT call_sid FROM forgotten "
                f"WHERE call_sid IN ({', '.join('?' * len(call_sids))})",
                list(call_sids),
            ).fetchall()
        return {row[0] for row in rows}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, timeout=5.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")  # several processes: readers never wait
    db.execute("PRAGMA synchronous=NORMAL")  # a cache of the call files: no fsync per event
    db.executescript(SCHEMA)
    return db
