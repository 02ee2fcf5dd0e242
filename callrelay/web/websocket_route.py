"""A plain WebSocket route in the Flask app: the `/stream` Twilio connects to.

Flask-SocketIO speaks Socket.IO only; Twilio speaks plain RFC 6455. simple-websocket accepts
the upgrade on the same port, and under gevent its reader is a greenlet, so a message costs a
greenlet switch, not a thread wake-up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from simple_websocket import ConnectionClosed, Server

CLOSE_LINGER_SECONDS = 1.0


def add_websocket_route(
    app: Flask,
    path: str,
    handler: Callable[..., None],
    *,
    max_message_size: int,
) -> None:
    """Serve WebSocket upgrades at `path` with `handler(ws, **path_variables)`, as
    flask-sock's `route` does."""

    def websocket_view(**variables: str) -> Response:
        ws = Server.accept(request.environ, max_message_size=max_message_size)
        # Let the reader start reading first: one that has not run by the time the handler
        # closes (a stream refused at once) would see the close and drop the socket at once.
        time.sleep(0)
        with contextlib.suppress(ConnectionClosed):
            handler(ws, **variables)
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
