"""`/stream` speaks the WebSocket protocol in full: pings, the close handshake."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from callrelay.simulator.local_relay import RunningRelay
from callrelay.twilio import media_stream as msg
from callrelay.web.websocket_route import CLOSE_LINGER_SECONDS

IDS = {"stream_sid": "MZ" + "1" * 32, "account_sid": "AC" + "0" * 32, "call_sid": "CA" + "1" * 32}


class RawClient:
    """A WebSocket client with nothing between the test and the frames (wsproto, one socket)."""

    def __init__(self, relay: RunningRelay) -> None:
        url = urlsplit(relay.ws_url)
        assert url.hostname and url.port
        self.sock = socket.create_connection((url.hostname, url.port), timeout=5)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [(k.encode(), v.encode()) for k, v in relay.stream_headers().items()]
        self.sock.sendall(
            self.ws.send(Request(host=url.netloc, target=url.path, extra_headers=headers))
        )
        assert isinstance(self.next_event(), AcceptConnection)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def next_event(self, timeout: float = 5.0) -> Event | None:
        """The next event from the server; None when the connection has ended (EOF)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.ws.events():
                return event
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(4096)
            if not data:
                return None
            self.ws.receive_data(data)


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
