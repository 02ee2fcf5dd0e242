"""A Socket.IO client that watches the relay, counts audio frames and prints everything else."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import socketio

from callrelay.tracks import MEDIA_EVENTS, SPEAKER_EVENTS

AUDIO_EVENTS = tuple(MEDIA_EVENTS.values())
WATCHED_EVENTS = (
    "call_started",
    "call_ended",
    "dtmf",
    "call_status",
    "call_paused",
    "call_resumed",
    *SPEAKER_EVENTS,
    "partial",
    "transcription_ended",
    "call_completed",
    "played",
    "error",
)


class RelayRefused(Exception):
    """The relay refused the Socket.IO connection; the message is the relay's reason."""


class RelayObserver:
    def __init__(
        self,
        server_url: str,
        on_event: Callable[[str, Any], None] | None = None,
        call_sid: str | None = None,
        keep_audio: bool = False,
        audio: bool = True,
        token: str | None = None,
        audio_batch_ms: int | None = None,
    ) -> None:
        self.counts: Counter[str] = Counter()
        self.events: list[tuple[str, Any]] = []
        self.audio: list[tuple[str, Any]] = []
        self._keep_audio = keep_audio
        self.ended = threading.Event()
        self.transcription_ended = threading.Event()
        self.completed = threading.Event()
        """`call_completed`: the call's analytics are in its history."""
        self._on_event = on_event
        # websocket-client checks every text frame's UTF-8 in pure Python before decoding it,
        # which checks it again: most of a client's CPU at 50 audio events a second.
        self._client = socketio.Client(
            reconnection=False, websocket_extra_options={"skip_utf8_validation": True}
        )
        for name in (*AUDIO_EVENTS, *WATCHED_EVENTS):
            self._client.on(name, self._handler(name))
        auth: dict[str, Any] = {"audio": audio}
        if audio_batch_ms is not None:
            auth["audioBatchMs"] = audio_batch_ms
        if token:
            auth["token"] = token
        if call_sid:
            auth["callSid"] = call_sid
        refusals: list[str] = []
        self._client.on("connect_error", lambda data: refusals.append(_reason(data)))
        try:
            self._client.connect(
                # In the URL too, where several processes route the client to its call's.
                f"{server_url}?callSid={call_sid}" if call_sid else server_url,
                auth=auth,
                transports=["websocket"],
                wait_timeout=10,
            )
        except socketio.exceptions.ConnectionError:
            if refusals:
                raise RelayRefused(refusals[0]) from None
            raise

    def _handler(self, name: str) -> Callable[[Any], None]:
        def handle(data: Any) -> None:
            self.counts[name] += 1
            if name in AUDIO_EVENTS:
                if self._keep_audio:
                    self.audio.append((name, data))
            else:
                self.events.append((name, data))
                if self._on_event:
                    self._on_event(name, data)
            if name == "call_ended":
                self.ended.set()
            if name == "transcription_ended":
                self.transcription_ended.set()
            if name == "call_completed":
                self.completed.set()

        return handle

    def ask(self, event: str, data: Any, timeout: float = 10) -> Any:
        """Send `event` and wait for the server's acknowledgement (`play`, `clear`...)."""
        return self._client.call(event, data, timeout=timeout)

    def close(self) -> None:
        self._client.disconnect()


def _reason(data: object) -> str:
    """What a Socket.IO server said when it refused a connection."""
    if isinstance(data, dict):
        return str(data.get("message", data))
    return str(data)
