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
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from callrelay import __version__
from callrelay.access import ApiToken, RateLimit
from callrelay.asr import SpeechEngine, load_engine
from callrelay.asr.process import start_engine_process
from callrelay.call import CallSink, MediaStreamSession
from callrelay.completion import CallCompletion, CompletionListener
from callrelay.config import Settings
from callrelay.history import CallHistory
from callrelay.live_calls import LiveCalls
from callrelay.logs import log_event
from callrelay.metrics import RelayMetrics
from callrelay.pauses import CallPauses, PauseListener
from callrelay.recording import CallRecorder, repair_captures
from callrelay.recording_formats import CODECS, RecordingEncoder, RecordingFormat
from callrelay.redacted_recording import RedactedCallRecorder
from callrelay.redaction.track import RedactMode
from callrelay.redis_state import RedisState
from callrelay.retention import RetentionSweeper
from callrelay.storage.files import LocalCallFiles
from callrelay.storage.index import HistoryIndex
from callrelay.storage.object_store import ObjectStore
from callrelay.storage.shared_files import SharedCallFiles
from callrelay.storage.sqlite_index import INDEX_FILE, SqliteHistoryIndex
from callrelay.transcript_file import TranscriptFile
from callrelay.transcription import TranscriptionSink, TranscriptListener
from callrelay.twilio.calls import TwilioCalls
from callrelay.twilio.signatures import TwilioSignatures
from callrelay.uploads import CallUploader
from callrelay.webhooks.delivery import WebhookDelivery, WebhookPolicy
from callrelay.webhooks.outbox import OUTBOX_FILE, SqliteOutbox
from callrelay.webhooks.sink import WebhookSink

logger = logging.getLogger("callrelay.relay")

LOAD_FROM_SETTINGS: Literal["load"] = "load"
PauseOutcome = Literal["changed", "unchanged", "forwarded", "not_live"]


class CallPublisher(CallSink, TranscriptListener, CompletionListener, PauseListener):
    """Where a call's events go to the outside world (Socket.IO, in the server)."""

    def call_status(self, status: dict[str, Any]) -> None:
        """Twilio's status callback for a call."""


