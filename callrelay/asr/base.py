"""One small interface for speech engines, in the way python-socketio's backends fill a template.

An engine is loaded once and shared; each call track gets its own `TrackRecogniser`, fed the
track's audio in order from the start of the call (gaps already filled with silence), so a
recogniser can tell time by counting samples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from callrelay.audio import Int16Array

RECOGNITION_NICE = 10
"""Recognition runs at a lower OS priority than the relay, so that when the CPU is short it is
transcripts that wait, never audio frames."""


@dataclass(frozen=True)
class Word:
    """One word of a transcript, its times in seconds on the call's timeline."""

    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Redacted:
    """A stretch of a transcript masked by redaction (`REDACT`): what it was (`card number`),
    and when it was said, in seconds on the call's timeline (for the recordings)."""

    kind: str
    start: float
    end: float


@dataclass(frozen=True)
class Entity:
    """A name or place found in a transcript's text (`REDACT=pii`): its kind and where it is,
    as character offsets into the text."""

    kind: str
    start: int
    end: int


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
    words: tuple[Word, ...] = field(default=(), compare=False)
    """Each word's times, from engines that align them (Whisper); empty otherwise."""
    redacted: tuple[Redacted, ...] = ()
    """What redaction masked in it, if anything."""
    entities: tuple[Entity, ...] = ()
    """People's names and places found in its text, for redaction to mask (`REDACT=pii`)."""


RecogniserMethod = Literal["accept", "skip", "finish"]

Answer = Future[list[Transcript]]
"""What a recogniser call returns: the transcripts that became known, when they are known."""


class TrackRecogniser(ABC):
    """One track's recogniser. Each call returns at once with a future: recognition runs on the
    engine's own threads (or in the recognition process), never on the thread that feeds the
    track. The caller makes one call at a time per track and waits for its answer before the
    next, so a recogniser sees its track in order and never two calls at once."""

    @abstractmethod
    def accept(self, samples: Int16Array) -> Answer:
        """The track's next samples; answers what became recognisable (finals, partials)."""

    @abstractmethod
    def skip(self, sample_count: int) -> Answer:
        """Audio that will never come (dropped under load): close what is pending, move on."""

    @abstractmethod
    def finish(self) -> Answer:
        """The track ended: everything still pending, as finals."""


class SpeechEngine(ABC):
    """A loaded speech model, shared by every track's recogniser."""

    name: str
    sample_rate: int
    """The rate the recognisers take: 16000, or 8000 to feed the telephone audio unchanged."""

    @abstractmethod
    def new_recogniser(self, keyterms: Sequence[str] = ()) -> TrackRecogniser:
        """A recogniser for one track; `keyterms`: words its call's recognition favours, as
        far as the engine can (Whisper can; Vosk ignores them)."""

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "sampleRate": self.sample_rate}

    def close(self) -> None:  # noqa: B027 (most engines hold nothing to release)
        """Release what the engine holds, once every recogniser has finished."""


def answered(transcripts: list[Transcript]) -> Answer:
    """An answer known at once."""
    answer: Answer = Future()
    answer.set_result(transcripts)
    return answer


def pcm_to_float(samples: Int16Array) -> npt.NDArray[np.float32]:
    scaled: npt.NDArray[np.float32] = samples.astype(np.float32) / np.float32(32768.0)
    return scaled
