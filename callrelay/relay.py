"""The application: everything a running relay holds, with no web framework in it.

`Relay` owns the registry of live calls, the recorder, transcription and the Twilio client;
`start()` repairs recordings a crash left and loads the speech engine, `stop()` ends every call
cleanly. The web adapters (`callrelay.web`) only carry HTTP, WebSocket and Socket.IO traffic to
and from it, and publish a call's events through a `CallPublisher`.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from typing import Any, Literal

from callrelay import __version__
from callrelay.access import ApiToken, RateLimit, generate_token
from callrelay.asr import SpeechEngine, load_engine
from callrelay.asr.process import start_engine_process
from callrelay.call import CallSink, MediaStreamSession
from callrelay.config import Settings
from callrelay.history import CallHistory
from callrelay.live_calls import LiveCalls
from callrelay.logs import log_event
from callrelay.metrics import RelayMetrics
from callrelay.recording import CallRecorder, repair_captures
from callrelay.redis_state import RedisState
from callrelay.transcript_file import TranscriptFile
from callrelay.transcription import TranscriptionSink, TranscriptListener
from callrelay.twilio.calls import TwilioCalls
from callrelay.twilio.signatures import TwilioSignatures

logger = logging.getLogger("callrelay.relay")

LOAD_FROM_SETTINGS: Literal["load"] = "load"


class CallPublisher(CallSink, TranscriptListener):
    """Where a call's events go to the outside world (Socket.IO, in the server)."""

    def call_status(self, status: dict[str, Any]) -> None:
        """Twilio's status callback for a call."""


