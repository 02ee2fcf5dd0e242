"""Keeping the history index up to date with the call files, off the audio path.

The call files are the source of truth; the index (SQLite, or PostgreSQL shared by every host)
is what listing and search read. When a call's record changes, the history marks the call:
a flag beside its files (so a restart resumes) and a place in a queue. One background task
writes the rows, each call's latest state once however many times it was marked. While the
index is unreachable (its database down) the marks wait, the task tries again every second,
and the outage is logged once each way; the calls go on and are recorded meanwhile. At start
the task first brings the index's schema up to date, then indexes every call still flagged and
every local call the index does not know (a new or a fresh database).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from callrelay.background import start_task
from callrelay.logs import log_event
from callrelay.outage import RETRY_SECONDS, Outage
from callrelay.storage.files import CallFiles
from callrelay.storage.index import CallRow, HistoryIndex

logger = logging.getLogger("callrelay.history")

UNINDEXED = "unindexed"
"""The flag of a call whose latest state the index may not have."""
KNOWN_BATCH = 500
"""Calls asked about at once when finding the local calls the index lacks."""

RowMaker = Callable[[str, bool], CallRow]
"""A call's index row from its files; `True`: with its words even if it is not transcribed."""


class IndexWriter:
    def __init__(self, files: CallFiles, index: HistoryIndex, make_row: RowMaker) -> None:
        self._files = files
        self._index = index
        self._make_row = make_row
        self._pending: dict[str, bool] = {}
        """Calls to index, oldest mark first, each with whether to read its words."""
        self._changed = threading.Condition()
        self._busy = False
        self._stopping = False
        self._outage = Outage(
            logger,
            "history_index_unavailable",
            "history_index_back",
            "calls go on and are recorded; the index catches up when it is back",
        )
        self.ready = threading.Event()
        """Set once the index's schema is current and the local calls are queued."""
        self.writes = 0
        self.failures = 0

    @property
    def backlog(self) -> int:
        """Calls whose latest state the index does not have yet."""
        return len(self._pending)

    @property
    def reachable(self) -> bool:
        return self._outage.up

    def start(self) -> None:
        start_task("history-index", self._run)

    def mark(self, call_sid: str, with_words: bool = False) -> None:
        """The call's record changed: queue its row (never waits on the index)."""
        with self._changed:
            new = call_sid not in self._pending
            self._pending[call_sid] = self._pending.get(call_sid, False) or with_words
            self._changed.notify_all()
        if new:
            try:
                self._files.set_flag(call_sid, UNINDEXED, True)
            except OSError as error:  # the disk is full or the folder gone: the queue holds it
                log_event(
                    logger,
                    "history_flag_failed",
                    logging.WARNING,
                    callSid=call_sid,
                    error=str(error),
                )

    def wait_indexed(self, timeout: float) -> bool:
        """Wait until every mark so far is in the index; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending or self._busy or not self.ready.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, RETRY_SECONDS))
        return True

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stopping and not self._catch_up():
            self._pause(RETRY_SECONDS)
        while not self._stopping:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
            if not self._write_pending():
                self._pause(RETRY_SECONDS)

    def _catch_up(self) -> bool:
        """Bring the schema up to date and queue what the index lacks; False if it could not
        be reached."""
        try:
            self._index.migrate()
            for call_sid in self._files.flagged(UNINDEXED):
                self.mark(call_sid, with_words=True)
            for batch in _batches(self._files.calls(), KNOWN_BATCH):
                deleted = self._index.forgotten(batch)
                for call_sid in deleted:  # deleted from another host while this one was down
                    self._files.delete(call_sid)
                for call_sid in set(batch) - self._index.known(batch) - deleted:
                    self.mark(call_sid, with_words=True)
        except Exception as error:  # whatever the index's driver raises when it is away
            self._outage.failed(error)
            return False
        self._outage.succeeded()
        self.ready.set()
        with self._changed:
            self._changed.notify_all()
        return True

    def _write_pending(self) -> bool:
        """Write the queued calls' rows, oldest first; False when the index failed."""
        while True:
            with self._changed:
                if not self._pending or self._stopping:
                    self._busy = False
                    self._changed.notify_all()
                    return True
                call_sid = next(iter(self._pending))
                with_words = self._pending.pop(call_sid)
                self._busy = True
            try:
                if self._files.has(call_sid):  # else deleted meanwhile: nothing to index
                    self._index.record(self._make_row(call_sid, with_words))
                    self.writes += 1
            except Exception as error:
                self.failures += 1
                with self._changed:
                    self._pending[call_sid] = self._pending.get(call_sid, False) or with_words
                    self._busy = False
                self._outage.failed(error)
                return False
            self._outage.succeeded(backlog=len(self._pending))
            with self._changed:
                still_marked = call_sid in self._pending
            if not still_marked:  # a flag that cannot be lowered: indexed again at next start
                with contextlib.suppress(OSError):
                    self._files.set_flag(call_sid, UNINDEXED, False)

    def _pause(self, seconds: float) -> None:
        with self._changed:
            if not self._stopping:
                self._changed.wait(seconds)


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
