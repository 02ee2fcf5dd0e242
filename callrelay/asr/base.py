"""One small interface for speech engines, in the way python-socketio's backends fill a template.

An engine is loaded once and shared; each call track gets its own `TrackRecogniser`, fed the
track's audio in order from the start of the call (gaps already filled with silence), so a
recogniser can tell time by counting samples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from callrelay.audio import Int16Array

CallName = Literal["accept", "skip", "finish"]

RECOGNITION_NICE = 10
"""Recognition runs at a lower OS priority than the relay, so that when the CPU is short it is
transcripts that wait, never audio frames."""


@dataclass(frozen=True)
class Transcript:
    """A recognised stretch of one track; times in seconds on the call's timeline."""

    text: str
    start: float
    end: float
    confidence: float | None = None
    is_final: bool = True
    queue_seconds: float | None = field(default=None, compare=False)
    decode_seconds: float | None = field(default=None, compare=False)
    """How long the utterance waited for a decoder and how long its decode took, from engines
    that decode whole utterances: where a late final's time went (logged, not compared)."""


class TrackRecogniser(ABC):
    answers_later: ClassVar[bool] = False
    """`begin` returns at once and its answer comes on another thread (a recogniser in the
    recognition process): the sink then drives the track from its callbacks, with no thread of
    its own waiting on every call."""

    @abstractmethod
    def accept(self, samples: Int16Array) -> list[Transcript]:
        """The track's next samples; returns what became recognisable (finals, partials)."""

    @abstractmethod
    def skip(self, sample_count: int) -> list[Transcript]:
        """Audio that will never come (dropped under load): close what is pending, move on."""

    @abstractmethod
    def finish(self) -> list[Transcript]:
        """The track ended: everything still pending, as finals."""

    def begin(self, method: CallName, argument: Any = None) -> Future[list[Transcript]]:
        """`accept`, `skip` or `finish` without waiting on work done elsewhere. By default the
        call runs here and now; a recogniser whose work ends on other threads (Whisper's
        decode) answers when it is done instead."""
        future: Future[list[Transcript]] = Future()
        try:
            future.set_result(self.call(method, argument))
        except Exception as error:
            future.set_exception(error)
        return future

    def call(self, method: CallName, argument: Any = None) -> list[Transcript]:
        if method == "accept":
            return self.accept(argument)
        if method == "skip":
            return self.skip(argument)
        return self.finish()


class SpeechEngine(ABC):
    begins_quickly: ClassVar[bool] = False
    """Its recognisers' `begin` takes well under a millisecond and never waits (the heavy work
    runs on the engine's own threads), so the recognition process calls it on the thread that
    reads requests instead of handing each request to a worker."""
    name: str
    sample_rate: int
    """The rate the recognisers take: 16000, or 8000 to feed the telephone audio unchanged."""

    @abstractmethod
    def new_recogniser(self) -> TrackRecogniser: ...

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "sampleRate": self.sample_rate}

    def close(self) -> None:  # noqa: B027 (most engines hold nothing to release)
        """Release what the engine holds, once every recogniser has finished."""


def pcm_to_float(samples: Int16Array) -> npt.NDArray[np.float32]:
    scaled: npt.NDArray[np.float32] = samples.astype(np.float32) / np.float32(32768.0)
    return scaled