class Relay:
    """One relay: its calls, recordings, transcription and Twilio client."""

    def __init__(
        self,
        settings: Settings,
        publisher: CallPublisher | None = None,
        speech_engine: SpeechEngine | Literal["load"] | None = LOAD_FROM_SETTINGS,
    ) -> None:
        """`speech_engine`: the engine to use, None for none, or "load" to load the one the
        settings name in a recognition process of its own (at `start`)."""
        self.settings = settings
        self.publisher = publisher
        token = settings.relay_api_token.get_secret_value() if settings.relay_api_token else None
        # Secure by default: no configured token means one nobody knows, not an open door.
        self.api_token = ApiToken(token or generate_token())
        self.live_calls = LiveCalls(max_streams=settings.max_calls)
        self.recorder = CallRecorder(settings.captures_dir)
        self.history = CallHistory(settings.captures_dir, self.recorder.call_folder)
        self.calls = TwilioCalls(settings)
        self.signatures = (
            TwilioSignatures(settings.twilio_auth_token.get_secret_value())
            if settings.twilio_auth_token
            else None
        )
        self.call_rate = RateLimit(settings.make_call_limit, 60.0)
        self.shared = RedisState(settings.redis_url) if settings.redis_url else None
        """What the processes share, when there are several (REDIS_URL)."""
        self.live_calls.shared = self.shared
        self.transcription: TranscriptionSink | None = None
        self.metrics = RelayMetrics()
        self._speech_engine = speech_engine
        self._sinks: list[CallSink] = []

    def start(self) -> None:
        """Repair what a crash left, load the speech engine, start taking calls."""
        repaired = repair_captures(self.settings.captures_dir)
        if repaired:
            log_event(logger, "recordings_repaired", files=[str(p) for p in repaired])
        self.history.open()
        engine = (
            start_engine_process(
                partial(load_engine, self.settings),
                recycle_after=2 * self.settings.asr_recycle_calls or None,
            )
            if self._speech_engine == LOAD_FROM_SETTINGS
            else self._speech_engine
        )
        listeners: list[TranscriptListener] = [TranscriptFile(self.recorder), self.history]
        if self.publisher is not None:
            listeners.insert(0, self.publisher)
        if isinstance(engine, SpeechEngine):
            self.transcription = TranscriptionSink(
                engine, listeners, max_lag_seconds=self.settings.asr_max_lag_seconds
            )
        self._sinks = [
            self.metrics,
            *([self.publisher] if self.publisher is not None else []),
            self.recorder,
            self.history,
            *([self.transcription] if self.transcription is not None else []),
            *([self.shared] if self.shared is not None else []),
        ]
        self.metrics.watch(self._figures)
        self.metrics.start()
        if self.signatures is None:
            log_event(
                logger,
                "signatures_off",
                logging.WARNING,
                detail="TWILIO_AUTH_TOKEN is not set: /voice, /call-status and /stream accept "
                "requests from anyone (fine for local development, never in production)",
            )

    def stop(self, timeout: float) -> bool:
        """Stop taking streams, end every call, finish its transcripts, flush the logs.
        False if `timeout` passed before all of it was done."""
        started = time.monotonic()
        calls = self.live_calls.close_all("shutdown")
        log_event(logger, "shutdown_started", activeCalls=calls, timeoutSeconds=timeout)
        ended = self.live_calls.wait_empty(timeout)
        transcribed = True
        if self.transcription is not None:
            transcribed = self.transcription.wait_idle(timeout - (time.monotonic() - started))
            self.transcription.engine.close()
        done = ended and transcribed
        log_event(
            logger,
            "shutdown_complete" if done else "shutdown_timed_out",
            logging.INFO if done else logging.WARNING,
            callsEnded=calls,
            seconds=round(time.monotonic() - started, 2),
        )
        if self.shared is not None:
            self.shared.stop()
        self.history.close()
        for handler in logging.getLogger("callrelay").handlers:
            handler.flush()
        return done

    def new_stream(self, call_sid: str | None = None) -> MediaStreamSession:
        """The session for a Twilio socket that has just connected (to `/stream/<call_sid>`)."""
        return MediaStreamSession(self._sinks, self.live_calls, call_sid=call_sid)

    def call_status(self, status: dict[str, Any]) -> None:
        """Twilio's status callback for a call."""
        log_event(logger, "call_status", **status)
        self.history.call_status(status)
        if self.publisher is not None:
            self.publisher.call_status(status)

    def _figures(self) -> dict[str, Any]:
        """What the metrics carry from the relay's own counters."""
        transcription = self.transcription.status() if self.transcription else {}
        return {
            "callsActive": len(self.live_calls.active()),
            "streamsOpen": self.live_calls.streams,
            "asrLag": transcription.get("maxLagSeconds", 0.0),
            "transcripts": transcription.get("transcripts", 0),
            "recordingBytes": self.recorder.bytes_written,
            "recordingErrors": self.recorder.write_errors,
            "twilioErrors": self.calls.errors,
        }

    def allow_call(self) -> float:
        """Count a call about to be placed: 0 if within MAKE_CALL_LIMIT a minute (across every
        process when they share Redis), else the seconds to wait."""
        limit = self.settings.make_call_limit
        if self.shared is not None:
            wait = self.shared.take_call_slot(limit, 60.0)
            if wait is not None:
                return wait
        return self.call_rate.allow()

    def status(self) -> dict[str, Any]:
        """What `GET /` shows: this process's calls, and with REDIS_URL every process's."""
        own = [call.call_sid for call in self.live_calls.active()]
        every = self.shared.live_calls() if self.shared is not None else None
        calls = sorted({c["callSid"] for c in every}) if every is not None else sorted(set(own))
        return {
            "status": "ok",
            "service": "callrelay",
            "version": __version__,
            "activeCalls": len(every) if every is not None else len(own),
            "calls": calls,
            "process": {
                "pid": os.getpid(),
                "activeCalls": len(own),
                "streams": self.live_calls.streams,
                "sharedState": None if self.shared is None else self.shared.available,
            },
            "maxCalls": self.settings.max_calls,
            "callingConfigured": not self.settings.calling_missing(),
            "asr": self.transcription.status() if self.transcription else {"engine": "off"},
        }
