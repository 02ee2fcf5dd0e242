"""Builds the relay: one Flask app with Socket.IO, the `/stream` socket and the HTTP routes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, request
from flask_sock import Sock
from flask_socketio import SocketIO

from callrelay.call import CallRegistry, CallSink, MediaStreamSession
from callrelay.config import Settings
from callrelay.logs import log_event
from callrelay.recording import CallRecorder, repair_captures
from callrelay.twilio.calls import TwilioCalls
from callrelay.web.events import SocketIORelay, register_client_events
from callrelay.web.routes import routes
from callrelay.web.stream import MAX_MESSAGE_BYTES, serve_stream

logger = logging.getLogger("callrelay.app")


@dataclass
class Relay:
    settings: Settings
    app: Flask
    socketio: SocketIO
    registry: CallRegistry
    recorder: CallRecorder
    socketio_relay: SocketIORelay
    calls: TwilioCalls

    @property
    def sinks(self) -> list[CallSink]:
        return [self.socketio_relay, self.recorder]


def create_relay(settings: Settings) -> Relay:
    app = Flask("callrelay")
    app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": MAX_MESSAGE_BYTES}
    origins = settings.cors_allowed_origins
    socketio = SocketIO(
        app,
        async_mode="threading",
        cors_allowed_origins="*" if origins == "*" else [o.strip() for o in origins.split(",")],
        logger=False,
        engineio_logger=False,
    )
    register_client_events(socketio)
    repaired = repair_captures(settings.captures_dir)
    if repaired:
        log_event(logger, "recordings_repaired", files=[str(p) for p in repaired])
    relay = Relay(
        settings=settings,
        app=app,
        socketio=socketio,
        registry=CallRegistry(),
        recorder=CallRecorder(settings.captures_dir),
        socketio_relay=SocketIORelay(socketio),
        calls=TwilioCalls(settings),
    )
    app.extensions["callrelay"] = relay
    app.register_blueprint(routes)

    sock = Sock(app)

    @sock.route("/stream")  # type: ignore[untyped-decorator]
    def stream(ws: object) -> None:
        serve_stream(
            ws,
            lambda: MediaStreamSession(relay.sinks, relay.registry),
            remote=request.remote_addr or "?",
        )

    return relay
