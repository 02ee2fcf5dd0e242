"""One call track's audio to its recogniser: a small actor, one recogniser call in flight at a
time, in order, its queue bounded (the oldest audio skipped past `max_lag`). Its methods run
on the stream's greenlet and on whichever thread an answer comes back on."""

from __future__ import annotations

import enum
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np

from callrelay.asr import TrackRecogniser, Transcript
from callrelay.asr.base import Answer, RecogniserMethod
from callrelay.audio import Int16Array
from callrelay.call import CallInfo
from callrelay.redaction.track import TrackRedactor
from callrelay.twilio.media_stream import Track

logger = logging.getLogger("callrelay.transcription")

FEED_BATCH_SECONDS = 0.06
"""A track's audio goes to its recogniser in pieces of this much (three Twilio frames, about
two VAD windows): a request to the recognition process per frame would cost more CPU in
hand-offs than it saves in latency; many more frames would add to every final's latency."""


class TranscriberOwner(Protocol):
    """What a track's transcriber tells (`TranscriptionSink`)."""

    def deliver(self, transcriber: TrackTranscriber, transcript: Transcript) -> None: ...

    def track_done(self, transcriber: TrackTranscriber) -> None: ...

    def overloaded(self, transcriber: TrackTranscriber, samples: int) -> None: ...


@dataclass
class _Skip:
    samples: int


class TrackState(enum.Enum):
    """A track's recognition, from its first audio to its last transcript."""

    LISTENING = "listening"
    FINISHING = "finishing"
    """The call has ended: what is queued is recognised, then the recogniser is finished."""
    FINISH_SENT = "finish_sent"
    DONE = "done"


class TrackTranscriber:
    """One track's audio to its recogniser, one call in flight at a time, in order; its
    methods run on the stream's greenlet and on whichever thread an answer comes back on."""

    def __init__(
        self,
        sink: TranscriberOwner,
        call: CallInfo,
        track: Track,
        recogniser: TrackRecogniser,
        rate: int,
        max_pending: int,
        start_at: int = 0,
        redactor: TrackRedactor | None = None,
    ) -> None:
        self._sink = sink
        self.redactor = redactor
        """Masks what the track's transcripts say before anyone hears it (`REDACT`)."""
        self.redaction_lock = threading.Lock()
        """One redaction step at a time: answers and the release of held finals."""
        self.call = call
        self.track = track
        self._recogniser = recogniser
        self.rate = rate
        self._max_pending = max_pending
        self._min_batch = int(FEED_BATCH_SECONDS * rate)
        self._lock = threading.Lock()
        # A stream that starts later on its call's timeline: the recogniser counts from there.
        self._queue: deque[Int16Array | _Skip] = deque([_Skip(start_at)] if start_at else [])
        self._queued = 0
        self.state = TrackState.LISTENING
        self._in_flight = False
        """A recogniser call has not answered yet: its answer sends the next."""
        self.done = threading.Event()
        """Set with `TrackState.DONE`, for whoever waits on the last transcript."""
        self.received = 0
        self.processed = 0
        self.skipped = 0

    @property
    def lag(self) -> float:
        """Seconds of audio received and still to be recognised (skipped audio never will)."""
        return (self.received - self.processed - self.skipped) / self.rate

    def feed(self, samples: Int16Array) -> None:
        with self._lock:
            if self.state is not TrackState.LISTENING:
                return
            self._queue.append(samples)
            self._queued += len(samples)
            self.received += len(samples)
            dropped = 0
            skip = 0
            while self._queued > self._max_pending:
                oldest = self._queue.popleft()
                if isinstance(oldest, _Skip):
                    skip += oldest.samples
                    continue
                self._queued -= len(oldest)
                dropped += len(oldest)
            if dropped:
                self._queue.appendleft(_Skip(skip + dropped))
                self.skipped += dropped
            ready = self._queued >= self._min_batch
        if dropped:
            self._sink.overloaded(self, dropped)
        if ready:
            self._send_next()

    def finish(self) -> None:
        with self._lock:
            if self.state is TrackState.LISTENING:
                self.state = TrackState.FINISHING
        self._send_next()

    def _send_next(self) -> None:
        """Hand the recogniser what is queued, unless a call is in flight: its answer sends
        the next. Skips and audio go as they were queued; the finish goes after all of them."""
        while True:
            with self._lock:
                if self._in_flight or self.state is TrackState.DONE:
                    return
                call = self._next_call()
                if call is None:
                    return
                self._in_flight = True
            method, argument, samples = call
            answer = self._begin(method, argument)
            if not answer.done():
                answer.add_done_callback(partial(self._answered, method, samples, resume=True))
                return
            self._answered(method, samples, answer)

    def _begin(self, method: RecogniserMethod, argument: Any) -> Answer:
        try:
            if method == "accept":
                return self._recogniser.accept(argument)
            if method == "skip":
                return self._recogniser.skip(argument)
            return self._recogniser.finish()
        except Exception as error:
            failed: Answer = Future()
            failed.set_exception(error)
            return failed

    def _next_call(self) -> tuple[RecogniserMethod, Any, int] | None:
        if self._queue and isinstance(self._queue[0], _Skip):
            skip = self._queue.popleft()
            assert isinstance(skip, _Skip)
            return "skip", skip.samples, 0
        finishing = self.state is TrackState.FINISHING
        if self._queue and (self._queued >= self._min_batch or finishing):
            run: list[Int16Array] = []
            while self._queue and isinstance(self._queue[0], np.ndarray):
                run.append(self._queue.popleft())  # type: ignore[arg-type]
            audio = np.concatenate(run) if len(run) > 1 else run[0]
            self._queued -= len(audio)
            return "accept", audio, len(audio)
        if not self._queue and finishing:
            self.state = TrackState.FINISH_SENT
            return "finish", None, 0
        return None

    def _answered(
        self, method: RecogniserMethod, samples: int, answer: Answer, resume: bool = False
    ) -> None:
        self._run(answer.result, samples)
        with self._lock:
            self._in_flight = False
            if method == "finish":
                self.state = TrackState.DONE
        if method == "finish":
            self.done.set()
            self._sink.track_done(self)
        elif resume:
            self._send_next()

    def _run(self, step: Callable[[], list[Transcript]], samples: int) -> None:
        try:
            results = step()
        except Exception:
            logger.exception("recogniser failed on %s %s", self.call.call_sid, self.track)
            results = []
        self.processed += samples
        for transcript in results:
            self._sink.deliver(self, transcript)
