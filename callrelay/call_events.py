"""What a call's events say to the outside world, the same in every channel: Socket.IO's
`call_started`, `Caller`/`Receiver`, `call_paused`/`call_resumed`, `call_ended`,
`call_completed` and the webhooks carrying them. Pure functions of the call."""

from __future__ import annotations

from typing import Any

from callrelay.asr.base import Transcript
from callrelay.call import CallInfo


def started(call: CallInfo) -> dict[str, Any]:
    return {
        **call.ids,
        "tracks": list(call.tracks),
        "customParameters": dict(call.custom_parameters),
        "resumed": call.resumed,
        "offsetMs": call.offset_ms,
    }


def ended(call: CallInfo, reason: str) -> dict[str, Any]:
    """`reason`: stop, disconnected, idle_timeout, protocol_error, shutdown."""
    return {
        **call.ids,
        "tracks": list(call.tracks),
        "reason": reason,
        "customParameters": dict(call.custom_parameters),
    }


def paused(call_sid: str, reason: str, at: float) -> dict[str, Any]:
    """A pause's start or end: why (`api`, `dtmf`), and when (seconds since 1970)."""
    return {"callSid": call_sid, "reason": reason, "at": at}


def transcribed(call: CallInfo, transcript: Transcript) -> dict[str, Any]:
    """A final or a partial: its words and their times on the call's timeline, in seconds."""
    payload: dict[str, Any] = {
        **call.ids,
        "text": transcript.text,
        "start": round(transcript.start, 3),
        "end": round(transcript.end, 3),
    }
    if transcript.confidence is not None:
        payload["confidence"] = transcript.confidence
    return payload


def completed(record: dict[str, Any]) -> dict[str, Any]:
    """A complete call as `GET /calls/<CallSid>` shows it, without its transcript or its
    event log: how it went and its analytics."""
    keys = (
        "callSid",
        "status",
        "direction",
        "from",
        "to",
        "seconds",
        "startedAt",
        "endedAt",
        "completedAt",
        "analytics",
    )
    return {key: record[key] for key in keys if key in record}
