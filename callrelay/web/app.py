"""The web adapter: one Flask app carrying a `Relay`'s HTTP routes, its `/stream` WebSocket
and Socket.IO."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from flask import Flask, request
from flask_socketio import SocketIO

from callrelay.asr import SpeechEngine
from callrelay.config import Settings
from callrelay.redis_state import RedisState
from callrelay.relay import LOAD_FROM_SETTINGS, Relay, RelayParts
from callrelay.web.call_routing import polling_needs_a_call
from callrelay.web.client_events import ClientEvents
from callrelay.web.console import console_routes
from callrelay.web.engineio_queues import engineio_clients, queued_packets
from callrelay.web.fast_json import OrjsonForSocketIO
from callrelay.web.history_routes import history_routes
from callrelay.web.message_queue import GuardedRedisManager
from callrelay.web.publisher import SocketIORelay
from callrelay.web.rooms import AudioRooms
from callrelay.web.routes import add_http_routes
from callrelay.web.stream import MAX_MESSAGE_BYTES, serve_stream
from callrelay.web.talkback import TalkBackCalls
from callrelay.web.websocket_route import AcceptedSocket, add_websocket_route


def _socketio_figures(socketio: SocketIO, publisher: SocketIORelay) -> dict[str, Any]:
    clients = engineio_clients(socketio.server.eio)
    manager = socketio.server.manager
    return {
        "socketioClients": len(clients),
        "socketioQueueMax": max((queued_packets(c) for c in clients), default=0),
        "socketioDropped": publisher.dropped_audio,
        "framesRelayed": dict(publisher.relayed),
        "audioAcross": publisher.published_audio,
        "queueUp": int(manager.up) if isinstance(manager, GuardedRedisManager) else -1,
    }


@dataclass(frozen=True)
class WebRelay:
    relay: Relay
    app: Flask
    socketio: SocketIO
    publisher: SocketIORelay


def create_web_relay(
    settings: Settings,
    speech_engine: SpeechEngine | Literal["load"] | None = LOAD_FROM_SETTINGS,
    parts: RelayParts | None = None,
) -> WebRelay:
    """The one place a relay is put together: a started relay for `settings`, served by a
    new Flask app. Pass a loaded `speech_engine` (or None) to skip loading the one the settings
    name, or `parts` to swap what the relay is made of."""
    parts = parts or RelayParts.from_settings(settings)
    shared = parts.shared
    app = Flask("callrelay")
    app.url_map.merge_slashes = False  # `//etc` is a 404, not a redirect to somewhere else
    socketio = _socketio(app, settings)
    audio_rooms = AudioRooms(shared.audio_room_changed if shared is not None else None)
    publisher = SocketIORelay(
        socketio, audio_rooms, shared.remote_audio_rooms if shared is not None else None
    )
    relay = Relay(settings, parts, publisher, speech_engine)
    talkback = TalkBackCalls(publisher.played, partial(_refuse, socketio))
    forward = None
    if shared is not None:
        forward = partial(_forward_to_holder, talkback, shared)
        shared.receive_commands(partial(_run_command, relay, talkback))
    relay.start()
    ClientEvents(relay.api_token, audio_rooms, talkback, forward, relay.set_paused).register(
        socketio
    )
    relay.metrics.watch(partial(_socketio_figures, socketio, publisher))
    add_http_routes(app, relay, lambda: {"socketio": {"droppedAudio": publisher.dropped_audio}})
    app.register_blueprint(history_routes(relay))
    app.register_blueprint(console_routes())

    def stream(ws: AcceptedSocket, call_sid: str | None = None) -> None:
        serve_stream(ws, relay, request.remote_addr or "?", call_sid, talkback)

    for path in ("/stream", "/stream/<call_sid>"):
        add_websocket_route(app, path, stream, max_message_size=MAX_MESSAGE_BYTES)
    return WebRelay(relay, app, socketio, publisher)


def _socketio(app: Flask, settings: Settings) -> SocketIO:
    origins = settings.cors_allowed_origins
    queue: dict[str, Any] = {}
    if settings.redis_url:
        queue["client_manager"] = GuardedRedisManager(settings.redis_url)
    socketio = SocketIO(
        app,
        **queue,
        # The server is gunicorn's gevent worker (see server.py); explicit, since
        # auto-detection would pick eventlet when it happens to be installed.
        async_mode="gevent",
        cors_allowed_origins="*" if origins == "*" else [o.strip() for o in origins.split(",")],
        json=OrjsonForSocketIO,
        logger=False,
        engineio_logger=False,
    )
    if settings.worker_count > 1:
        # Long-polling spreads one session over many requests: they reach its process when
        # they name its call (call_routing.py), and only then.
        app.wsgi_app = polling_needs_a_call(app.wsgi_app)  # type: ignore[method-assign]
    return socketio


def _refuse(socketio: SocketIO, sid: str, event: str, call_sid: str, error: str) -> None:
    """Tell a client (on whichever process it is) that its forwarded command was refused."""
    socketio.emit("error", {"event": event, "callSid": call_sid, "error": error}, to=sid)


def _run_command(relay: Relay, talkback: TalkBackCalls, command: dict[str, Any]) -> None:
    """A command another process sent for a call whose stream may be here."""
    if command.get("action") in ("pause", "resume"):
        relay.run_pause_command(command)
    else:
        talkback.run_command(command)


def _forward_to_holder(
    talkback: TalkBackCalls,
    shared: RedisState,
    call_sid: str,
    command: dict[str, Any],
) -> bool:
    """A talk-back command for a call another process streams: sent its way through Redis."""
    if talkback.holds(call_sid):
        return False  # ours, and one-way: the refusal stands
    return shared.holds_elsewhere(call_sid) and shared.send_command(command)
