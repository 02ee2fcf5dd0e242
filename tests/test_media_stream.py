import base64
import json

import pytest

from callrelay.twilio import media_stream as msg
from callrelay.twilio.media_stream import (
    Connected,
    Dtmf,
    InvalidMediaMessage,
    Mark,
    Media,
    Start,
    Stop,
    UnknownEvent,
    parse_message,
)

STREAM = "MZ" + "a" * 32
CALL = "CA" + "b" * 32
ACCOUNT = "AC" + "c" * 32

# Twilio's documented examples, verbatim apart from the SIDs.
DOC_START = f"""{{
  "event": "start", "sequenceNumber": "1",
  "start": {{
    "accountSid": "{ACCOUNT}", "streamSid": "{STREAM}", "callSid": "{CALL}",
    "tracks": [ "inbound", "outbound" ],
    "mediaFormat": {{ "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 }},
    "customParameters": {{ "FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob" }}
  }},
  "streamSid": "{STREAM}"
}}"""

DOC_MEDIA = f"""{{ "event": "media", "sequenceNumber": "3",
 "media": {{ "track": "outbound", "chunk": "1", "timestamp": "5", "payload": "no+JhoaJjpz=" }},
 "streamSid": "{STREAM}" }}"""


def test_connected_message_is_parsed() -> None:
    assert parse_message(msg.connected_message()) == Connected("Call", "1.0.0")


def test_documented_start_message_is_parsed() -> None:
    start = parse_message(DOC_START)
    assert isinstance(start, Start)
    assert start.tracks == ("inbound", "outbound")
    assert start.call_sid == CALL and start.stream_sid == STREAM
    assert start.custom_parameters["RemoteParty"] == "Bob"
    assert start.sequence_number == 1


def test_documented_media_message_is_parsed_with_string_counters() -> None:
    media = parse_message(DOC_MEDIA)
    assert isinstance(media, Media)
    assert (media.track, media.chunk, media.timestamp_ms, media.sequence_number) == (
        "outbound",
        1,
        5,
        3,
    )
    assert media.payload == base64.b64decode("no+JhoaJjpz=")


def test_built_messages_parse_back_to_the_same_values() -> None:
    text = msg.media_message(
        stream_sid=STREAM,
        track="inbound",
        chunk=7,
        timestamp_ms=145,
        payload=b"\x01\x02",
        sequence_number=9,
    )
    assert parse_message(text) == Media(STREAM, "inbound", 7, 145, b"\x01\x02", 9)
    stop = msg.stop_message(
        stream_sid=STREAM, account_sid=ACCOUNT, call_sid=CALL, sequence_number=10
    )
    assert parse_message(stop) == Stop(STREAM, ACCOUNT, CALL, 10)
    dtmf = msg.dtmf_message(stream_sid=STREAM, digit="#", sequence_number=4)
    assert parse_message(dtmf) == Dtmf(STREAM, "#", "inbound_track", 4)


def test_mark_is_parsed() -> None:
    text = json.dumps(
        {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM, "mark": {"name": "my label"}}
    )
    assert parse_message(text) == Mark(STREAM, "my label", 4)


def test_unknown_event_is_kept_not_fatal() -> None:
    assert parse_message('{"event": "transcript", "x": 1}') == UnknownEvent("transcript")


def _media(**changes: object) -> str:
    message = json.loads(DOC_MEDIA)
    for key, value in changes.items():
        if value is None:
            message["media"].pop(key)
        else:
            message["media"][key] = value
    return json.dumps(message)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b'{"event": "media"}', "binary frame"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"no": "event"}', "event is missing"),
        (_media(payload="***"), "media.payload is not base64"),
        (_media(payload=""), "media.payload is empty"),
        (_media(payload=None), "media.payload is missing"),
        (_media(track="inbound_track"), "media.track is 'inbound_track'"),
        (_media(timestamp="-5"), "media.timestamp"),
        (_media(timestamp="5.5"), "media.timestamp"),
        (_media(chunk=True), "media.chunk is not a number"),
        ('{"event": "media", "media": [], "streamSid": "MZ"}', "media is missing or not an object"),
        ('{"event": "start", "start": {"tracks": []}}', "start.tracks"),
        (DOC_START.replace("audio/x-mulaw", "audio/l16"), "start.mediaFormat"),
        (DOC_START.replace('"inbound", "outbound"', '"inbound", "inbound"'), "twice"),
        ('{"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "x"}}', "not a DTMF key"),
    ],
)
def test_malformed_messages_are_refused_with_a_clear_reason(text: str | bytes, says: str) -> None:
    with pytest.raises(InvalidMediaMessage, match=None) as caught:
        parse_message(text)
    assert says in str(caught.value)


def test_a_bad_media_message_names_its_event() -> None:
    with pytest.raises(InvalidMediaMessage) as caught:
        parse_message(_media(payload="!!"))
    assert caught.value.event == "media"
