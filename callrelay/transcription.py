"""The transcription sink: one recogniser per call track (`track_transcriber.py`), never
waited on by a socket.

Each track is a small actor: the stream thread appends audio to the track's queue and returns at
once. The track hands its recogniser the next piece when the answer to the last one comes, one
call in flight at a time, so the recogniser sees the track in order and no thread waits on it.
The queue is bounded by `max_lag` seconds of audio: when recognition falls that far behind, the
oldest audio is skipped (the recogniser is told, so times stay right), counted and logged, and
the relay never waits. `lag` is how far behind each track is; `GET /` shows the worst.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from callrelay.asr import SpeechEngine, Transcript
from callrelay.background import start_task
from callrelay.call import AudioChunk, CallInfo, CallSink
from callrelay.keyterms import KEYTERM_PARAMETER, keyterm_list
from callrelay.logs import log_event
from callrelay.metrics import TRANSCRIPT_SECONDS
from callrelay.redaction.track import RedactMode, TrackRedactor
from callrelay.track_transcriber import TrackTranscriber
from callrelay.tracks import SPEAKER_NAMES
from callrelay.twilio.media_stream import Track

logger = logging.getLogger("callrelay.transcription")

LAG_WARNING_SECONDS = 2.0
LAG_LOG_INTERVAL = 10.0
RELEASE_EVERY_SECONDS = 0.5
"""With redaction on, how often held finals are checked for having waited their time."""


class TranscriptListener:
    """Where a call's transcripts go; a listener overrides the events it wants. Called from
    the transcription's reader: return quickly."""

    def transcript(self, call: CallInfo, track: Track, transcript: Transcript) -> None:
        """A final, or the words so far (`transcript.is_final` says which)."""

    def transcription_ended(self, call: CallInfo) -> None:
        """Every final of the call is out."""

    def lagging(self, call: CallInfo, track: Track, lag: float, skipped: float) -> None:
        """Recognition of `track` is `lag` seconds behind the call (at most every few
        seconds while it lasts); `skipped` seconds of its oldest audio were given up."""


