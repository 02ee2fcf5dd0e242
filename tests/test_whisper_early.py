"""Early decoding: an utterance is decoded while its pause is still confirming its end, and
comes out exactly as it would have without it."""

from __future__ import annotations

import time

import numpy as np

from callrelay.asr.base import Transcript, pcm_to_float
from callrelay.asr.segmenter import Utterance
from callrelay.asr.whisper import WhisperEngine, bundled_model_path
from tests.helpers import REAL_DIR, read_audio

RATE = 16000
PIECE = 960
"""60 ms, as the relay feeds a track."""


def call_audio() -> np.ndarray:
    """Two phrases about 0.3 s apart (a pause that does not end an utterance: the first
    phrase settles and goes on), then one after a pause that does."""
    hello, _ = read_audio(REAL_DIR / "hello_world.flac")
    fox, _ = read_audio(REAL_DIR / "quick_brown_fox.flac")
    cards, _ = read_audio(REAL_DIR / "cards-005.flac")

    def pause(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * RATE), np.int16)

    hello = hello[: int(0.85 * RATE)]  # its speech ends at 0.75 s
    return np.concatenate([pause(0.5), hello, pause(0.12), fox, pause(0.8), cards, pause(1.0)])


def recognise(
    engine: WhisperEngine, audio: np.ndarray, *, decode_keeps_up: bool = False
) -> list[Transcript]:
    """Feed `audio` as the relay does. `decode_keeps_up`: after each piece, wait while the
    decode worker is busy, as if decoding took no time next to the speaker."""
    recogniser = engine.new_recogniser()
    results = []
    for start in range(0, len(audio), PIECE):
        results += recogniser.accept(audio[start : start + PIECE]).result()
        while decode_keeps_up and not engine.has_idle_worker:
            time.sleep(0.005)
    return results + recogniser.finish().result()


def finals(engine: WhisperEngine, audio: np.ndarray) -> list[tuple[str, float, float]]:
    return [(r.text, r.start, r.end) for r in recognise(engine, audio) if r.is_final]


def test_early_decoding_gives_the_same_finals_and_is_used() -> None:
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


def test_an_early_decode_the_speaker_went_on_past_comes_out_as_a_partial() -> None:
    model = bundled_model_path()
    assert model is not None
    engine = WhisperEngine(model, cpu_threads=1, workers=1)
    results = recognise(engine, call_audio(), decode_keeps_up=True)
    kinds = [(r.is_final, r.text.lower()) for r in results]
    assert [final for final, _ in kinds] == [False, True, True]
    partial, first_final = results[0], results[1]
    assert "hello" in partial.text.lower() and "fox" not in partial.text.lower()
    assert partial.start == first_final.start and partial.end < first_final.end
    assert "hello" in first_final.text.lower() and "fox" in first_final.text.lower()
    assert engine.describe()["earlyDecodesPartial"] == 1


def test_an_utterance_is_queued_early_while_every_worker_is_busy() -> None:
    """The early decode does not wait for an idle worker: it waits in line, so that its
    place counts from when its audio was complete, not from when the pause confirmed it."""
    model = bundled_model_path()
    assert model is not None
    engine = WhisperEngine(model, cpu_threads=1, workers=1)
    fox, _ = read_audio(REAL_DIR / "quick_brown_fox.flac")
    long_speech = pcm_to_float(np.tile(fox, 20 * RATE // len(fox)))
    busy = engine.submit(Utterance(long_speech, 0, len(long_speech)))  # 20 s of speech
    recogniser = engine.new_recogniser()
    audio = call_audio()
    answers = [recogniser.accept(audio[i : i + PIECE]) for i in range(0, len(audio), PIECE)]
    # The whole call went through the VAD while the one worker was still busy.
    assert not busy.done()
    assert engine.early_started == 3 and engine.early_used == 2
    results = [r for answer in answers for r in answer.result(60)] + recogniser.finish().result()
    texts = [r.text.lower() for r in results if r.is_final]
    assert len(texts) == 2 and "hello" in texts[0] and "fox" in texts[0] and texts[1]
