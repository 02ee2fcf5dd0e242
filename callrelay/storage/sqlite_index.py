"""The history index in SQLite beside the recordings (`captures/index.sqlite3`): the default,
with no server to run. Several processes share it (WAL: readers never wait); its statements
run in an OS thread, so one waiting for another process's write never holds the event loop."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from callrelay.logs import log_event
from callrelay.storage.index import MAX_PAGE, CallQuery, CallRow, sql_conditions
from callrelay.storage.sqlite_file import SqliteFile

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
        self._file: SqliteFile | None = None
        """Set while open; its statements run in an OS thread (`sqlite_file`)."""

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = SqliteFile(self.path, _connect)
        try:
            file.run(_opened)
        except sqlite3.DatabaseError as error:
            log_event(logger, "history_index_unreadable", logging.WARNING, error=str(error))
            self.path.unlink(missing_ok=True)
            file.run(_opened)
        self._file = file

    def migrate(self) -> None:
        """The schema is created as the file is opened."""

    def known(self, call_sids: Sequence[str]) -> set[str]:
        sql = f"SELECT call_sid FROM calls WHERE call_sid IN ({', '.join('?' * len(call_sids))})"
        return {row[0] for row in self._rows(sql, list(call_sids))} if call_sids else set()

    def record(self, row: CallRow) -> None:
        sql = (
            f"INSERT OR REPLACE INTO calls ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        if self._file is not None:
            self._file.run(lambda db: db.execute(sql, dataclasses.astuple(row)))

    def query(self, query: CallQuery) -> list[CallRow]:
        where, values = sql_conditions(query, "?")
        sql = f"SELECT {', '.join(COLUMNS)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC LIMIT ?"
        values.append(max(1, min(query.limit, MAX_PAGE)))
        return [CallRow(*row) for row in self._rows(sql, values)]

    def forget(self, call_sid: str) -> None:
        def forgotten(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM calls WHERE call_sid = ?", (call_sid,))
            db.execute("INSERT OR REPLACE INTO forgotten VALUES (?, ?)", (call_sid, time.time()))

        if self._file is not None:
            self._file.run(forgotten)

    def forgotten(self, call_sids: Sequence[str]) -> set[str]:
        sql = (
            f"SELECT call_sid FROM forgotten WHERE call_sid IN ({', '.join('?' * len(call_sids))})"
        )
        return {row[0] for row in self._rows(sql, list(call_sids))} if call_sids else set()

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def _rows(self, sql: str, values: list[Any]) -> list[Any]:
        if self._file is None:
            return []
        return self._file.run(lambda db: db.execute(sql, values).fetchall())


def _opened(db: sqlite3.Connection) -> None:
    """Nothing: opening the file (and making its schema) is the work."""


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, timeout=5.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")  # several processes: readers never wait
    db.execute("PRAGMA synchronous=NORMAL")  # a cache of the call files: no fsync per event
    db.executescript(SCHEMA)
    return db
