"""What the relay sends Twilio on a bidirectional (`<Connect><Stream>`) stream: exactly the
documented fields, nothing else (Twilio refuses extra or missing ones with 31951), and the
check Twilio makes of each, for the simulator."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Literal

from callrelay.twilio.media_stream import InvalidMediaMessage


def outbound_media(stream_sid: str, payload: bytes) -> str:
    """8 kHz mu-law for Twilio to play into the call, with no file header."""
    return json.dumps(
        {
            "event": "media",
            "streamSid": stream_sid,
            "media": {"payload": base64.b64encode(payload).decode("ascii")},
        }
    )


def outbound_mark(stream_sid: str, name: str) -> str:
    """Asks Twilio to say when everything sent before it has played."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def outbound_clear(stream_sid: str) -> str:
    """Empties Twilio's buffer of audio not yet played (barge-in)."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})


@dataclass(frozen=True)
class Outbound:
    """A message from the relay to Twilio, as Twilio reads it."""

    event: Literal["media", "mark", "clear"]
    stream_sid: str
    payload: bytes = b""
    name: str = ""


def parse_outbound(text: str | bytes) -> Outbound:
    """Check a message the relay sent as Twilio does (for the simulator); the error names
    Twilio's error code."""
    if isinstance(text, bytes):
        raise InvalidMediaMessage("31950 binary frame: send JSON text frames")
    try:
        message = json.loads(text)
    except ValueError:
        raise InvalidMediaMessage("31951 not valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidMediaMessage("31951 not a JSON object")
    event, stream_sid = message.get("event"), message.get("streamSid")
    shapes = {"media": {"event", "streamSid", "media"}, "mark": {"event", "streamSid", "mark"}}
    expected = shapes.get(str(event), {"event", "streamSid"})
    if event not in ("media", "mark", "clear") or set(message) != expected:
        raise InvalidMediaMessage(f"31951 unknown event or wrong fields: {sorted(message)}")
    if not isinstance(stream_sid, str):
        raise InvalidMediaMessage("31951 streamSid missing")
    if event == "media":
        media = message["media"]
        if not isinstance(media, dict) or set(media) != {"payload"}:
            raise InvalidMediaMessage("31951 media must be {'payload': ...}")
        try:
            payload = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, TypeError):
            raise InvalidMediaMessage("31951 media.payload is not base64") from None
        return Outbound("media", stream_sid, payload=payload)
    if event == "mark":
        mark = message["mark"]
        if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
            raise InvalidMediaMessage("31951 mark must be {'name': ...}")
        return Outbound("mark", stream_sid, name=mark["name"])
    return Outbound("clear", stream_sid)
