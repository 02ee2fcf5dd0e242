"""A call's events as webhooks: each written to the outbox as it happens, on the task it
happens on (the stream's, the transcription reader's, the completion's). Writing is a short
local commit; a failed one is logged and counted, and the call goes on."""

from __future__ import annotations

import logging
from typing import Any

from callrelay import call_events
from callrelay.asr.base import Transcript
from callrelay.call import CallInfo, CallSink
from callrelay.completion import CompletionListener
from callrelay.logs import log_event
from callrelay.pauses import PauseListener
from callrelay.tracks import SPEAKER_NAMES
from callrelay.transcription import TranscriptListener
from callrelay.twilio.media_stream import Track
from callrelay.twilio.sids import is_call_sid
from callrelay.webhooks.delivery import WebhookDelivery
from callrelay.webhooks.events import WebhookEvent

logger = logging.getLogger("callrelay.webhooks")


class WebhookSink(CallSink, TranscriptListener, CompletionListener, PauseListener):
    def __init__(
        self, delivery: WebhookDelivery, event_types: frozenset[str], public_url: str | None
    ) -> None:
        self._delivery = delivery
        self._types = event_types
        self._base = public_url or ""
        """Links in `call.completed` are absolute with PUBLIC_URL, else paths on the relay."""
        self.unwritten = 0
        """Events the outbox could not take (a full disk): logged and lost."""

    def call_started(self, call: CallInfo) -> None:
        self._send("call.started", call.call_sid, call_events.started(call))

    def call_ended(self, call: CallInfo, reason: str) -> None:
        self._send("call.ended", call.call_sid, call_events.ended(call, reason))

    def transcript(self, call: CallInfo, track: Track, transcript: Transcript) -> None:
        kind = "transcript.final" if transcript.is_final else "transcript.partial"
        data = {**call_events.transcribed(call, transcript), "speaker": SPEAKER_NAMES[track]}
        self._send(kind, call.call_sid, data)

    def call_paused(self, call_sid: str, reason: str, at: float) -> None:
        self._send("call.paused", call_sid, call_events.paused(call_sid, reason, at))

    def call_resumed(self, call_sid: str, reason: str, at: float) -> None:
        self._send("call.resumed", call_sid, call_events.paused(call_sid, reason, at))

    def call_completed(self, call_sid: str, record: dict[str, Any]) -> None:
        path = f"{self._base}/calls/{call_sid}"
        links = {
            "call": path,
            "transcript": f"{path}/transcript",
            "captions": f"{path}/transcript?format=vtt",
            **({"recording": f"{path}/{record['stereo']['name']}"} if "stereo" in record else {}),
        }
        self._send("call.completed", call_sid, {**call_events.completed(record), "links": links})

    def _send(self, event_type: str, call_sid: str, data: dict[str, Any]) -> None:
        if event_type not in self._types or not is_call_sid(call_sid):
            return
        event = WebhookEvent.new(event_type, call_sid, data)
        try:
            self._delivery.enqueue(event)
        except Exception as error:
            self.unwritten += 1
            log_event(
                logger,
                "webhook_outbox_write_failed",
                logging.ERROR,
                eventType=event_type,
                callSid=call_sid,
                error=f"{type(error).__name__}: {error}",
            )
