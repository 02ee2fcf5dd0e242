"""`transcript.jsonl` among a call's files: every final of a call, one JSON object per line."""

from __future__ import annotations

import logging

from callrelay.asr.base import Transcript
from callrelay.call import CallInfo
from callrelay.logs import log_event
from callrelay.storage.files import TRANSCRIPT_FILE, CallFiles
from callrelay.tracks import SPEAKER_NAMES
from callrelay.transcription import TranscriptListener
from callrelay.twilio.media_stream import Track

logger = logging.getLogger("callrelay.recording")


class TranscriptFile(TranscriptListener):
    """Each final, appended to the call's `transcript.jsonl` as one JSON object."""

    def __init__(self, files: CallFiles) -> None:
        self._files = files

    def transcript(self, call: CallInfo, track: Track, transcript: Transcript) -> None:
        if not transcript.is_final:
            return
        line = {
            "speaker": SPEAKER_NAMES[track],
            "callSid": call.call_sid,
            "streamSid": call.stream_sid,
            "text": transcript.text,
            "start": round(transcript.start, 3),
            "end": round(transcript.end, 3),
            "confidence": transcript.confidence,
        }
        if transcript.words:
            line["words"] = [
                {"word": w.text, "start": w.start, "end": w.end, "probability": w.probability}
                for w in transcript.words
            ]
        if transcript.redacted:  # where the recordings are to be silenced
            line["redacted"] = [
                {"kind": r.kind, "start": r.start, "end": r.end} for r in transcript.redacted
            ]
        try:
            self._files.append_line(call.call_sid, TRANSCRIPT_FILE, line)
        except OSError as error:
            log_event(
                logger,
                "transcript_write_failed",
                logging.ERROR,
                callSid=call.call_sid,
                error=f"{type(error).__name__}: {error.strerror or error}",
            )
