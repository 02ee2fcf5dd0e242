"""An engine whose finals carry the names and places in them (`REDACT=pii`): any engine's
recognisers, each final passed through an `EntityFinder` as it comes out. Built in the
recognition process (`load_engine`), where the CPU it takes costs no frame its time."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace

from callrelay.asr.base import Answer, SpeechEngine, TrackRecogniser, Transcript
from callrelay.audio import Int16Array
from callrelay.redaction.entities import EntityFinder


class EntityTaggingEngine(SpeechEngine):
    def __init__(self, engine: SpeechEngine, finder: EntityFinder) -> None:
        self._engine = engine
        self._finder = finder
        self.name = engine.name
        self.sample_rate = engine.sample_rate

    def new_recogniser(self, keyterms: Sequence[str] = ()) -> TrackRecogniser:
        return _TaggingRecogniser(self._engine.new_recogniser(keyterms), self._finder)

    def describe(self) -> dict[str, object]:
        return {**self._engine.describe(), "entities": "presidio"}

    def close(self) -> None:
        self._engine.close()


class _TaggingRecogniser(TrackRecogniser):
    def __init__(self, recogniser: TrackRecogniser, finder: EntityFinder) -> None:
        self._recogniser = recogniser
        self._finder = finder

    def accept(self, samples: Int16Array) -> Answer:
        return self._tagged(self._recogniser.accept(samples))

    def skip(self, sample_count: int) -> Answer:
        return self._tagged(self._recogniser.skip(sample_count))

    def finish(self) -> Answer:
        return self._tagged(self._recogniser.finish())

    def _tagged(self, answer: Answer) -> Answer:
        tagged: Answer = Future()

        def done(finished: Answer) -> None:
            try:
                tagged.set_result([self._tag(t) for t in finished.result()])
            except Exception as error:
                tagged.set_exception(error)

        answer.add_done_callback(done)
        return tagged

    def _tag(self, transcript: Transcript) -> Transcript:
        if not transcript.text:  # partials too: a live listener sees them
            return transcript
        return replace(transcript, entities=self._finder.find(transcript.text))
