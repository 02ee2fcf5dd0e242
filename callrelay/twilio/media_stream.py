"""Twilio Media Streams messages: parsing what Twilio sends and building it (for the simulator).

One home for the wire format. Parsing is strict about what we use and lenient about what we
don't (Twilio may add fields); every failure is an `InvalidMediaMessage` that says what is wrong.
Twilio's own quirks kept here: `sequenceNumber`, `chunk` and `timestamp` are strings, `chunk` is
not a per-track counter you can order by, and `dtmf.track` is "inbound_track" while
`media.track` is "inbound".
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pybase64

Track = Literal["inbound", "outbound"]
TRACKS: tuple[Track, ...] = ("inbound", "outbound")

MULAW_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


class InvalidMediaMessage(ValueError):
    """A message Twilio would never send; the text says which field is wrong.

    `event` is the message's event name when the frame was JSON with one.
    """

    def __init__(self, reason: str, event: str | None = None) -> None:
        super().__init__(reason)
        self.event = event


@dataclass(frozen=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True)
class Start:
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[Track, ...]
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    sequence_number: int | None = None


@dataclass(frozen=True)
class Media:
    stream_sid: str
    track: Track
    chunk: int
    timestamp_ms: int
    payload: bytes
    sequence_number: int | None = None


@dataclass(frozen=True)
class Stop:
    stream_sid: str
    account_sid: str
    call_sid: str
    sequence_number: int | None = None


@dataclass(frozen=True)
class Mark:
    stream_sid: str
    name: str
    sequence_number: int | None = None


@dataclass(frozen=True)
class Dtmf:
    stream_sid: str
    digit: str
    track: str
    sequence_number: int | None = None


@dataclass(frozen=True)
class UnknownEvent:
    """An event this server does not know; kept, not fatal, since Twilio may add new ones."""

    event: str


StreamMessage = Connected | Start | Media | Stop | Mark | Dtmf | UnknownEvent


def _object(container: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = container.get(key)
    if not isinstance(value, dict):
        raise InvalidMediaMessage(f"{where}{key} is missing or not an object")
    return value


def _text(container: Mapping[str, Any], key: str, where: str) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidMediaMessage(f"{where}{key} is missing or not a non-empty string")
    return value


def _counter(container: Mapping[str, Any], key: str, where: str) -> int:
    """Twilio sends counters as decimal strings; accept plain integers too."""
    value = container.get(key)
    if isinstance(value, bool):
        raise InvalidMediaMessage(f"{where}{key} is not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        number = int(value)
    else:
        raise InvalidMediaMessage(f"{where}{key} is missing or not a decimal string")
    if number < 0:
        raise InvalidMediaMessage(f"{where}{key} is negative")
    return number


def _sequence_number(message: Mapping[str, Any]) -> int | None:
    if "sequenceNumber" not in message:
        return None
    return _counter(message, "sequenceNumber", "")


def _stream_sid(message: Mapping[str, Any], inner: Mapping[str, Any] | None = None) -> str:
    if "streamSid" in message:
        return _text(message, "streamSid", "")
    if inner is not None and "streamSid" in inner:
        return _text(inner, "streamSid", "start.")
    raise InvalidMediaMessage("streamSid is missing")


def _track(value: object, where: str) -> Track:
    if value == "inbound":
        return "inbound"
    if value == "outbound":
        return "outbound"
    raise InvalidMediaMessage(f"{where} is {value!r}, expected 'inbound' or 'outbound'")


def _parse_start(message: Mapping[str, Any]) -> Start:
    start = _object(message, "start", "")
    tracks = start.get("tracks")
    if not isinstance(tracks, list) or not tracks:
        raise InvalidMediaMessage("start.tracks is missing or not a non-empty list")
    parsed_tracks = tuple(_track(track, "start.tracks[]") for track in tracks)
    if len(set(parsed_tracks)) != len(parsed_tracks):
        raise InvalidMediaMessage("start.tracks names a track twice")
    media_format = start.get("mediaFormat", MULAW_FORMAT)
    if not isinstance(media_format, dict) or any(
        media_format.get(key) != value for key, value in MULAW_FORMAT.items()
    ):
        raise InvalidMediaMessage(
            f"start.mediaFormat is {media_format!r}; only 8 kHz mono audio/x-mulaw is supported"
        )
    parameters = start.get("customParameters", {})
    if not isinstance(parameters, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in parameters.items()
    ):
        raise InvalidMediaMessage("start.customParameters is not an object of strings")
    return Start(
        stream_sid=_stream_sid(message, start),
        account_sid=_text(start, "accountSid", "start."),
        call_sid=_text(start, "callSid", "start."),
        tracks=parsed_tracks,
        custom_parameters=dict(parameters),
        sequence_number=_sequence_number(message),
    )


def _parse_media(message: Mapping[str, Any]) -> Media:
    media = _object(message, "media", "")
    encoded = media.get("payload")
    if not isinstance(encoded, str):
        raise InvalidMediaMessage("media.payload is missing or not a string")
    try:
        payload = pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMediaMessage("media.payload is not base64") from None
    if not payload:
        raise InvalidMediaMessage("media.payload is empty")
    return Media(
        stream_sid=_stream_sid(message),
        track=_track(media.get("track"), "media.track"),
        chunk=_counter(media, "chunk", "media."),
        timestamp_ms=_counter(media, "timestamp", "media."),
        payload=payload,
        sequence_number=_sequence_number(message),
    )


def _parse_stop(message: Mapping[str, Any]) -> Stop:
    stop = _object(message, "stop", "")
    return Stop(
        stream_sid=_stream_sid(message),
        account_sid=_text(stop, "accountSid", "stop."),
        call_sid=_text(stop, "callSid", "stop."),
        sequence_number=_sequence_number(message),
    )


def _parse_mark(message: Mapping[str, Any]) -> Mark:
    mark = _object(message, "mark", "")
    return Mark(_stream_sid(message), _text(mark, "name", "mark."), _sequence_number(message))


def _parse_dtmf(message: Mapping[str, Any]) -> Dtmf:
    dtmf = _object(message, "dtmf", "")
    digit = _text(dtmf, "digit", "dtmf.")
    if digit not in "0123456789*#ABCDabcdw" or len(digit) != 1:
        raise InvalidMediaMessage(f"dtmf.digit is {digit!r}, not a DTMF key")
    track = dtmf.get("track", "inbound_track")
    if not isinstance(track, str):
        raise InvalidMediaMessage("dtmf.track is not a string")
    return Dtmf(_stream_sid(message), digit, track, _sequence_number(message))


def _parse_connected(message: Mapping[str, Any]) -> Connected:
    return Connected(str(message.get("protocol", "Call")), str(message.get("version", "")))


_PARSERS: dict[str, Callable[[Mapping[str, Any]], StreamMessage]] = {
    "media": _parse_media,
    "connected": _parse_connected,
    "start": _parse_start,
    "stop": _parse_stop,
    "mark": _parse_mark,
    "dtmf": _parse_dtmf,
}


def parse_message(text: str | bytes) -> StreamMessage:
    """One WebSocket text frame from Twilio to a typed message."""
    if isinstance(text, bytes):
        raise InvalidMediaMessage("binary frame; Twilio sends JSON text frames only")
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidMediaMessage("frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidMediaMessage("frame is JSON but not an object")
    event = message.get("event")
    if not isinstance(event, str):
        raise InvalidMediaMessage("event is missing or not a string")
    parse = _PARSERS.get(event)
    if parse is None:
        return UnknownEvent(event[:64])
    try:
        return parse(message)
    except InvalidMediaMessage as error:
        raise InvalidMediaMessage(str(error), event=event) from None


# Building messages exactly as Twilio sends them (used by the simulator).


def connected_message() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(
    *,
    stream_sid: str,
    account_sid: str,
    call_sid: str,
    tracks: tuple[Track, ...],
    custom_parameters: Mapping[str, str],
    sequence_number: int,
) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(sequence_number),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": list(tracks),
                "mediaFormat": MULAW_FORMAT,
                "customParameters": dict(custom_parameters),
            },
            "streamSid": stream_sid,
        }
    )


def media_message(
    *,
    stream_sid: str,
    track: Track,
    chunk: int,
    timestamp_ms: int,
    payload: bytes,
    sequence_number: int,
) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(sequence_number),
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
            "streamSid": stream_sid,
        }
    )


def dtmf_message(*, stream_sid: str, digit: str, sequence_number: int) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(sequence_number),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def stop_message(*, stream_sid: str, account_sid: str, call_sid: str, sequence_number: int) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence_number),
            "stop": {"accountSid": account_sid, "callSid": call_sid},
            "streamSid": stream_sid,
        }
    )


def mark_message(*, stream_sid: str, name: str, sequence_number: int) -> str:
    """Twilio's echo of a mark, once the audio before it has played (or was cleared)."""
    return json.dumps(
        {
            "event": "mark",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )
