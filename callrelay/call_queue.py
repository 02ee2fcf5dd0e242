"""Calls waiting for one background task (to be indexed, to be stored): each call once however
often it is queued, oldest first, with a flag that sticks once any queuing sets it.

The task takes a call, works on it, and says `done` or `retry`; others wait for the queue to
empty (`wait_empty`), and `stop` wakes the task to end. Safe from any thread or greenlet.
"""

from __future__ import annotations

import threading
import time


class CallQueue:
    def __init__(self) -> None:
        self._pending: dict[str, bool] = {}
        self._changed = threading.Condition()
        self._busy = False
        self.stopping = False

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, call_sid: object) -> bool:
        return call_sid in self._pending

    def put(self, call_sid: str, flag: bool = False) -> bool:
        """Queue the call (its flag or-ed with what is queued); True if it was not queued."""
        with self._changed:
            new = call_sid not in self._pending
            self._pending[call_sid] = self._pending.get(call_sid, False) or flag
            self._changed.notify_all()
        return new

    def take(self) -> tuple[str, bool] | None:
        """The oldest queued call and its flag, once there is one; None once stopping."""
        with self._changed:
            while not self._pending and not self.stopping:
                self._changed.wait()
            if self.stopping:
                return None
            call_sid = next(iter(self._pending))
            self._busy = True
            return call_sid, self._pending.pop(call_sid)

    def done(self) -> None:
        """The call taken last is worked."""
        with self._changed:
            self._busy = False
            self._changed.notify_all()

    def retry(self, call_sid: str, flag: bool, after: float) -> None:
        """The call taken last failed: queue it again, and pause `after` seconds (less if
        stopping)."""
        with self._changed:
            self._pending[call_sid] = self._pending.get(call_sid, False) or flag
            self._busy = False
            self._changed.notify_all()
        self.pause(after)

    def pause(self, seconds: float) -> None:
        with self._changed:
            if not self.stopping:
                self._changed.wait(seconds)

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_empty(self, timeout: float, ready: threading.Event | None = None) -> bool:
        """Wait until every call queued so far is worked (and `ready` is set); False if
        `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending or self._busy or (ready is not None and not ready.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
        return True

    def stop(self) -> None:
        with self._changed:
            self.stopping = True
            self._changed.notify_all()
