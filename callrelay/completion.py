"""A call's end, once everything it produced is final: its analytics, its `completed` record.

A stream's end is not the end of what the call produces: its last utterances may still be in
recognition. A call is complete once its stream has ended (the recorder has closed its files
by then) and, when it is transcribed, once its last final is out. Then its analytics are
computed, in a background task (a long call's audio is read in pieces, yielding between
them), written to its history, and the completion listeners are told (clients, webhooks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from callrelay.analytics import (
    FRAME_SECONDS,
    Activity,
    activity_from_levels,
    activity_from_spans,
    call_analytics,
    frame_levels,
    speech_spans,
)
from callrelay.background import start_task
from callrelay.call import OUTPUT_RATE, CallInfo, CallSink
from callrelay.history import CallHistory
from callrelay.logs import log_event
from callrelay.recording import HEADER_BYTES
from callrelay.recording_formats import ENCODED_NAMES, RecordingEncoder, encoded_side
from callrelay.storage.files import CallFiles
from callrelay.tracks import FILE_STEMS, SPEAKER_NAMES
from callrelay.transcription import TranscriptListener
from callrelay.twilio.media_stream import Track
from callrelay.twilio.sids import is_call_sid
from callrelay.uploads import CallUploader

logger = logging.getLogger("callrelay.completion")

READ_SECONDS = 60
"""A recording is read this much at a time for its speech activity."""
SIDE_TRACKS: dict[str, Track] = {"caller": "inbound", "receiver": "outbound"}


class CompletionListener:
    """Told when a call is complete, with its record as `GET /calls/<CallSid>` shows it.
    Called from a background task."""

    def call_completed(self, call_sid: str, record: dict[str, Any]) -> None:
        pass


class CallCompletion(CallSink, TranscriptListener):
    def __init__(
        self,
        history: CallHistory,
        files: CallFiles,
        *,
        transcribing: bool,
        listeners: Sequence[CompletionListener] = (),
        encoder: RecordingEncoder | None = None,
        uploader: CallUploader | None = None,
    ) -> None:
        """`encoder`: where the recordings are encoded for keeping (`RECORDINGS_FORMAT`), if
        they are not kept as WAVs."""
        self._history = history
        self._files = files
        self._transcribing = transcribing
        self._encoder = encoder
        self._uploader = uploader
        self._listeners = listeners
        self._pending = 0
        self._idle = threading.Condition()

    def call_ended(self, call: CallInfo, reason: str) -> None:
        if not self._transcribing:
            self._complete(call)

    def transcription_ended(self, call: CallInfo) -> None:
        self._complete(call)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every completion under way is done; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _complete(self, call: CallInfo) -> None:
        if not is_call_sid(call.call_sid):
            return  # a stream that is not a real call (a test tool's): no history
        with self._idle:
            self._pending += 1
        start_task("call-completion", self._finish, call)

    def _finish(self, call: CallInfo) -> None:
        try:
            if self._encoder is not None:
                self._encoder.encode(call.call_sid)
            activity, words = self.speech(call.call_sid)
            analytics = call_analytics(activity, words)
            spans = {side: speech_spans(active) for side, active in activity.items()}
            self._history.completed(call.call_sid, analytics, spans, self._seconds(call.call_sid))
            log_event(
                logger,
                "call_completed",
                callSid=call.call_sid,
                talkSeconds={side: analytics[side]["talkSeconds"] for side in SIDE_TRACKS},
            )
            if self._uploader is not None:  # announced once its files are stored
                self._uploader.store(call.call_sid, announce=True)
            else:
                self.announce(call.call_sid)
        except Exception:
            logger.exception("completing %s failed", call.call_sid)
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def announce(self, call_sid: str) -> None:
        """Tell the completion listeners that the call is complete, with its record."""
        record = self._history.call(call_sid) or {"callSid": call_sid}
        for listener in self._listeners:
            listener.call_completed(call_sid, record)

    def speech(self, call_sid: str) -> tuple[dict[str, Activity], dict[str, int | None]]:
        """Each side's speech per frame and words: from its finals' utterances when it was
        transcribed, else from its recordings' audio (and no words)."""
        if not self._transcribing:
            heard = {side: self._heard(call_sid, track) for side, track in SIDE_TRACKS.items()}
            return heard, {side: None for side in SIDE_TRACKS}
        lines = self._history.transcript_lines(call_sid)
        seconds = max([self._seconds(call_sid)] + [float(line.get("end", 0)) for line in lines])
        frames = round(seconds / FRAME_SECONDS)
        activity: dict[str, Activity] = {}
        words: dict[str, int | None] = {}
        for side, track in SIDE_TRACKS.items():
            own = [line for line in lines if line.get("speaker") == SPEAKER_NAMES[track]]
            spans = [(float(line.get("start", 0)), float(line.get("end", 0))) for line in own]
            activity[side] = activity_from_spans(spans, frames)
            words[side] = sum(len(str(line.get("text", "")).split()) for line in own)
        return activity, words

    def _seconds(self, call_sid: str) -> float:
        seconds = [r["seconds"] for r in self._history.recordings(call_sid, here_only=True)]
        return max(seconds, default=0.0)

    def _heard(self, call_sid: str, track: Track) -> Activity:
        """Speech in the track's recording, read a minute at a time (a pause between pieces
        lets the event loop run)."""
        levels = []
        for piece in self._track_audio(call_sid, track):
            levels.append(frame_levels(piece, OUTPUT_RATE))
            time.sleep(0)
        return activity_from_levels(np.concatenate(levels) if levels else np.zeros(0, np.float32))

    def _track_audio(self, call_sid: str, track: Track) -> Iterator[np.ndarray]:
        """The track's samples, a minute at a time: its channel of the encoded recording, if
        the call was encoded, else its WAV."""
        names = {file.name for file in self._files.files(call_sid)}
        for name in names & ENCODED_NAMES.keys():
            encoded = self._files.open(call_sid, name)
            if encoded is not None:
                yield from encoded_side(encoded, list(SIDE_TRACKS.values()).index(track))
                return
        recording = self._files.open(call_sid, f"{FILE_STEMS[track]}.wav")
        if recording is None:
            return
        with recording:
            recording.seek(HEADER_BYTES)
            while piece := recording.read(READ_SECONDS * OUTPUT_RATE * 2):
                yield np.frombuffer(piece, "<i2")
