"""Where utterances from every track wait for a decode worker: confirmed ones first."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace

import numpy as np

from callrelay.asr.base import Transcript
from callrelay.asr.segmenter import Utterance

RECENT_DECODES = 500
"""Timings kept for `GET /`: the last this many utterances."""


class DecodeQueue:
    """Utterances from every track wait here for one of `workers` decode threads, each decoded
    on its own: batching them would pad each to the longest in its batch and hold every member
    back to the slowest, and live traffic seldom has two utterances waiting at once.

    An utterance may also be submitted early, while its pause has yet to confirm its end
    (`early=True`): it is taken only when no confirmed utterance waits, and it is withdrawn
    (`future.cancel()`) if the speaker goes on before a worker has started on it."""

    def __init__(
        self, decode: Callable[[Utterance, str | None], Transcript | None], *, workers: int
    ) -> None:
        """`decode(utterance, hotwords)`: one utterance's transcript, favouring `hotwords`."""
        self._decode = decode
        self._workers = workers
        self._ready = threading.Condition()
        self._confirmed: deque[_Job] = deque()
        self._early: deque[_Job] = deque()
        self._running = 0
        self.decoded = 0
        self._waits: deque[float] = deque(maxlen=RECENT_DECODES)
        self._decode_seconds: deque[float] = deque(maxlen=RECENT_DECODES)
        for number in range(workers):
            # OS threads: this runs in the recognition process, where nothing is patched.
            threading.Thread(target=self._work, name=f"whisper-{number}", daemon=True).start()

    @property
    def has_idle_worker(self) -> bool:
        """Some worker would start on an utterance submitted now."""
        with self._ready:
            return self._running + len(self._confirmed) + len(self._early) < self._workers

    def timings(self) -> dict[str, dict[str, float]]:
        """Seconds an utterance waited for a worker, and its decode took (with its full-window
        fallback if it needed one): the median and 95th percentile of the recent ones, where a
        final's latency goes."""
        with self._ready:
            waits, decodes = list(self._waits), list(self._decode_seconds)
        return {"queueWait": _percentiles(waits), "decode": _percentiles(decodes)}

    def submit(
        self, utterance: Utterance, *, early: bool = False, hotwords: str | None = None
    ) -> Future[Transcript | None]:
        job = _Job(utterance, Future(), time.monotonic(), hotwords)
        with self._ready:
            (self._early if early else self._confirmed).append(job)
            self._ready.notify()
        return job.future

    def confirm(self, future: Future[Transcript | None]) -> None:
        """An early utterance's end is confirmed: it now goes ahead of the early ones, and of
        the confirmed ones submitted after it (its speaker stopped before theirs did)."""
        with self._ready:
            for job in self._early:
                if job.future is future:
                    self._early.remove(job)
                    later = (
                        i for i, j in enumerate(self._confirmed) if j.submitted > job.submitted
                    )
                    self._confirmed.insert(next(later, len(self._confirmed)), job)
                    return

    def _take(self) -> tuple[_Job, float]:
        """The next utterance to decode, and when a worker took it."""
        with self._ready:
            while True:
                waiting = self._confirmed if self._confirmed else self._early
                while waiting:
                    job = waiting.popleft()
                    if job.future.set_running_or_notify_cancel():
                        self._running += 1
                        started = time.monotonic()
                        self._waits.append(started - job.submitted)
                        return job, started
                self._ready.wait()

    def _work(self) -> None:
        while True:
            job, started = self._take()
            try:
                result = self._decode(job.utterance, job.hotwords)
            except Exception as error:
                job.future.set_exception(error)
                continue
            finally:
                decode_seconds = time.monotonic() - started
                with self._ready:
                    self._running -= 1
                    self._decode_seconds.append(decode_seconds)
                    self.decoded += 1
            if result is not None:
                result = replace(
                    result,
                    queue_seconds=round(started - job.submitted, 3),
                    decode_seconds=round(decode_seconds, 3),
                )
            job.future.set_result(result)


@dataclass(frozen=True, eq=False)
class _Job:
    utterance: Utterance
    future: Future[Transcript | None]
    submitted: float
    hotwords: str | None = None


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    p50, p95 = np.percentile(seconds, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}
