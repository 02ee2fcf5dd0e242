"""`RETENTION_DAYS`: calls older than that are deleted everywhere they are kept (the object
store, this host's folder, the index), at start and then every hour, one log line per sweep.
With hosts sharing a history each sweeps; a call another host swept is no longer served here
either (the index remembers deleted calls)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from callrelay.background import start_task
from callrelay.history import CallHistory
from callrelay.logs import log_event
from callrelay.storage.index import MAX_PAGE, CallQuery

logger = logging.getLogger("callrelay.retention")

SWEEP_EVERY_SECONDS = 3600.0
DAY_SECONDS = 86_400


class RetentionSweeper:
    def __init__(
        self, history: CallHistory, days: float, live_call_sids: Callable[[], set[str]]
    ) -> None:
        self._history = history
        self._days = days
        self._live_call_sids = live_call_sids
        self._stop = threading.Event()

    def start(self) -> None:
        start_task("retention", self._run)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception as error:  # the index or the store is away: the next sweep
                log_event(
                    logger,
                    "retention_sweep_failed",
                    logging.WARNING,
                    error=type(error).__name__,
                    detail="tried again at the next sweep",
                )
            if self._stop.wait(SWEEP_EVERY_SECONDS):
                return

    def sweep(self) -> int:
        """Delete every call that started more than the retention ago; how many."""
        cutoff = time.time() - self._days * DAY_SECONDS
        deleted = 0
        while not self._stop.is_set():
            page = self._history.calls(CallQuery(limit=MAX_PAGE, until=cutoff))
            live = self._live_call_sids()
            old = [call["callSid"] for call in page if call["callSid"] not in live]
            for call_sid in old:
                self._history.delete(call_sid)
                deleted += 1
            if not old or len(page) < MAX_PAGE:
                break
        log_event(logger, "retention_swept", deleted=deleted, olderThanDays=self._days)
        return deleted