@dataclass(frozen=True)
class RelayParts:
    """What a relay is made of. `RelayParts.from_settings` makes the usual ones; a test may
    swap any. Building them does no I/O: `Relay.start` does."""

    api_token: ApiToken
    live_calls: LiveCalls
    files: LocalCallFiles
    """Each call's files, which the recorder writes live."""
    recorder: CallRecorder
    history: CallHistory
    calls: TwilioCalls
    signatures: TwilioSignatures | None
    """None without TWILIO_AUTH_TOKEN: requests are not checked (local development)."""
    call_rate: RateLimit
    metrics: RelayMetrics
    shared: RedisState | None
    """What the processes share, when there are several (REDIS_URL)."""
    webhooks: WebhookDelivery | None
    """Posts each call's events (WEBHOOK_URL), from the outbox beside the recordings."""
    uploader: CallUploader | None = None
    """Stores each complete call's files in the object store (RECORDINGS_URL)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayParts:
        token = settings.relay_api_token
        shared = RedisState(settings.redis_url) if settings.redis_url else None
        files = LocalCallFiles(settings.captures_dir)
        store = ObjectStore(settings.recordings_url) if settings.recordings_url else None
        uploader = (
            CallUploader(files, store, keep_local=settings.recordings_keep_local)
            if store is not None
            else None
        )
        auth_token = settings.twilio_auth_token
        return cls(
            api_token=ApiToken(token.get_secret_value() if token else None),
            live_calls=LiveCalls(max_streams=settings.max_calls, shared=shared),
            files=files,
            recorder=RedactedCallRecorder(files)
            if settings.redact != "off"
            else CallRecorder(files),
            history=CallHistory(
                SharedCallFiles(files, store) if store is not None else files,
                _history_index(settings),
                uploader=uploader,
                here=files,
            ),
            calls=TwilioCalls(settings),
            signatures=TwilioSignatures(auth_token.get_secret_value()) if auth_token else None,
            call_rate=RateLimit(settings.make_call_limit, 60.0),
            metrics=RelayMetrics(),
            shared=shared,
            webhooks=_webhooks(settings),
            uploader=uploader,
        )


def _history_index(settings: Settings) -> HistoryIndex:
    if settings.database_url is None:
        return SqliteHistoryIndex(settings.captures_dir / INDEX_FILE)
    # Imported only when used; psycopg checks for gevent's patching as it is imported.
    from callrelay.storage.postgres_index import PostgresHistoryIndex

    return PostgresHistoryIndex(settings.database_url.get_secret_value())


def _webhooks(settings: Settings) -> WebhookDelivery | None:
    if not settings.webhook_urls or settings.webhook_secret is None:
        return None
    policy = WebhookPolicy(
        urls=settings.webhook_urls,
        secret=settings.webhook_secret.get_secret_value(),
        timeout_seconds=settings.webhook_timeout_seconds,
        retry_max_seconds=settings.webhook_retry_max_seconds,
        give_up_seconds=settings.webhook_give_up_seconds,
    )
    return WebhookDelivery(SqliteOutbox(settings.captures_dir / OUTBOX_FILE), policy)


class Relay:
    """One relay: its calls, recordings, transcription and Twilio client."""

    def __init__(
        self,
        settings: Settings,
        parts: RelayParts,
        publisher: CallPublisher | None = None,
        speech_engine: SpeechEngine | Literal["load"] | None = LOAD_FROM_SETTINGS,
    ) -> None:
        """`speech_engine`: the engine to use, None for none, or "load" to load the one the
        settings name in a recognition process of its own (at `start`)."""
        self.settings = settings
        self.publisher = publisher
        self.api_token = parts.api_token
        self.live_calls = parts.live_calls
        self.files = parts.files
        self.recorder = parts.recorder
        self.history = parts.history
        self.calls = parts.calls
        self.signatures = parts.signatures
        self.call_rate = parts.call_rate
        self.metrics = parts.metrics
        self.shared = parts.shared
        self.webhooks = parts.webhooks
        self.uploader = parts.uploader
        self.retention = (
            RetentionSweeper(self.history, settings.retention_days, self.live_call_sids)
            if settings.retention_days
            else None
        )
        self.webhook_sink = (
            WebhookSink(parts.webhooks, settings.webhook_event_types, settings.public_url)
            if parts.webhooks is not None
            else None
        )
        self.pauses = CallPauses(
            [
                self.history,
                *([publisher] if publisher is not None else []),
                *([self.webhook_sink] if self.webhook_sink is not None else []),
            ],
            on_dtmf=settings.pause_on_dtmf,
        )
        """Which of this process's calls are paused (PCI): their audio is silence."""
        self.transcription: TranscriptionSink | None = None
        self.completion: CallCompletion
        self._speech_engine = speech_engine
        self._sinks: list[CallSink] = []

    def _encoder(self) -> RecordingEncoder | None:
        kept_as = RecordingFormat(self.settings.recordings_format)
        return (
            None
            if kept_as is RecordingFormat.WAV
            else RecordingEncoder(self.files, CODECS[kept_as])
        )

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
        self.completion = CallCompletion(
            self.history,
            self.files,
            transcribing=isinstance(engine, SpeechEngine),
            listeners=[
                *([self.publisher] if self.publisher is not None else []),
                *([self.webhook_sink] if self.webhook_sink is not None else []),
            ],
            encoder=self._encoder(),
            uploader=self.uploader,
        )
        if isinstance(engine, SpeechEngine):
            self.transcription = TranscriptionSink(
                engine,
                self._transcript_listeners(),
                max_lag_seconds=self.settings.asr_max_lag_seconds,
                redact=RedactMode(self.settings.redact),
            )
            self.transcription.start()
        self._sinks = self._sinks_in_order()
        if self.shared is not None:
            self.shared.start()
        if self.webhooks is not None:
            self.webhooks.start()
        if self.uploader is not None:
            self.uploader.start(announce=self.completion.announce)
        if self.retention is not None:
            self.retention.start()
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

    def _transcript_listeners(self) -> list[TranscriptListener]:
        """The listeners hear each final in this order: clients first (they are waiting),
        then the transcript file, then the history, whose `transcribed` line says that the
        file is complete; then the completion, which reads it."""
        publisher = [self.publisher] if self.publisher is not None else []
        webhooks = [self.webhook_sink] if self.webhook_sink is not None else []
        recorder = [self.recorder] if isinstance(self.recorder, RedactedCallRecorder) else []
        return [
            *publisher,
            *recorder,  # what to mask in the recordings, and when they are final
            TranscriptFile(self.files),
            self.history,
            *webhooks,
            self.completion,
        ]

    def _sinks_in_order(self) -> list[CallSink]:
        """Every sink hears each event in this order, and the order is the point: the metrics
        count a frame first; clients get it before anything touches the disk; the recorder
        closes a call's files before the history writes `stream_ended` (so a call the history
        calls ended has final recordings); transcription follows, then the completion
        (which, untranscribed, completes the call once its recordings are final); what other
        processes are told (Redis, in the background) comes last."""
        return [
            self.metrics,
            *([self.publisher] if self.publisher is not None else []),
            self.recorder,
            self.history,
            *([self.webhook_sink] if self.webhook_sink is not None else []),
            *([self.transcription] if self.transcription is not None else []),
            self.completion,
            *([self.shared] if self.shared is not None else []),
        ]

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
        if isinstance(self.recorder, RedactedCallRecorder):
            self.recorder.flush_all()
        completed = self.completion.wait_idle(max(0.0, timeout - (time.monotonic() - started)))
        done = ended and transcribed and completed
        log_event(
            logger,
            "shutdown_complete" if done else "shutdown_timed_out",
            logging.INFO if done else logging.WARNING,
            callsEnded=calls,
            seconds=round(time.monotonic() - started, 2),
        )
        if self.shared is not None:
            self.shared.stop()
        if self.webhooks is not None:
            self.webhooks.stop()  # what is not delivered yet stays in the outbox
        if self.retention is not None:
            self.retention.stop()
        if self.uploader is not None:
            self.uploader.stop()  # what is not stored yet stays flagged: the next start stores it
        self.history.close()
        for handler in logging.getLogger("callrelay").handlers:
            handler.flush()
        return done

    def new_stream(self, call_sid: str | None = None) -> MediaStreamSession:
        """The session for a Twilio socket that has just connected (to `/stream/<call_sid>`)."""
        return MediaStreamSession(
            self._sinks,
            self.live_calls,
            call_sid=call_sid,
            mask_dtmf=self.settings.redact != "off",
            pauses=self.pauses,
        )

    def set_paused(self, call_sid: str, paused: bool) -> PauseOutcome:
        """Pause or resume a live call wherever its stream is: here, or (with REDIS_URL) on
        the process that holds it, through Redis."""
        if call_sid in {call.call_sid for call in self.live_calls.active()}:
            changed = self.pauses.pause(call_sid) if paused else self.pauses.resume(call_sid)
            return "changed" if changed else "unchanged"
        if self.shared is not None and self.shared.holds_elsewhere(call_sid):
            action = "pause" if paused else "resume"
            if self.shared.send_command({"action": action, "callSid": call_sid}):
                return "forwarded"
        return "not_live"

    def run_pause_command(self, command: dict[str, Any]) -> None:
        """A `pause` or `resume` another process received for a call whose stream is here."""
        call_sid = str(command.get("callSid"))
        if call_sid in {call.call_sid for call in self.live_calls.active()}:
            if command.get("action") == "pause":
                self.pauses.pause(call_sid)
            elif command.get("action") == "resume":
                self.pauses.resume(call_sid)

    def call_status(self, status: dict[str, Any]) -> None:
        """Twilio's status callback for a call."""
        log_event(logger, "call_status", **status)
        self.history.call_status(status)
        if self.publisher is not None:
            self.publisher.call_status(status)

    def _figures(self) -> dict[str, Any]:
        """What the metrics carry from the relay's own counters."""
        transcription = self.transcription.figures() if self.transcription else {}
        return {
            "callsActive": len(self.live_calls.active()),
            "streamsOpen": self.live_calls.streams,
            "asrLag": transcription.get("maxLagSeconds", 0.0),
            "transcripts": transcription.get("transcripts", 0),
            "recordingBytes": self.recorder.bytes_written,
            "recordingErrors": self.recorder.write_errors,
            "twilioErrors": self.calls.errors,
            "indexBacklog": self.history.indexer.backlog,
            "indexFailures": self.history.indexer.failures,
            **(
                {
                    "storedFiles": self.uploader.uploaded_files,
                    "storedBytes": self.uploader.uploaded_bytes,
                    "storeFailures": self.uploader.failures,
                    "storeBacklog": self.uploader.backlog,
                }
                if self.uploader is not None
                else {}
            ),
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

    def live_call_sids(self) -> set[str]:
        """The calls streaming now: this process's, and with REDIS_URL every process's (as of
        the last second). Cheap: no I/O, for any route to ask."""
        every = self.shared.live_calls() if self.shared is not None else None
        if every is None:
            return {call.call_sid for call in self.live_calls.active()}
        return {call["callSid"] for call in every}

    def status(self) -> dict[str, Any]:
        """What `GET /` shows: this process's calls, and with REDIS_URL every process's; and
        the speech engine's state, which asks the recognition process (up to 2 s)."""
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
            **({"webhooks": self.webhooks.status()} if self.webhooks is not None else {}),
        }