class TranscriptionSink(CallSink):
    def __init__(
        self,
        engine: SpeechEngine,
        listeners: Sequence[TranscriptListener],
        *,
        max_lag_seconds: float = 30.0,
        redact: RedactMode = RedactMode.OFF,
    ) -> None:
        self.engine = engine
        self._listeners = listeners
        self._redact = redact
        self._max_pending = int(max_lag_seconds * engine.sample_rate)
        self._lock = threading.Lock()
        self._calls: dict[str, dict[Track, TrackTranscriber]] = {}
        self._lag_logged: dict[str, float] = {}
        self.transcripts = 0
        self.skipped_seconds = 0.0

    # CallSink

    def call_started(self, call: CallInfo) -> None:
        tracks = {
            track: TrackTranscriber(
                self,
                call,
                track,
                self.engine.new_recogniser(_keyterms_of(call)),
                self.engine.sample_rate,
                self._max_pending,
                start_at=call.offset_ms * self.engine.sample_rate // 1000,
                redactor=TrackRedactor(self._redact)
                if self._redact is not RedactMode.OFF
                else None,
            )
            for track in call.tracks
        }
        with self._lock:
            self._calls[call.stream_sid] = tracks

    def audio(self, call: CallInfo, chunk: AudioChunk) -> None:
        tracks = self._calls.get(call.stream_sid)
        if tracks is None:
            return
        transcriber = tracks[chunk.track]
        transcriber.feed(chunk.pcm if self.engine.sample_rate == 16000 else chunk.pcm_8k)
        lag = transcriber.lag
        if lag >= LAG_WARNING_SECONDS:
            self._log_lag(transcriber, lag)

    def call_ended(self, call: CallInfo, reason: str) -> None:
        tracks = self._calls.get(call.stream_sid, {})
        for transcriber in tracks.values():
            transcriber.finish()

    # The recogniser's side

    def deliver(self, transcriber: TrackTranscriber, transcript: Transcript) -> None:
        """A transcript from the recogniser: to every listener, masked first when the track
        is redacted (a final that may begin a sensitive number waits for the next)."""
        if transcriber.redactor is None:
            self._send(transcriber, transcript)
            return
        step = transcriber.redactor.pass_on
        for ready in self._redacted(transcriber, step, transcript, time.monotonic()):
            self._send(transcriber, ready)

    def _redacted(
        self, transcriber: TrackTranscriber, step: Callable[..., list[Transcript]], *args: Any
    ) -> list[Transcript]:
        """What the track's redactor lets out (`step(*args)`, under its lock). Should it fail,
        what it was given is withheld, never sent unmasked, and the track goes on."""
        with transcriber.redaction_lock:
            try:
                return step(*args)
            except Exception as error:
                log_event(
                    logger,
                    "redaction_failed",
                    logging.ERROR,
                    callSid=transcriber.call.call_sid,
                    speaker=SPEAKER_NAMES[transcriber.track],
                    error=type(error).__name__,  # its message may quote what was said
                )
                return []

    def start(self) -> None:
        """With redaction on: a background task that sends on, twice a second, the held
        finals whose number did not go on."""
        if self._redact is not RedactMode.OFF:
            start_task("redaction-holds", self._release_held_forever)

    def _release_held_forever(self) -> None:
        while True:
            time.sleep(RELEASE_EVERY_SECONDS)
            self.release_held()

    def release_held(self) -> None:
        """Send on every held final whose number did not go on."""
        with self._lock:
            transcribers = [t for tracks in self._calls.values() for t in tracks.values()]
        for transcriber in transcribers:
            redactor = transcriber.redactor
            if redactor is not None and redactor.holding:
                for ready in self._redacted(transcriber, redactor.expire, time.monotonic()):
                    self._send(transcriber, ready)

    def _send(self, transcriber: TrackTranscriber, transcript: Transcript) -> None:
        call = transcriber.call
        if transcript.is_final:
            self.transcripts += 1
            if transcript.queue_seconds is not None and transcript.decode_seconds is not None:
                TRANSCRIPT_SECONDS.observe(transcript.queue_seconds + transcript.decode_seconds)
            log_event(
                logger,
                "transcript",
                speaker=SPEAKER_NAMES[transcriber.track],
                callSid=call.call_sid,
                streamSid=call.stream_sid,
                text=transcript.text,
                start=round(transcript.start, 2),
                end=round(transcript.end, 2),
                confidence=transcript.confidence,
                lagSeconds=round(transcriber.lag, 2),
                **_decode_timings(transcript),
            )
        for listener in self._listeners:
            try:
                listener.transcript(call, transcriber.track, transcript)
            except Exception:
                logger.exception("transcript listener failed")

    def track_done(self, transcriber: TrackTranscriber) -> None:
        call = transcriber.call
        if transcriber.redactor is not None:
            for ready in self._redacted(transcriber, transcriber.redactor.flush):
                self._send(transcriber, ready)
        with self._lock:
            tracks = self._calls.get(call.stream_sid, {})
            if not all(t.done.is_set() for t in tracks.values()):
                return
            self._calls.pop(call.stream_sid, None)
            self._lag_logged.pop(call.stream_sid, None)
        log_event(
            logger,
            "transcription_ended",
            callSid=call.call_sid,
            streamSid=call.stream_sid,
            skippedSeconds={t.track: round(t.skipped / t.rate, 2) for t in tracks.values()},
        )
        for listener in self._listeners:
            try:
                listener.transcription_ended(call)
            except Exception:
                logger.exception("transcript listener failed")

    def overloaded(self, transcriber: TrackTranscriber, samples: int) -> None:
        self.skipped_seconds += samples / transcriber.rate
        self._log_lag(transcriber, transcriber.lag, skipped=samples / transcriber.rate)

    def _log_lag(self, transcriber: TrackTranscriber, lag: float, skipped: float = 0.0) -> None:
        now = time.monotonic()
        key = transcriber.call.stream_sid
        if now - self._lag_logged.get(key, -LAG_LOG_INTERVAL) < LAG_LOG_INTERVAL:
            return
        self._lag_logged[key] = now
        for listener in self._listeners:
            try:
                listener.lagging(transcriber.call, transcriber.track, lag, skipped)
            except Exception:
                logger.exception("transcript listener failed")
        log_event(
            logger,
            "asr_lag",
            logging.WARNING,
            callSid=transcriber.call.call_sid,
            streamSid=key,
            speaker=SPEAKER_NAMES[transcriber.track],
            lagSeconds=round(lag, 2),
            skippedSeconds=round(skipped, 2),
            detail="recognition is behind the call; oldest audio is skipped past the limit",
        )

    def figures(self) -> dict[str, Any]:
        """This process's transcription figures, without asking the engine (no waiting)."""
        with self._lock:
            transcribers = [t for tracks in self._calls.values() for t in tracks.values()]
        return {
            "activeTracks": len(transcribers),
            "maxLagSeconds": round(max((t.lag for t in transcribers), default=0.0), 2),
            "skippedSeconds": round(self.skipped_seconds, 2),
            "transcripts": self.transcripts,
        }

    def status(self) -> dict[str, object]:
        """The figures and the engine's own description (which may ask its process, up to
        2 s)."""
        return {**self.engine.describe(), **self.figures()}

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every ended call's transcripts are out (for shutdown)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._lock:
                busy = any(
                    not t.done.is_set() for tracks in self._calls.values() for t in tracks.values()
                )
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def _keyterms_of(call: CallInfo) -> list[str]:
    """The call's own keyterms, from its stream's `<Parameter>` (none if it is not valid)."""
    try:
        return keyterm_list(call.custom_parameters.get(KEYTERM_PARAMETER, ""))
    except ValueError:
        return []


def _decode_timings(transcript: Transcript) -> dict[str, float]:
    """The log's `queueSeconds` / `decodeSeconds`, for engines that report them."""
    timings = {"queueSeconds": transcript.queue_seconds, "decodeSeconds": transcript.decode_seconds}
    return {name: seconds for name, seconds in timings.items() if seconds is not None}
