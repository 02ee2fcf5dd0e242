"""Builds the relay: one Flask app with Socket.IO, the `/stream` socket and the HTTP routes."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial

from flask import Flask, request
from flask_socketio import SocketIO

from callrelay.access import ApiToken, RateLimit, generate_token
from callrelay.asr import SpeechEngine, load_engine
from callrelay.asr.process import start_engine_process
from callrelay.call import CallRegistry, CallSink, MediaStreamSession
from callrelay.config import Settings
from callrelay.logs import log_event
from callrelay.recording import CallRecorder, TranscriptFile, repair_captures
from callrelay.transcription import TranscriptionSink
from callrelay.twilio.calls import TwilioCalls
from callrelay.twilio.signatures import TwilioSignatures
from callrelay.web.events import SocketIORelay, register_client_events
from callrelay.web.inline_websocket import InlineWebSocket, add_websocket_route
from callrelay.web.routes import routes
from callrelay.web.stream import MAX_MESSAGE_BYTES, OpenStreams, serve_stream

logger = logging.getLogger("callrelay.app")


LOAD_FROM_SETTINGS = "load"
TRACK_WORKERS = 16
"""Threads that run tracks' recognisers (VAD, then waiting for a batch to be decoded), in the
relay and in the recognition process: enough for many tracks' utterances to meet in one batch;
the decoding itself is ASR_WORKERS threads."""


@dataclass
class Relay:
    settings: Settings
    app: Flask
    socketio: SocketIO
    registry: CallRegistry
    recorder: CallRecorder
    socketio_relay: SocketIORelay
    calls: TwilioCalls
    transcription: TranscriptionSink | None
    signatures: TwilioSignatures | None
    api_token: ApiToken
    call_rate: RateLimit
    streams: OpenStreams = field(default_factory=OpenStreams)

    def shutdown(self, timeout: float) -> None:
        """Stop taking streams, end every call, finish its transcripts, flush the logs."""
        started = time.monotonic()
        calls = self.streams.close_all("shutdown")
        log_event(logger, "shutdown_started", activeCalls=calls, timeoutSeconds=timeout)
        ended = self.streams.wait_empty(timeout)
        transcribed = True
        if self.transcription is not None:
            transcribed = self.transcription.wait_idle(timeout - (time.monotonic() - started))
            self.transcription.engine.close()
        log_event(
            logger,
            "shutdown_complete" if ended and transcribed else "shutdown_timed_out",
            logging.INFO if ended and transcribed else logging.WARNING,
            callsEnded=calls,
            seconds=round(time.monotonic() - started, 2),
        )
        for handler in logging.getLogger("callrelay").handlers:
            handler.flush()

    @property
    def sinks(self) -> list[CallSink]:
        sinks: list[CallSink] = [self.socketio_relay, self.recorder]
        if self.transcription is not None:
            sinks.append(self.transcription)
        return sinks


def create_relay(
    settings: Settings, speech_engine: SpeechEngine | str | None = LOAD_FROM_SETTINGS
) -> Relay:
    """The relay for `settings`; pass a loaded `speech_engine` (or None) to skip loading one."""
    app = Flask("callrelay")
    origins = settings.cors_allowed_origins
    socketio = SocketIO(
        app,
        async_mode="threading",
        cors_allowed_origins="*" if origins == "*" else [o.strip() for o in origins.split(",")],
        logger=False,
        engineio_logger=False,
    )
    token = settings.relay_api_token.get_secret_value() if settings.relay_api_token else None
    # Secure by default: no configured token means one nobody knows, not an open door.
    api_token = ApiToken(token or generate_token())
    register_client_events(socketio, api_token)
    repaired = repair_captures(settings.captures_dir)
    if repaired:
        log_event(logger, "recordings_repaired", files=[str(p) for p in repaired])
    recorder = CallRecorder(settings.captures_dir)
    socketio_relay = SocketIORelay(socketio)
    engine = (
        start_engine_process(partial(load_engine, settings), workers=TRACK_WORKERS)
        if speech_engine == LOAD_FROM_SETTINGS
        else speech_engine
    )
    transcription = None
    if isinstance(engine, SpeechEngine):
        transcription = TranscriptionSink(
            engine,
            [socketio_relay, TranscriptFile(recorder)],
            workers=TRACK_WORKERS,
            max_lag_seconds=settings.asr_max_lag_seconds,
        )
    relay = Relay(
        settings=settings,
        app=app,
        socketio=socketio,
        registry=CallRegistry(),
        recorder=recorder,
        socketio_relay=socketio_relay,
        calls=TwilioCalls(settings),
        transcription=transcription,
        signatures=TwilioSignatures(settings.twilio_auth_token.get_secret_value())
        if settings.twilio_auth_token
        else None,
        api_token=api_token,
        call_rate=RateLimit(settings.make_call_limit, 60.0),
    )
    if relay.signatures is None:
        log_event(
            logger,
            "signatures_off",
            logging.WARNING,
            detail="TWILIO_AUTH_TOKEN is not set: /voice, /call-status and /stream accept "
            "requests from anyone (fine for local development, never in production)",
        )
    app.extensions["callrelay"] = relay
    app.register_blueprint(routes)

    def stream(ws: InlineWebSocket) -> None:
        serve_stream(
            ws,
            lambda: MediaStreamSession(relay.sinks, relay.registry),
            remote=request.remote_addr or "?",
            streams=relay.streams,
            max_messages_per_second=settings.stream_max_messages_per_second,
            idle_timeout=settings.stream_idle_timeout_seconds,
        )

    add_websocket_route(app, "/stream", stream, max_message_size=MAX_MESSAGE_BYTES)
    return relay
