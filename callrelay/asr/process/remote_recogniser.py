"""A recogniser in the recognition process, as the relay holds it."""

from __future__ import annotations

from typing import Any, Protocol

from callrelay.asr import TrackRecogniser
from callrelay.asr.base import Answer, RecogniserMethod
from callrelay.audio import Int16Array


class RecogniserHost(Protocol):
    """What a remote recogniser needs of the engine that holds its process
    (`ProcessSpeechEngine`)."""

    @property
    def alive(self) -> bool: ...

    def serves(self, generation: int) -> bool: ...

    def renew(self, key: int, position: int, previous: int, keyterms: tuple[str, ...]) -> int: ...

    def call(
        self, key: int, method: RecogniserMethod, argument: Any, generation: int
    ) -> Answer: ...

    def finished(self, generation: int) -> None: ...


class RemoteRecogniser(TrackRecogniser):
    """A track's recogniser living in a recognition process; its calls go through the engine
    that holds that process, and follow the track into a new process if that one dies."""

    def __init__(
        self, engine: RecogniserHost, key: int, generation: int, keyterms: tuple[str, ...] = ()
    ) -> None:
        self._engine = engine
        self._key = key
        self._keyterms = keyterms
        self._generation = generation
        """The process that serves it (a recycled one serves it until it finishes)."""
        self._position = 0
        """Samples of its track it has been given or told to skip: where a new one starts."""

    def accept(self, samples: Int16Array) -> Answer:
        answer = self._call("accept", samples)
        self._position += len(samples)
        return answer

    def skip(self, sample_count: int) -> Answer:
        answer = self._call("skip", sample_count)
        self._position += sample_count
        return answer

    def finish(self) -> Answer:
        answer = self._call("finish", None)
        generation = self._generation
        answer.add_done_callback(lambda _: self._engine.finished(generation))
        return answer

    def _call(self, method: RecogniserMethod, argument: Any) -> Answer:
        if not self._engine.serves(self._generation) and self._engine.alive:
            self._generation = self._engine.renew(
                self._key, self._position, self._generation, self._keyterms
            )
        return self._engine.call(self._key, method, argument, self._generation)


class EngineProcessGone(Exception):
    """The recognition process exited; its pending calls have no answer."""


class RecogniserError(Exception):
    """A recogniser method raised in the child; the text is its traceback."""
