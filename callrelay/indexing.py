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
from collections.abc import Callable, Iterator

from callrelay.background import start_task
from callrelay.call_queue import CallQueue
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
        self._queue = CallQueue()
        """Calls to index, each with whether to read its words."""
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
        return len(self._queue)

    @property
    def reachable(self) -> bool:
        return self._outage.up

    def start(self) -> None:
        start_task("history-index", self._run)

    def mark(self, call_sid: str, with_words: bool = False) -> None:
        """The call's record changed: queue its row (never waits on the index)."""
        if self._queue.put(call_sid, with_words):
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
        return self._queue.wait_empty(timeout, self.ready)

    def stop(self) -> None:
        self._queue.stop()

    def _run(self) -> None:
        while not self._queue.stopping and not self._catch_up():
            self._queue.pause(RETRY_SECONDS)
        while (taken := self._queue.take()) is not None:
            call_sid, with_words = taken
            try:
                if self._files.has(call_sid):  # else deleted meanwhile: nothing to index
                    self._index.record(self._make_row(call_sid, with_words))
                    self.writes += 1
            except Exception as error:  # whatever the index's driver raises when it is away
                self.failures += 1
                self._outage.failed(error)
                self._queue.retry(call_sid, with_words, RETRY_SECONDS)
                continue
            self._outage.succeeded(backlog=len(self._queue))
            if call_sid not in self._queue:  # a flag that cannot be lowered: indexed again
                with contextlib.suppress(OSError):  # at the next start
                    self._files.set_flag(call_sid, UNINDEXED, False)
            self._queue.done()

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
        self._queue.wake()
        return True


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
