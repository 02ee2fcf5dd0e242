"""The recorder with redaction on (`REDACT`): each track's audio waits to be masked
(`recording_masks.DelayedMasking`) before it is written, and a stream's recordings are final
once its transcripts are all out, not when its audio ends."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from callrelay.asr.base import Transcript
from callrelay.call import OUTPUT_RATE, CallInfo
from callrelay.logs import log_event
from callrelay.recording import CallRecorder, TrackRecording
from callrelay.recording_masks import DelayedMasking
from callrelay.storage.files import LocalCallFiles
from callrelay.transcription import TranscriptListener
from callrelay.twilio.media_stream import Track

logger = logging.getLogger("callrelay.recording")


class RedactedCallRecorder(CallRecorder, TranscriptListener):
    """A sink (the audio) and a transcript listener (what to mask, and when a stream's
    transcripts are all out), heard before the history and the completion."""

    def __init__(self, files: LocalCallFiles) -> None:
        super().__init__(files)
        self._ending: dict[str, tuple[CallInfo, dict[Track, TrackRecording]]] = {}
        self._ending_lock = threading.Lock()

    def _new_track(self, path: Path) -> TrackRecording:
        return TrackRecording(path, DelayedMasking())

    def _ended(self, call: CallInfo, tracks: dict[Track, TrackRecording]) -> None:
        """The stream's audio is over; what waits to be masked waits for its last finals."""
        with self._ending_lock:
            self._ending[call.stream_sid] = (call, tracks)

    def transcript(self, call: CallInfo, track: Track, transcript: Transcript) -> None:
        if not transcript.redacted:
            return
        with self._lock:
            tracks = self._calls.get(call.stream_sid)
        if tracks is None:
            with self._ending_lock:
                tracks = self._ending.get(call.stream_sid, (call, {}))[1]
        recording = tracks.get(track)
        if recording is None:
            return
        late = [
            recording.mask(int(span.start * OUTPUT_RATE), int(span.end * OUTPUT_RATE))
            for span in transcript.redacted
        ]
        if any(late):
            log_event(
                logger,
                "recording_masked_late",
                logging.WARNING,
                callSid=call.call_sid,
                streamSid=call.stream_sid,
                detail="recognition was far behind: a masked stretch was on disk before it "
                "was silenced there",
            )

    def transcription_ended(self, call: CallInfo) -> None:
        with self._ending_lock:
            ending = self._ending.pop(call.stream_sid, None)
        if ending is not None:
            self._finish(*ending)

    def flush_all(self) -> None:
        """Finish every stream still waiting for its transcripts (the server is stopping)."""
        with self._ending_lock:
            ending, self._ending = list(self._ending.values()), {}
        for call, tracks in ending:
            self._finish(call, tracks)
