import numpy as np

from callrelay.asr.base import pcm_to_float
from callrelay.asr.segmenter import SegmenterParams, Utterance, UtteranceSegmenter
from callrelay.asr.vad import StreamingVad
from tests.helpers import REAL_DIR, read_audio

RATE = 16000


def loudness_vad(windows: np.ndarray) -> list[float]:
    """A stand-in VAD for testing the state machine: loud windows are speech."""
    return [1.0 if np.abs(window).max() > 0.1 else 0.0 for window in windows]


def signal(*parts: tuple[float, float]) -> np.ndarray:
    """(seconds, amplitude) pieces; amplitude 0 is silence, else a 200 Hz tone."""
    pieces = []
    for seconds, amplitude in parts:
        t = np.arange(int(seconds * RATE)) / RATE
        pieces.append((amplitude * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    return np.concatenate(pieces)


def segment(audio: np.ndarray, params: SegmenterParams | None = None, step: int = 320):
    segmenter = UtteranceSegmenter(loudness_vad, params)
    found = []
    for i in range(0, len(audio), step):
        found += segmenter.accept(audio[i : i + step])
    return found, segmenter


def test_each_pause_ends_an_utterance_with_its_times() -> None:
    audio = signal((1.0, 0), (1.5, 0.5), (0.8, 0), (1.0, 0.5), (1.0, 0))
    found, _ = segment(audio)
    assert len(found) == 2
    first, second = found
    assert abs(first.speech_start / RATE - 1.0) < 0.04 and abs(first.speech_end / RATE - 2.5) < 0.04
    assert abs(second.speech_start / RATE - 3.3) < 0.04
    # pre-roll before and post-roll after the speech are kept for the recogniser
    assert abs(len(first.audio) / RATE - (0.3 + 1.5 + 0.2)) < 0.05


def test_short_blips_are_not_utterances() -> None:
    found, _ = segment(signal((0.5, 0), (0.1, 0.5), (1.0, 0)))
    assert found == []


def test_a_pause_shorter_than_min_silence_does_not_split() -> None:
    found, _ = segment(signal((0.5, 0), (1.0, 0.5), (0.2, 0), (1.0, 0.5), (1.0, 0)))
    assert len(found) == 1


def test_endless_speech_is_cut_at_max_utterance() -> None:
    found, _ = segment(signal((12.0, 0.5)), SegmenterParams(max_utterance=5.0))
    assert len(found) == 2 and all(u.speech_end - u.speech_start <= 5 * RATE + 512 for u in found)


def test_finish_returns_the_utterance_still_open_at_hang_up() -> None:
    found, segmenter = segment(signal((0.5, 0), (1.0, 0.5)))
    assert found == []
    tail = segmenter.finish()
    assert len(tail) == 1 and abs(tail[0].speech_start / RATE - 0.5) < 0.04


def test_skipped_audio_closes_the_utterance_and_moves_time_on() -> None:
    _, segmenter = segment(signal((0.5, 0), (1.0, 0.5)))
    closed = segmenter.skip(RATE * 10)
    assert len(closed) == 1
    later = segmenter.accept(signal((1.0, 0.5), (1.0, 0)))
    assert abs(later[0].speech_start / RATE - 11.5) < 0.05


def test_real_vad_finds_the_speech_in_a_recording() -> None:
    speech, _ = read_audio(REAL_DIR / "quick_brown_fox.flac")
    audio = np.concatenate(
        [np.zeros(RATE, np.float32), speech.astype(np.float32) / 32768, np.zeros(RATE, np.float32)]
    )
    segmenter = UtteranceSegmenter(StreamingVad().probabilities)
    found = segmenter.accept(audio) + segmenter.finish()
    assert len(found) >= 1
    assert found[0].speech_start / RATE >= 0.9  # not before the leading second of silence
    assert found[-1].speech_end / RATE <= 1 + len(speech) / RATE + 0.1


def test_the_vad_gives_the_same_numbers_window_by_window_or_several_at_once() -> None:
    speech, _ = read_audio(REAL_DIR / "quick_brown_fox.flac")
    audio = pcm_to_float(speech)
    windows = audio[: len(audio) // 512 * 512].reshape(-1, 512)
    one_by_one = StreamingVad()
    singly = [one_by_one.probability(window) for window in windows]
    together = StreamingVad()
    batched = [
        p
        for start in range(0, len(windows), 3)
        for p in together.probabilities(windows[start : start + 3])
    ]
    assert max(singly) > 0.5  # it does hear speech
    assert batched == singly


def test_the_configured_endpoint_silence_decides_where_whisper_ends_an_utterance() -> None:
    """ENDPOINT_SILENCE_SECONDS reaches the engine: two phrases 0.7 s apart are two finals
    under a 0.5 s endpoint and one final under a 1.2 s endpoint."""
    from callrelay.asr import load_engine
    from callrelay.config import load_settings

    hello, hello_rate = read_audio(REAL_DIR / "hello_world.flac")
    fox, fox_rate = read_audio(REAL_DIR / "quick_brown_fox.flac")
    assert hello_rate == fox_rate == RATE
    pause = np.zeros(int(0.7 * RATE), np.int16)
    audio = np.concatenate([pause, hello, pause, fox, pause, pause])
    texts = {}
    for silence in (0.5, 1.2):
        engine = load_engine(load_settings(asr_engine="whisper", endpoint_silence_seconds=silence))
        assert engine is not None
        recogniser = engine.new_recogniser()
        finals = recogniser.accept(audio).result() + recogniser.finish().result()
        texts[silence] = [f.text.lower() for f in finals]
    assert len(texts[0.5]) == 2 and "hello" in texts[0.5][0] and "fox" in texts[0.5][1]
    assert len(texts[1.2]) == 1 and "hello" in texts[1.2][0] and "fox" in texts[1.2][0]


def feed_in_windows(segmenter: UtteranceSegmenter, audio: np.ndarray) -> list[Utterance]:
    found = []
    for i in range(0, len(audio), 512):
        found += segmenter.accept(audio[i : i + 512])
    return found


def test_an_utterance_is_settled_once_post_roll_of_its_pause_has_passed() -> None:
    """From then on its audio is final: the utterance the pause goes on to close is the same
    object, so a recogniser may start on it early."""
    _, segmenter = segment(signal((0.5, 0), (1.0, 0.5)), step=512)
    assert segmenter.settled is None
    feed_in_windows(segmenter, signal((0.19, 0)))
    assert segmenter.settled is None  # less than post_roll (0.2 s) of pause
    assert feed_in_windows(segmenter, signal((0.06, 0))) == []
    settled = segmenter.settled
    assert settled is not None and abs(settled.speech_start / RATE - 0.5) < 0.04
    closed = feed_in_windows(segmenter, signal((0.3, 0)))
    assert closed == [settled] and closed[0] is settled
    assert segmenter.settled is None


def test_a_long_utterance_settles_sooner_and_keeps_less_of_its_pause() -> None:
    """Its decode is what the final waits for: long_post_roll (0.1 s) from long_speech (3.5 s)."""
    _, segmenter = segment(signal((0.5, 0), (4.0, 0.5)), step=512)
    feed_in_windows(segmenter, signal((0.09, 0)))
    assert segmenter.settled is None
    feed_in_windows(segmenter, signal((0.06, 0)))
    settled = segmenter.settled
    assert settled is not None
    kept_after_speech = (
        len(settled.audio) / RATE - 0.3 - (settled.speech_end - settled.speech_start) / RATE
    )
    assert abs(kept_after_speech - 0.1) < 0.02  # not 0.2 (pre-roll: whole windows, ~0.3 s)
    [closed] = feed_in_windows(segmenter, signal((0.4, 0)))
    assert closed is settled


def test_speech_that_goes_on_after_a_short_pause_unsettles_the_utterance() -> None:
    _, segmenter = segment(signal((0.5, 0), (1.0, 0.5), (0.3, 0)), step=512)
    settled = segmenter.settled
    assert settled is not None
    assert feed_in_windows(segmenter, signal((0.5, 0.5))) == []
    assert segmenter.settled is None
    [whole] = segmenter.finish()
    assert whole.speech_start == settled.speech_start and whole.speech_end > settled.speech_end
