"""The webhook outbox: every delivery still to make, kept on disk until it is made.

An event is written here before the relay moves on, so a restart, a kill -9 or a receiver that
is down for hours loses nothing: the next start delivers what is left. A delivery leaves the
outbox once it is delivered or given up.

Deliveries to one receiver are made in order within a call (a call's events form a chain, and
only its head is due), so `call.completed` always comes after the call's other events. Each
server process owns the deliveries it wrote, and keeps a lease on them; the deliveries of a
process that is gone (its lease ran out) are taken over by whichever process renews next.

`Outbox` is the interface (a database fills in these few methods); `SqliteOutbox` keeps it in
a SQLite file beside the recordings. Its calls are short: each write runs in an OS thread while
the calling task waits.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from callrelay.storage.sqlite_file import SqliteFile
from callrelay.webhooks.events import WebhookEvent

OUTBOX_FILE = "outbox.sqlite3"


@dataclass(frozen=True)
class Delivery:
    """One event to one receiver."""

    id: int
    event_id: str
    event_type: str
    call_sid: str
    url: str
    body: str
    created_at: float
    attempts: int


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_created_at: float | None


class Outbox(Protocol):
    def add(self, event: WebhookEvent, urls: list[str], owner: str, lease_until: float) -> None:
        """Keep a delivery of `event` to each of `urls`, owned by `owner`."""

    def renew(self, owner: str, lease_until: float, now: float) -> int:
        """Extend `owner`'s lease, and take over deliveries whose owner's lease ran out; how
        many were taken over."""

    def owners(self) -> set[str]:
        """Every owner with deliveries waiting."""

    def take_over(self, previous: str, owner: str, lease_until: float) -> int:
        """Make `previous`'s deliveries `owner`'s (it is known to be gone); how many."""

    def due(self, owner: str, now: float, limit: int, exclude: set[int]) -> list[Delivery]:
        """`owner`'s deliveries that may be tried now: the head of each chain, oldest first."""

    def next_due_at(self, owner: str) -> float | None:
        """When `owner`'s next delivery is due, if any."""

    def retry(self, delivery_id: int, next_at: float, error: str) -> None: ...

    def finished(self, delivery_id: int) -> None:
        """Delivered, or given up: it leaves the outbox."""

    def backlog(self) -> Backlog: ...

    def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    owner TEXT NOT NULL,
    lease_until REAL NOT NULL,
    last_error TEXT,
    head INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chains ON deliveries (call_sid, url, id);
CREATE INDEX IF NOT EXISTS heads ON deliveries (owner, head, next_at);
"""
"""`head` marks the oldest delivery of each chain (one call, one receiver): the only one that
may be tried. Finding what is due reads the heads' index, never the whole backlog."""


class SqliteOutbox:
    """The outbox in one SQLite file (WAL: a commit survives a killed process without an
    fsync), shared by the server processes of one host; its writes run in an OS thread, so one
    waiting for another process's write never holds the event loop (`sqlite_file`); its reads
    of a few indexed rows run on the calling task."""

    def __init__(self, path: Path) -> None:
        self._file = SqliteFile(path, _connect)

    def add(self, event: WebhookEvent, urls: list[str], owner: str, lease_until: float) -> None:
        body = event.body()
        created = event.created_at  # due at once: `next_at` starts as `created_at`
        rows = [
            (event.id, event.type, event.call_sid, url, body, created, created, owner, lease_until)
            for url in urls
        ]
        self._file.transaction(
            lambda db: db.executemany(
                "INSERT INTO deliveries (event_id, event_type, call_sid, url, body, created_at,"
                " next_at, owner, lease_until, head) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
                " NOT EXISTS (SELECT 1 FROM deliveries WHERE call_sid = ?3 AND url = ?4))",
                rows,
            )
        )

    def renew(self, owner: str, lease_until: float, now: float) -> int:
        def renewed(db: sqlite3.Connection) -> int:
            taken = db.execute(
                "UPDATE deliveries SET owner = ?, lease_until = ? WHERE owner != ? AND"
                " lease_until < ?",
                (owner, lease_until, owner, now),
            ).rowcount
            db.execute(
                "UPDATE deliveries SET lease_until = ? WHERE owner = ?", (lease_until, owner)
            )
            return taken

        return self._file.transaction(renewed)

    def owners(self) -> set[str]:
        query = "SELECT DISTINCT owner FROM deliveries"  # the whole table: a thread's
        rows = self._file.run(lambda db: db.execute(query).fetchall())
        return {str(row[0]) for row in rows}

    def take_over(self, previous: str, owner: str, lease_until: float) -> int:
        return self._file.transaction(
            lambda db: (
                db.execute(
                    "UPDATE deliveries SET owner = ?, lease_until = ? WHERE owner = ?",
                    (owner, lease_until, previous),
                ).rowcount
            )
        )

    def due(self, owner: str, now: float, limit: int, exclude: set[int]) -> list[Delivery]:
        query = (
            "SELECT id, event_id, event_type, call_sid, url, body, created_at, attempts"
            " FROM deliveries WHERE owner = ? AND head = 1 AND next_at <= ?"
            " ORDER BY next_at LIMIT ?"
        )
        rows = self._rows(query, owner, now, limit + len(exclude))
        due = [Delivery(*row) for row in rows if row[0] not in exclude]
        return due[:limit]

    def next_due_at(self, owner: str) -> float | None:
        query = "SELECT MIN(next_at) FROM deliveries WHERE owner = ? AND head = 1"
        [(first,)] = self._rows(query, owner)
        return None if first is None else float(first)

    def retry(self, delivery_id: int, next_at: float, error: str) -> None:
        self._file.transaction(
            lambda db: db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_at = ?, last_error = ?"
                " WHERE id = ?",
                (next_at, error, delivery_id),
            )
        )

    def finished(self, delivery_id: int) -> None:
        def removed(db: sqlite3.Connection) -> None:
            chain = db.execute(
                "DELETE FROM deliveries WHERE id = ? RETURNING call_sid, url", (delivery_id,)
            ).fetchone()
            if chain is not None:  # the chain's next delivery is its head now
                db.execute(
                    "UPDATE deliveries SET head = 1 WHERE id = (SELECT MIN(id) FROM deliveries"
                    " WHERE call_sid = ? AND url = ?)",
                    chain,
                )

        self._file.transaction(removed)

    def backlog(self) -> Backlog:
        query = "SELECT COUNT(*), MIN(created_at) FROM deliveries"  # the whole table: a thread's
        [(count, oldest)] = self._file.run(lambda db: db.execute(query).fetchall())
        return Backlog(int(count), None if oldest is None else float(oldest))

    def close(self) -> None:
        self._file.close()

    def _rows(self, query: str, *values: object) -> list[Any]:
        return self._file.read_here(lambda db: db.execute(query, values).fetchall())


WAIT_FOR_LOCK_SECONDS = 10.0
"""How long a write waits for another process's: only the task that writes waits (in an OS
thread), and an event given up on is lost."""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=WAIT_FOR_LOCK_SECONDS, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db
