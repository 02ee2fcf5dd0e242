"""A dependency that may go away (Redis): after a failure it is left alone for a second, and
its going and its coming back are each logged once."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from callrelay.logs import log_event

RETRY_SECONDS = 1.0


class Outage:
    def __init__(self, logger: logging.Logger, down: str, up: str, detail: str) -> None:
        self._logger = logger
        self._down_event, self._up_event, self._detail = down, up, detail
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()

    @property
    def up(self) -> bool:
        return self._down_since is None

    def worth_trying(self) -> bool:
        """False while the last failure is under a second old."""
        return self._down_since is None or time.monotonic() >= self._retry_at

    def try_now(self) -> None:
        """The next call is worth trying, whatever the last failure (a periodic check)."""
        self._retry_at = 0.0

    def failed(self, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self._retry_at = now + RETRY_SECONDS
            if self._down_since is None:
                self._down_since = now
                log_event(
                    self._logger,
                    self._down_event,
                    logging.WARNING,
                    error=f"{type(error).__name__}: {error}",
                    detail=self._detail,
                )

    def succeeded(self, **fields: Any) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is not None:
                seconds = round(time.monotonic() - self._down_since, 1)
                log_event(self._logger, self._up_event, seconds=seconds, **fields)
                self._down_since = None
