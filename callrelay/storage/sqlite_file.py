"""One SQLite file that the server processes of a host share (the history index, the webhook
outbox), and where its statements run.

SQLite waits for another process's write lock inside its C code: its busy handler sleeps
there. Under `callrelay serve` that sleep would hold the event loop, and every call's audio
with it, for as long as the other process writes. So each write, and each read that may be
long, runs in an OS thread (`background.run_in_os_thread`) while the task that asked waits and
the loop runs on; one connection per file and process, used by one statement at a time (the
lock is taken on the calling task, never in the thread).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from callrelay.background import run_in_os_thread

T = TypeVar("T")


class SqliteFile:
    def __init__(self, path: Path, connect: Callable[[Path], sqlite3.Connection]) -> None:
        self.path = path
        self._connect = connect
        """Opens the file and makes its schema: called once, in the OS thread."""
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)`, in an OS thread, one at a time."""
        with self._lock:
            return run_in_os_thread(lambda: self._run(work))

    def read_here(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` on the calling task, for a short read of a few indexed rows: in
        WAL mode a reader never waits for a writer, and a hop to a thread costs more than the
        read (about 0.1 ms)."""
        with self._lock:
            return self._run(work)

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` as one transaction: committed, or rolled back if it raises."""

        def committed(db: sqlite3.Connection) -> T:
            with db:
                return work(db)

        return self.run(committed)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self._db = self._connect(self.path)
        return work(self._db)
