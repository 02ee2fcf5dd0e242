"""A plain WebSocket route in the Flask app: the `/stream` Twilio connects to.

Flask-SocketIO speaks Socket.IO only; Twilio speaks plain RFC 6455. simple-websocket accepts
the upgrade on the same port, and under gevent its reader is a greenlet, so a message costs a
greenlet switch, not a thread wake-up.

This is the one module that knows simple-websocket's and gunicorn's ways beyond their public
API: a socket's reader thread (`Server.thread`) and which server it runs under (`Server.mode`),
whether it is still connected and how it was closed (`connected`, `close_reason`, and its
wsproto connection's state), and
gunicorn's convention that a WSGI app raising `StopIteration` has used the socket itself.
`tests/test_library_contracts.py` checks each against the installed releases, which
`pyproject.toml` pins.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, cast

from flask import Flask, Response, request
from simple_websocket import ConnectionClosed, Server
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import CloseReason

CLOSE_LINGER_SECONDS = 1.0


class AcceptedSocket:
    """A WebSocket the server accepted, as a handler uses it. Its methods run on the handler's
    greenlet; the socket's reader is a greenlet of its own."""

    def __init__(self, ws: Server) -> None:
        self._ws = ws
        self._closed_here = False

    def send(self, data: str | bytes) -> None:
        """Raises `ConnectionClosed` once the socket has closed."""
        self._ws.send(data)

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message; None after `timeout`. Raises `ConnectionClosed` once closed."""
        return cast(str | bytes | None, self._ws.receive(timeout=timeout))

    def close(self, code: int, reason: str) -> None:
        self._closed_here = True
        self._ws.close(code, reason)

    @property
    def lost(self) -> bool:
        """Whether the connection has gone (a `receive` may not have said so yet)."""
        return not self._ws.connected

    @property
    def close_code(self) -> int | None:
        """The code the connection was closed with, once it has been.

        simple-websocket closes a socket whose message is over its size limit itself and
        records no code for it: that is a close this side began (wsproto's state) with no code
        heard back and no `close` called here."""
        if self._ws.connected:
            return None
        code = int(self._ws.close_reason)
        if (
            code == CloseReason.NO_STATUS_RCVD
            and not self._closed_here
            and self._ws.ws.state is ConnectionState.LOCAL_CLOSING
        ):
            return CloseReason.MESSAGE_TOO_BIG
        return code


def add_websocket_route(
    app: Flask,
    path: str,
    handler: Callable[..., None],
    *,
    max_message_size: int,
) -> None:
    """Serve WebSocket upgrades at `path` with `handler(socket, **path_variables)` (an
    `AcceptedSocket`), as flask-sock's `route` does."""

    def websocket_view(**variables: str) -> Response:
        ws = Server.accept(request.environ, max_message_size=max_message_size)
        # Let the reader start reading first: one that has not run by the time the handler
        # closes (a stream refused at once) would see the close and drop the socket at once.
        time.sleep(0)
        with contextlib.suppress(ConnectionClosed):
            handler(AcceptedSocket(ws), **variables)
        with contextlib.suppress(Exception):
            ws.close()
        # The socket goes once the peer has answered our close frame (or hung up, or had
        # CLOSE_LINGER_SECONDS): closed at once, an answer arriving after it would be met with
        # a reset, which may cost the peer the close frame it has not read yet.
        ws.thread.join(CLOSE_LINGER_SECONDS)
        return _SocketTakenOver(mode=ws.mode)

    app.add_url_rule(path, f"{handler.__name__}:{path}", websocket_view, websocket=True)


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
