"""Vosk (Kaldi): true streaming, partial and final results, fed the 8 kHz telephone audio as is.

Vosk models are built with `--allow-upsample=true`, so `KaldiRecognizer(model, 8000)` takes the
call's own samples and Kaldi resamples inside. Endpointing is Kaldi's (the model's conf); the
relay adds one rule of its own: after `silence_flush` seconds with text pending but no final, the
pending text is flushed as a final and the recogniser reset. Kaldi releases the interpreter lock
while it decodes, so tracks are recognised on a small pool of threads, several at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from callrelay.asr.base import Answer, SpeechEngine, TrackRecogniser, Transcript
from callrelay.audio import Int16Array
from callrelay.logs import log_event

logger = logging.getLogger("callrelay.asr")

VOSK_RATE = 8000
PIECE_SAMPLES = 800
"""Audio that queued up while the worker was busy goes in 100 ms at a time, so that every
pause still ends an utterance of its own and partials keep coming."""


def is_vosk_model(path: Path) -> bool:
    return (path / "am" / "final.mdl").is_file() or (path / "final.mdl").is_file()


class VoskEngine(SpeechEngine):
    name = "vosk"
    sample_rate = VOSK_RATE

    def __init__(self, model_path: Path, *, silence_flush: float = 30.0, workers: int = 2) -> None:
        import vosk

        vosk.SetLogLevel(-1)
        started = time.monotonic()
        self.model_path = model_path
        self._model = vosk.Model(str(model_path))
        self._recogniser_class = vosk.KaldiRecognizer
        self.silence_flush = silence_flush
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vosk")
        self.load_seconds = time.monotonic() - started
        log_event(
            logger,
            "asr_loaded",
            engine=self.name,
            model=str(model_path),
            seconds=round(self.load_seconds, 2),
        )

    def new_recogniser(self, keyterms: Sequence[str] = ()) -> VoskRecogniser:
        return VoskRecogniser(self)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "model": self.model_path.name}

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def kaldi_recogniser(self) -> Any:
        recogniser = self._recogniser_class(self._model, VOSK_RATE)
        recogniser.SetWords(True)
        return recogniser


class VoskRecogniser(TrackRecogniser):
    def __init__(self, engine: VoskEngine) -> None:
        self._engine = engine
        self._kaldi = engine.kaldi_recogniser()
        self._offset = 0
        """Track sample where the current Kaldi recogniser's audio begins."""
        self._position = 0
        self._partial = ""
        self._partial_changed_at = 0

    def accept(self, samples: Int16Array) -> Answer:
        return self._engine.pool.submit(self._accept, samples)

    def skip(self, sample_count: int) -> Answer:
        return self._engine.pool.submit(self._skip, sample_count)

    def finish(self) -> Answer:
        return self._engine.pool.submit(self._finish)

    def _accept(self, samples: Int16Array) -> list[Transcript]:
        results: list[Transcript] = []
        for start in range(0, len(samples), PIECE_SAMPLES):
            results += self._accept_piece(samples[start : start + PIECE_SAMPLES])
        return results

    def _accept_piece(self, samples: Int16Array) -> list[Transcript]:
        self._position += len(samples)
        if self._kaldi.AcceptWaveform(samples.astype("<i2", copy=False).tobytes()):
            return self._final(self._kaldi.Result())
        partial = str(json.loads(self._kaldi.PartialResult()).get("partial", ""))
        if partial != self._partial:
            self._partial, self._partial_changed_at = partial, self._position
            if partial:
                return [self._transcript(partial, None, is_final=False)]
        pending_for = (self._position - self._partial_changed_at) / VOSK_RATE
        if self._partial and pending_for >= self._engine.silence_flush:
            return self._restart()
        return []

    def _skip(self, sample_count: int) -> list[Transcript]:
        results = self._restart()
        self._position += sample_count
        self._offset = self._position
        return results

    def _finish(self) -> list[Transcript]:
        return self._final(self._kaldi.FinalResult())

    def _restart(self) -> list[Transcript]:
        results = self._final(self._kaldi.FinalResult())
        self._kaldi = self._engine.kaldi_recogniser()
        self._offset = self._position
        return results

    def _final(self, result_json: str) -> list[Transcript]:
        self._partial, self._partial_changed_at = "", self._position
        result = json.loads(result_json)
        text = str(result.get("text", "")).strip()
        if not text:
            return []
        words = result.get("result") or []
        return [self._transcript(text, words, is_final=True)]

    def _transcript(
        self, text: str, words: list[dict[str, Any]] | None, is_final: bool
    ) -> Transcript:
        if words:
            start = self._offset / VOSK_RATE + float(words[0]["start"])
            end = self._offset / VOSK_RATE + float(words[-1]["end"])
            confidence: float | None = round(
                sum(float(w.get("conf", 1.0)) for w in words) / len(words), 3
            )
        else:
            start = end = self._position / VOSK_RATE
            confidence = None
        return Transcript(text, round(start, 3), round(end, 3), confidence, is_final)
