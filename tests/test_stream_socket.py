"""`/stream` speaks the WebSocket protocol in full: pings, the close handshake."""

from __future__ import annotations

from wsproto.events import (
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)

from callrelay.simulator.local_relay import RunningRelay
from callrelay.twilio import media_stream as msg
from callrelay.web.websocket_route import CLOSE_LINGER_SECONDS
from tests.helpers import RawClient

IDS = {"stream_sid": "MZ" + "1" * 32, "account_sid": "AC" + "0" * 32, "call_sid": "CA" + "1" * 32}


def test_a_ping_is_answered_with_a_pong_carrying_its_payload(relay: RunningRelay) -> None:
    with RawClient(relay) as client:
        client.send(TextMessage(msg.connected_message()))
        client.send(Ping(b"are you there"))
        event = client.next_event()
    assert isinstance(event, Pong)
    assert event.payload == b"are you there"


def test_after_stop_the_server_closes_cleanly_and_ends_the_connection(
    relay: RunningRelay,
) -> None:
    with RawClient(relay) as client:
        client.send(TextMessage(msg.connected_message()))
        client.send(
            TextMessage(
                msg.start_message(
                    **IDS, tracks=("inbound",), custom_parameters={}, sequence_number=1
                )
            )
        )
        client.send(TextMessage(msg.stop_message(**IDS, sequence_number=2)))
        closing = client.next_event()
        assert isinstance(closing, CloseConnection)
        assert closing.code == 1000
        client.send(closing.response())
        # Closed as soon as we answered, not after waiting out its linger for an answer.
        assert client.next_event(timeout=CLOSE_LINGER_SECONDS / 2) is None
