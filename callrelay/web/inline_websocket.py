"""A WebSocket route whose handler reads its own socket: the `/stream` Twilio connects to.

flask-sock's server (simple-websocket) reads every socket on a thread of its own and hands
each message to the handler through an Event: two thread switches per message, and Twilio
sends 100 messages a second per call. Here the handler's thread reads the socket itself;
the WebSocket protocol is still wsproto's, and pings, the close handshake and the message
size limit are still simple-websocket's own event handling.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from simple_websocket import ConnectionClosed, Server
from wsproto.events import CloseConnection
from wsproto.utilities import LocalProtocolError

CLOSE_LINGER_SECONDS = 1.0


class _NoReaderThread:
    """Stands in for simple-websocket's reader thread, which this server does not need."""

    name = "inline"

    def __init__(self, target: Callable[[], None]) -> None:
        self.target = target

    def start(self) -> None:
        pass


class InlineWebSocket(Server):  # type: ignore[misc]
    """simple-websocket's server, read on the caller's thread by `receive`."""

    connected: bool

    def __init__(self, environ: dict[str, Any], *, max_message_size: int) -> None:
        super().__init__(environ, max_message_size=max_message_size, thread_class=_NoReaderThread)
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN)

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message; None if none came within `timeout` seconds.

        Raises ConnectionClosed once the connection has ended and every message is taken."""
        while self.connected and not self.input_buffer:
            if not self._poll.poll(None if timeout is None else timeout * 1000):
                return None
            try:
                data = self.sock.recv(self.receive_bytes)
            except OSError:
                data = b""
            if not data:
                self.connected = False
                break
            try:
                self.ws.receive_data(data)
                self.connected = self._handle_events()
            except LocalProtocolError:
                self.connected = False
        if self.input_buffer:
            message: str | bytes = self.input_buffer.pop(0)
            return message
        raise ConnectionClosed(self.close_reason, self.close_message)

    def finish(self, linger: float = CLOSE_LINGER_SECONDS) -> None:
        """Close the socket once the peer has answered our close frame (or hung up, or had
        `linger` seconds): closed at once, a reply arriving after it would be answered with a
        reset, which may cost the peer the close frame it has not read yet."""
        deadline = time.monotonic() + linger
        with contextlib.suppress(OSError, LocalProtocolError):
            while (left := deadline - time.monotonic()) > 0 and self._poll.poll(left * 1000):
                data = self.sock.recv(self.receive_bytes)
                if not data:
                    break
                self.ws.receive_data(data)
                if any(isinstance(event, CloseConnection) for event in self.ws.events()):
                    break
        with contextlib.suppress(OSError):
            self.sock.close()


def add_websocket_route(
    app: Flask,
    path: str,
    handler: Callable[[InlineWebSocket], None],
    *,
    max_message_size: int,
) -> None:
    """Serve WebSocket upgrades at `path` with `handler`, as flask-sock's `route` does."""

    def websocket_view() -> Response:
        ws = InlineWebSocket(request.environ, max_message_size=max_message_size)
        with contextlib.suppress(ConnectionClosed):
            handler(ws)
        with contextlib.suppress(Exception):
            ws.close()
        ws.finish()
        return _SocketTakenOver(mode=ws.mode)

    app.add_url_rule(path, handler.__name__, websocket_view, websocket=True)


class _SocketTakenOver(Response):
    """The response to an upgrade whose socket the handler has used and closed: nothing to
    send, and each server is told so in its own way (flask-sock does the same)."""

    def __init__(self, *, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if self.mode == "gunicorn":
            raise StopIteration()
        if self.mode == "werkzeug":
            return super().__call__(environ, start_response)
        return []
