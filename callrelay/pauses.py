"""Pausing a call (PCI): while a call is paused its audio reaches every sink as silence, so the
recordings stay aligned and hold nothing, nothing is transcribed, and listeners get no audio.

A call is paused by the API (`POST /calls/<CallSid>/pause`, Socket.IO `pause`, the console) on
whichever process its stream is on (a process that does not hold it forwards the command
through Redis), or, with `PAUSE_ON_DTMF`, by the first keypad digit: then it resumes by itself
once no key has been pressed for `DTMF_RESUME_SECONDS`. The pause and the resume are told to the
listeners (the history, clients, webhooks).

`is_paused` is asked for every frame of every call, on the audio path: a dictionary lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from callrelay.logs import log_event

logger = logging.getLogger("callrelay.pauses")

DTMF_RESUME_SECONDS = 4.0
"""With PAUSE_ON_DTMF, a pause the keypad began ends this long after its last key."""


class PauseListener:
    """Told when one of this process's calls is paused or resumed, with why (`api`, `dtmf`)
    and when (seconds since 1970)."""

    def call_paused(self, call_sid: str, reason: str, at: float) -> None:
        pass

    def call_resumed(self, call_sid: str, reason: str, at: float) -> None:
        pass


@dataclass
class _Pause:
    reason: str
    last_key: float = 0.0
    """For a pause the keypad began: when (monotonic) its last key was pressed."""


class CallPauses:
    def __init__(
        self,
        listeners: Sequence[PauseListener] = (),
        on_dtmf: bool = False,
        dtmf_resume_seconds: float = DTMF_RESUME_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listeners = listeners
        self._clock = clock
        self._on_dtmf = on_dtmf
        self._dtmf_resume = dtmf_resume_seconds
        self._paused: dict[str, _Pause] = {}
        self._lock = threading.Lock()

    def paused_calls(self) -> set[str]:
        return set(self._paused)

    def is_paused(self, call_sid: str) -> bool:
        """Per frame: whether the call's audio is to be silence now. A pause the keypad began
        ends here once its keys have stopped."""
        pause = self._paused.get(call_sid)
        if pause is None:
            return False
        if pause.reason == "dtmf" and self._clock() - pause.last_key >= self._dtmf_resume:
            self.resume(call_sid, "dtmf")
            return False
        return True

    def pause(self, call_sid: str, reason: str = "api") -> bool:
        """Pause the call; False if it already was."""
        with self._lock:
            if call_sid in self._paused:
                return False
            self._paused[call_sid] = _Pause(reason, self._clock())
        self._tell("call_paused", call_sid, reason)
        return True

    def resume(self, call_sid: str, reason: str = "api") -> bool:
        """Resume the call; False if it was not paused."""
        with self._lock:
            if self._paused.pop(call_sid, None) is None:
                return False
        self._tell("call_resumed", call_sid, reason)
        return True

    def keyed(self, call_sid: str) -> None:
        """A keypad digit was pressed in the call: with PAUSE_ON_DTMF, it pauses (or keeps
        paused) what the keypad enters."""
        if not self._on_dtmf:
            return
        pause = self._paused.get(call_sid)
        if pause is None:
            self.pause(call_sid, "dtmf")
        elif pause.reason == "dtmf":
            pause.last_key = self._clock()

    def forget(self, call_sid: str) -> None:
        """The call's stream ended: a pause ends with it (a later stream starts unpaused)."""
        with self._lock:
            self._paused.pop(call_sid, None)

    def _tell(self, event: str, call_sid: str, reason: str) -> None:
        at = round(time.time(), 3)
        log_event(logger, event, callSid=call_sid, reason=reason)
        for listener in self._listeners:
            try:
                getattr(listener, event)(call_sid, reason, at)
            except Exception:
                logger.exception("pause listener failed")
