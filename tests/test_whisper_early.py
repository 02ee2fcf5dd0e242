"""Early decoding: an utterance is decoded while its pause is still confirming its end, and
comes out exactly as it would have without it."""

from __future__ import annotations

import numpy as np

from callrelay.asr.whisper import WhisperEngine, bundled_model_path
from tests.audio_files import REAL_DIR, read_wav, require_shared_audio

RATE = 16000
PIECE = 960
"""60 ms, as the relay feeds a track."""


def call_audio() -> np.ndarray:
    """Two phrases about 0.3 s apart (a pause that does not end an utterance: the first
    phrase settles and goes on), then one after a pause that does."""
    hello, _ = read_wav(REAL_DIR / "hello_world.wav")
    fox, _ = read_wav(REAL_DIR / "quick_brown_fox.wav")
    cards, _ = read_wav(REAL_DIR / "cards-005.wav")

    def pause(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * RATE), np.int16)

    hello = hello[: int(0.85 * RATE)]  # its speech ends at 0.75 s
    return np.concatenate([pause(0.5), hello, pause(0.12), fox, pause(0.8), cards, pause(1.0)])


def finals(engine: WhisperEngine, audio: np.ndarray) -> list[tuple[str, float, float]]:
    recogniser = engine.new_recogniser()
    results = []
    for start in range(0, len(audio), PIECE):
        results += recogniser.accept(audio[start : start + PIECE])
    results += recogniser.finish()
    return [(r.text, r.start, r.end) for r in results]


def test_early_decoding_gives_the_same_finals_and_is_used() -> None:
    require_shared_audio()
    model = bundled_model_path()
    assert model is not None
    audio = call_audio()
    early = WhisperEngine(model, cpu_threads=1, workers=2)
    late = WhisperEngine(model, cpu_threads=1, workers=2, early_decode=False)
    with_early, without = finals(early, audio), finals(late, audio)
    assert with_early == without
    assert len(with_early) == 2
    assert "hello" in with_early[0][0].lower() and "fox" in with_early[0][0].lower()
    # Three early starts: the first phrase alone (withdrawn when the speaker went on), then
    # each utterance, whose early decode became its final.
    assert early.early_started == 3 and early.early_used == 2
    assert late.early_started == late.early_used == 0
    assert early.describe()["earlyDecodesUsed"] == 2
