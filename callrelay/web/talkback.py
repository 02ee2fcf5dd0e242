"""Talk-back in the server: each bidirectional stream's `TalkBack`, driven by a greenlet.

The stream handler opens one when a `<Connect><Stream>` call starts and closes it when the
stream ends; Socket.IO's `play` and `clear` and Twilio's echoed marks reach it here.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from callrelay.background import start_task
from callrelay.logs import log_event
from callrelay.talkback import ClipError, TalkBack

logger = logging.getLogger("callrelay.talkback")


class NotTalkable(ClipError):
    """The call is not here, or its stream is one-way (`<Start>`)."""


class _Running:
    def __init__(self, talkback: TalkBack) -> None:
        self.talkback = talkback
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closed = False


class TalkBackCalls:
    def __init__(
        self,
        played: Callable[[str, str, bool], None],
        refuse: Callable[[str, str, str, str], None] | None = None,
    ) -> None:
        """`played(call_sid, name, interrupted)`: a clip is over (for the call's clients).
        `refuse(client sid, event, call_sid, error)`: tell a client on any process that its
        forwarded command was refused."""
        self._played = played
        self._refuse = refuse
        self._calls: dict[str, _Running] = {}
        self.one_way: set[str] = set()
        """Calls streaming here one-way: `play` on them is refused with a reason."""

    def open(self, call_sid: str, stream_sid: str, send: Callable[[str], None]) -> None:
        talkback = TalkBack(
            stream_sid, send, lambda name, interrupted: self._played(call_sid, name, interrupted)
        )
        running = _Running(talkback)
        self._calls[call_sid] = running
        start_task("talkback", self._drive, call_sid, running)

    def close(self, call_sid: str) -> None:
        """The call's stream ended; its clips not yet heard are reported cut off."""
        running = self._calls.pop(call_sid, None)
        if running is not None:
            running.closed = True
            with running.lock:
                running.talkback.ended()
            running.wake.set()

    def play(self, call_sid: str, mulaw: bytes, name: str) -> float:
        running = self._running(call_sid)
        with running.lock:
            ahead = running.talkback.play(mulaw, name)
        running.wake.set()
        log_event(
            logger,
            "talkback_queued",
            callSid=call_sid,
            name=name,
            seconds=round(len(mulaw) / 8000, 3),
            aheadSeconds=round(ahead, 3),
        )
        return ahead

    def clear(self, call_sid: str) -> list[str]:
        running = self._running(call_sid)
        with running.lock:
            dropped = running.talkback.clear()
        log_event(logger, "talkback_cleared", callSid=call_sid, dropped=dropped)
        return dropped

    def mark(self, call_sid: str, name: str) -> None:
        running = self._calls.get(call_sid)
        if running is not None:
            with running.lock:
                running.talkback.mark_echoed(name)

    def holds(self, call_sid: str) -> bool:
        """Whether this process streams the call (either way)."""
        return call_sid in self._calls or call_sid in self.one_way

    def run_command(self, command: dict[str, Any]) -> None:
        """A `play` or `clear` another process received for a call this one holds; a refusal
        goes back to the client that asked (by its Socket.IO sid, through the message queue)."""
        call_sid = str(command.get("callSid"))
        if not self.holds(call_sid):
            return
        try:
            if command.get("action") == "play":
                self.play(call_sid, base64.b64decode(command["clip"]), str(command["name"]))
            elif command.get("action") == "clear":
                self.clear(call_sid)
        except ClipError as error:
            if self._refuse is not None:
                self._refuse(
                    str(command.get("replyTo")), str(command.get("action")), call_sid, str(error)
                )

    def _running(self, call_sid: str) -> _Running:
        running = self._calls.get(call_sid)
        if running is not None:
            return running
        if call_sid in self.one_way:
            raise NotTalkable(
                f"{call_sid} streams one-way (<Start><Stream>): place it with mode 'talk' "
                "to send audio into it"
            )
        raise NotTalkable(f"no live talk-back call {call_sid} on this server process")

    def _drive(self, call_sid: str, running: _Running) -> None:
        while not running.closed:
            try:
                with running.lock:
                    delay = running.talkback.pump(time.monotonic())
            except Exception as error:  # the socket went: the stream handler closes the call
                log_event(
                    logger, "talkback_stopped", logging.WARNING, callSid=call_sid, error=str(error)
                )
                return
            running.wake.wait(delay)
            running.wake.clear()
