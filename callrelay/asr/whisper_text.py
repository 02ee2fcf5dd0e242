"""Whisper's failure signs, read off its text and scores: loops, made-up words over silence."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from typing import Any

from callrelay.asr.base import Transcript, Word
from callrelay.asr.segmenter import Utterance
from callrelay.asr.vad import SAMPLE_RATE

NO_SPEECH_PROBABILITY = 0.6
LOW_LOG_PROBABILITY = -1.0
REPETITION_RATIO = 2.4


def utterance_transcript(
    utterance: Utterance,
    text: str | None,
    log_probability: float,
    no_speech: float,
    words: Sequence[tuple[str, float, float, float]] = (),
) -> Transcript | None:
    """None for no text, or a text Whisper likely made up over silence. `words`: (word,
    start, end, probability), times in seconds into the utterance's audio."""
    if not text or (no_speech > NO_SPEECH_PROBABILITY and log_probability < LOW_LOG_PROBABILITY):
        return None
    audio_start = utterance.speech_start if utterance.audio_start is None else utterance.audio_start
    offset = audio_start / SAMPLE_RATE
    return Transcript(
        text=text,
        start=utterance.speech_start / SAMPLE_RATE,
        end=utterance.speech_end / SAMPLE_RATE,
        confidence=round(min(1.0, math.exp(log_probability)), 3),
        words=tuple(
            Word(word.strip(), round(offset + start, 3), round(offset + end, 3), round(p, 3))
            for word, start, end, p in words
            if word.strip()
        ),
    )


def repeats_itself(text: str) -> bool:
    """A phrase of two or more words said twice in a row: Whisper's loop, rare in speech."""
    words = re.sub(r"[^\w' ]+", " ", text.lower()).split()
    for size in range(2, len(words) // 2 + 1):
        for start in range(len(words) - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size]:
                return True
    return False


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def silence_hallucination(segment: Any) -> bool:
    """Whisper's own rule: likely no speech and a low-confidence text means made-up words."""
    return bool(
        segment.no_speech_prob > NO_SPEECH_PROBABILITY and segment.avg_logprob < LOW_LOG_PROBABILITY
    )
