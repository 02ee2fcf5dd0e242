"""Property tests: no input from the network makes the parser, the call state machine or an
HTTP endpoint fail with anything but a clear refusal."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrelay.call import MediaStreamSession, StreamProtocolError, StreamState
from callrelay.config import load_settings
from callrelay.live_calls import LiveCalls
from callrelay.twilio import media_stream as msg
from callrelay.twilio.media_stream import InvalidMediaMessage, parse_message
from callrelay.web.app import create_web_relay
from tests.helpers import RememberingSink

STREAM = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACCOUNT = "AC" + "3" * 32

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "event",
        "media",
        "start",
        "stop",
        "streamSid",
        "sequenceNumber",
        "track",
        "chunk",
        "timestamp",
        "payload",
        "tracks",
        "mediaFormat",
        "callSid",
        "accountSid",
        "dtmf",
        "digit",
        "mark",
        "name",
    ]
)


def valid_messages() -> list[str]:
    return [
        msg.connected_message(),
        msg.start_message(
            stream_sid=STREAM,
            account_sid=ACCOUNT,
            call_sid=CALL,
            tracks=("inbound", "outbound"),
            custom_parameters={},
            sequence_number=1,
        ),
        msg.media_message(
            stream_sid=STREAM,
            track="inbound",
            chunk=1,
            timestamp_ms=0,
            payload=b"\x10" * 160,
            sequence_number=2,
        ),
        msg.media_message(
            stream_sid=STREAM,
            track="outbound",
            chunk=1,
            timestamp_ms=20,
            payload=b"\x90" * 80,
            sequence_number=3,
        ),
        msg.dtmf_message(stream_sid=STREAM, digit="5", sequence_number=4),
        msg.stop_message(stream_sid=STREAM, account_sid=ACCOUNT, call_sid=CALL, sequence_number=5),
    ]


@st.composite
def mutated_messages(draw: st.DrawFn) -> str | bytes:
    """A Twilio message with fields replaced, removed or added, or plain garbage."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return draw(st.text(max_size=300))
    message = json.loads(draw(st.sampled_from(valid_messages())))
    for _ in range(draw(st.integers(1, 4))):
        target = message
        inner = [k for k, v in message.items() if isinstance(v, dict)]
        if len(inner) > 0 and draw(st.booleans()):
            target = message[draw(st.sampled_from(inner))]
        key = draw(fields)
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(json_values)
    return json.dumps(message)


@settings(max_examples=1500, deadline=None)
@given(mutated_messages())
def test_the_parser_refuses_bad_frames_with_a_reason_and_nothing_else(text: str | bytes) -> None:
    try:
        parsed = parse_message(text)
    except InvalidMediaMessage as refusal:
        assert str(refusal)
    else:
        assert parsed is not None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(valid_messages()), mutated_messages()), max_size=30))
def test_any_message_sequence_ends_in_a_clean_state(messages: list[str | bytes]) -> None:
    sink, registry = RememberingSink(), LiveCalls()
    session = MediaStreamSession([sink], registry)
    for text in messages:
        try:
            session.receive(text)
        except StreamProtocolError as refusal:
            assert refusal.close_code in (1002, 1003, 1007) and refusal.reason
            break
    session.close("disconnected")
    assert session.state is StreamState.ENDED
    assert registry.active() == []  # no call left open
    assert len(sink.ended) == len(sink.started) <= 1
    for track in ("inbound", "outbound"):
        sink.track_pcm(track)  # chunks tile the timeline, whatever came in


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    path=st.sampled_from(
        [
            "/make-call",
            "/voice",
            "/call-status",
            "/calls/x/hangup",
            "/calls/CA" + "0" * 32 + "/hangup",
            "/",
        ]
    ),
    form=st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=5),
    body=json_values,
    as_json=st.booleans(),
    signed=st.booleans(),
)
def test_http_endpoints_answer_bad_input_without_a_server_error(
    tmp_path_factory, path: str, form: dict[str, str], body: object, as_json: bool, signed: bool
) -> None:
    client = _client(tmp_path_factory.getbasetemp(), signed)
    headers = {"Authorization": "Bearer fuzz-token-0123456789"}
    if as_json:
        answer = client.post(
            path, data=json.dumps(body), headers=headers, content_type="application/json"
        )
    else:
        answer = client.post(path, data=form, headers=headers)
    assert answer.status_code < 500 or answer.status_code in (502, 503)


_clients: dict[tuple[Path, bool], object] = {}


def _client(base: Path, signatures: bool):
    """With signatures on, Twilio's endpoints refuse first; off, the fuzz reaches the handlers."""
    if (base, signatures) not in _clients:
        relay = create_web_relay(
            load_settings(
                captures_dir=base / "fuzz",
                relay_api_token="fuzz-token-0123456789",
                twilio_auth_token="fuzz-auth" if signatures else None,
            ),
            speech_engine=None,
        )
        _clients[(base, signatures)] = relay.app.test_client()
    return _clients[(base, signatures)]
