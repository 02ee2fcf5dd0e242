"""Reading TwiML the way Twilio does, for the verbs the relay uses."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from callrelay.twilio.media_stream import Track

TRACK_ATTRIBUTE: dict[str, tuple[Track, ...]] = {
    "inbound_track": ("inbound",),
    "outbound_track": ("outbound",),
    "both_tracks": ("inbound", "outbound"),
}


class TwimlError(ValueError):
    """TwiML Twilio would refuse; the text carries Twilio's error code where there is one."""


@dataclass(frozen=True)
class StreamInstruction:
    url: str
    tracks: tuple[Track, ...]
    parameters: dict[str, str] = field(default_factory=dict)
    bidirectional: bool = False


@dataclass(frozen=True)
class CallScript:
    stream: StreamInstruction | None
    dial: str | None
    pause_seconds: float
    said: tuple[str, ...] = ()
    """What `<Say>` verbs say, in order."""
    caller_id: str | None = None
    """The `<Dial callerId>`: the number the dialled party sees."""


def read_twiml(text: str) -> CallScript:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise TwimlError(f"12100 Document parse failure: {error}") from None
    if root.tag != "Response":
        raise TwimlError("12102 Invalid root element: expected <Response>")
    stream = None
    dial = None
    caller_id = None
    pause = 0.0
    said: list[str] = []
    for verb in root:
        if verb.tag in ("Start", "Connect"):
            element = verb.find("Stream")
            if element is not None and stream is None:
                stream = _stream(element, bidirectional=verb.tag == "Connect")
        elif verb.tag == "Dial":
            number = verb.find("Number")
            dial = ((number.text if number is not None else verb.text) or "").strip() or None
            caller_id = verb.get("callerId")
        elif verb.tag == "Say":
            said.append((verb.text or "").strip())
        elif verb.tag == "Pause":
            pause += float(verb.get("length", "1"))
    return CallScript(
        stream=stream, dial=dial, pause_seconds=pause, said=tuple(said), caller_id=caller_id
    )


def _stream(element: ET.Element, *, bidirectional: bool) -> StreamInstruction:
    url = element.get("url", "")
    if not url.startswith(("wss://", "ws://")):
        raise TwimlError(f"31922 Stream URL schema not supported: {url!r}")
    if "?" in url:
        raise TwimlError("31920 Stream handshake error: the url must not carry a query string")
    track = element.get("track", "inbound_track")
    if bidirectional and track != "inbound_track":
        raise TwimlError("31941 Invalid Track configuration for <Connect><Stream>")
    if track not in TRACK_ATTRIBUTE:
        raise TwimlError(f"31941 Invalid Track configuration: {track!r}")
    parameters = {
        p.get("name", ""): p.get("value", "") for p in element.findall("Parameter") if p.get("name")
    }
    return StreamInstruction(url, TRACK_ATTRIBUTE[track], parameters, bidirectional)
