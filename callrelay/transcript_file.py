"""`captures/<CallSid>/transcript.jsonl`: every final of a call, one JSON object per line."""

from __future__ import annotations

import json
import logging

from callrelay.asr.base import Transcript
from callrelay.call import CallInfo
from callrelay.logs import log_event
from callrelay.recording import CallRecorder
from callrelay.tracks import SPEAKER_NAMES
from callrelay.transcription import TranscriptListener
from callrelay.twilio.media_stream import Track

logger = logging.getLogger("callrelay.recording")


class TranscriptFile(TranscriptListener):
    """`captures/<CallSid>/transcript.jsonl`: each final, one JSON object per line."""

    def __init__(self, recorder: CallRecorder) -> None:
        self._recorder = recorder

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
        folder = self._recorder.call_folder(call.call_sid)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / "transcript.jsonl").open("a", encoding="utf-8") as file:
                file.write(json.dumps(line, ensure_ascii=False) + "\n")
        except OSError as error:
            log_event(
                logger,
                "transcript_write_failed",
                logging.ERROR,
                callSid=call.call_sid,
                error=f"{type(error).__name__}: {error.strerror or error}",
            )
