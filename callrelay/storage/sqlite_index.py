"""The history index in SQLite beside the recordings (`captures/index.sqlite3`): the default,
with no server to run. Several processes share it (WAL: readers never wait)."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from pathlib import Path

from callrelay.logs import log_event
from callrelay.storage.index import MAX_PAGE, CallQuery, CallRow

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
"""
COLUMNS = tuple(field.name for field in dataclasses.fields(CallRow))


class SqliteHistoryIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        try:
            self._db = _connect(self.path)
        except sqlite3.DatabaseError as error:
            log_event(logger, "history_index_unreadable", logging.WARNING, error=str(error))
            self.path.unlink(missing_ok=True)
            self._db, fresh = _connect(self.path), True
        return fresh

    def record(self, row: CallRow) -> None:
        with self._lock:
            if self._db is not None:
                self._db.execute(
                    f"INSERT OR REPLACE INTO calls ({', '.join(COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(COLUMNS))})",
                    dataclasses.astuple(row),
                )

    def query(self, query: CallQuery) -> list[CallRow]:
        where, values = _conditions(query)
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


def _conditions(query: CallQuery) -> tuple[list[str], list[object]]:
    where: list[str] = []
    values: list[object] = []
    if query.before is not None:
        where.append("started_at < ?")
        values.append(query.before)
    if query.since is not None:
        where.append("started_at >= ?")
        values.append(query.since)
    if query.until is not None:
        where.append("started_at < ?")
        values.append(query.until)
    if query.number:
        where.append("(from_number LIKE ? ESCAPE '\\' OR to_number LIKE ? ESCAPE '\\')")
        values += [f"%{_like(query.number)}%"] * 2
    if query.text:
        where.append("transcript LIKE ? ESCAPE '\\'")
        values.append(f"%{_like(query.text)}%")
    return where, values


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
