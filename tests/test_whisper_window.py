"""A short utterance is encoded in a short window, and the decoder reads it followed by the
encoding of silence: it reads right, where a short window alone makes Whisper loop."""

from __future__ import annotations

import itertools

from callrelay.asr.base import pcm_to_float
from callrelay.asr.segmenter import Utterance
from callrelay.asr.whisper import WhisperEngine, bundled_model_path
from callrelay.audio import Upsampler2x
from callrelay.simulator.audio_source import load_telephone_audio
from callrelay.simulator.conversation import word_errors
from tests.helpers import REAL_DIR

SHORT_CLIPS = {
    "cards-001.flac": "ten of clubs",
    "cards-003.flac": "seven of clubs",
    "hello_world.flac": "hello world",
}


def short_utterances() -> list[tuple[Utterance, str]]:
    """The clips as a caller's track carries them: 8 kHz mu-law, then 16 kHz."""
    utterances = []
    for name, reference in SHORT_CLIPS.items():
        audio = pcm_to_float(Upsampler2x().process_mulaw(load_telephone_audio(REAL_DIR / name)))
        assert len(audio) < 2.5 * 16000
        utterances.append((Utterance(audio, 0, len(audio)), reference))
    return utterances


def test_short_utterances_read_right_in_a_short_window_with_silent_context() -> None:
    model = bundled_model_path()
    assert model is not None
    engine = WhisperEngine(model, cpu_threads=1, workers=1, early_decode=False)
    for utterance, reference in short_utterances():
        transcript = engine.transcribe(utterance)
        assert transcript is not None
        errors, _ = word_errors(reference, transcript.text)
        assert errors <= 1, (reference, transcript.text)
    assert engine.fallbacks == 0


def test_without_the_silent_context_the_short_window_loops_and_falls_back() -> None:
    model = bundled_model_path()
    assert model is not None
    engine = WhisperEngine(model, cpu_threads=1, workers=1, early_decode=False, context=0.0)
    for utterance, _ in short_utterances():
        engine.transcribe(utterance)
    assert engine.fallbacks >= 2


def test_each_words_times_fall_inside_its_utterance_in_order() -> None:
    """Word timings from the decoder's attention over the same encoding; an utterance that
    starts 2 s into the call has its words 2 s in."""
    model = bundled_model_path()
    assert model is not None
    engine = WhisperEngine(model, cpu_threads=1, workers=1, early_decode=False)
    for utterance, _reference in short_utterances():
        placed = Utterance(utterance.audio, 32000, 32000 + len(utterance.audio), audio_start=32000)
        transcript = engine.transcribe(placed)
        assert transcript is not None and transcript.words
        words = transcript.words
        assert " ".join(w.text for w in words) == transcript.text.strip()
        seconds = len(utterance.audio) / 16000
        assert all(2.0 <= w.start <= w.end <= 2.0 + seconds + 0.05 for w in words), words
        assert all(a.start <= b.start for a, b in itertools.pairwise(words))
        assert all(0 <= w.probability <= 1 for w in words)
    quiet = WhisperEngine(
        model, cpu_threads=1, workers=1, early_decode=False, word_timestamps=False
    ).transcribe(short_utterances()[0][0])
    assert quiet is not None and quiet.words == ()
