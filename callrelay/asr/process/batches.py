"""Requests to the recognition processes, sent in batches from a thread of their own.

One message every `SEND_INTERVAL` at most: a thread woken for every track's 60 ms of audio,
and a pipe message for it, would cost more CPU than the recognition it asks for. Queueing a
request never blocks, even when a child is stuck (the queue stays small: each track has one
call in flight at most).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from callrelay.asr.process.link import STOP_TIMEOUT_SECONDS, RecognitionLink
from callrelay.asr.process.messages import Batch, Request, Stop
from callrelay.background import start_task

SEND_INTERVAL = 0.02
"""Requests wait up to this long to travel with others."""
EVERY_PROCESS = -1
"""The generation a request for every process is queued under."""


class BatchSender:
    """Queues (generation, request) pairs; its thread sends each generation's share to that
    process. What cannot be sent (the process is gone) is handed to `unsent`."""

    def __init__(
        self,
        links: Callable[[], Mapping[int, RecognitionLink]],
        unsent: Callable[[list[Request]], None],
    ) -> None:
        self._links = links
        self._unsent = unsent
        self._queue: list[tuple[int, Request]] = []
        self._ready = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = start_task("asr-process-sender", self._run)

    def send(self, request: Request, generation: int | None) -> None:
        """Queue `request` for the process of `generation` (every process when None)."""
        with self._ready:
            self._queue.append((EVERY_PROCESS if generation is None else generation, request))
            self._ready.notify()

    def stop(self) -> None:
        """Send `Stop` to every process; returns once it is sent (or after a timeout)."""
        self._stopping = True
        self.send(Stop(), None)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)

    def _run(self) -> None:
        last_sent = 0.0
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
            time.sleep(max(0.0, last_sent + SEND_INTERVAL - time.monotonic()))
            with self._ready:
                batch, self._queue = self._queue, []
            stop_sent = self._send_batch(batch)
            last_sent = time.monotonic()
            if stop_sent and self._stopping:
                return

    def _send_batch(self, batch: list[tuple[int, Request]]) -> bool:
        """Each process's share of `batch`, as one message; whether a `Stop` went."""
        links = dict(self._links())
        stop_sent = False
        unsent: list[Request] = []
        for generation, link in links.items():
            requests = [r for made_for, r in batch if made_for in (generation, EVERY_PROCESS)]
            if not requests:
                continue
            try:
                link.connection.send(Batch(requests))
            except (OSError, ValueError):  # the process is gone: its reader handles it
                unsent += requests
            stop_sent = stop_sent or any(isinstance(r, Stop) for r in requests)
        unsent += [
            r for made_for, r in batch if made_for not in links and made_for != EVERY_PROCESS
        ]
        self._unsent(unsent)
        return stop_sent
