"""The stereo recording, read from the two mono ones as it is read: caller left, receiver
right, the shorter side padded with silence, any byte range."""

from __future__ import annotations

import io
import random
import wave

import numpy as np
import soundfile

from callrelay.recording import wav_header
from callrelay.stereo import StereoWav


def mono(samples: np.ndarray) -> io.BytesIO:
    return io.BytesIO(wav_header(samples.nbytes) + samples.astype("<i2").tobytes())


def test_the_two_sides_are_interleaved_with_the_shorter_padded() -> None:
    caller = np.arange(1, 1001, dtype=np.int16)
    receiver = -np.arange(1, 601, dtype=np.int16)
    whole = StereoWav(mono(caller), mono(receiver), 16000).read()
    with wave.open(io.BytesIO(whole)) as parsed:
        assert (parsed.getnchannels(), parsed.getframerate(), parsed.getsampwidth()) == (
            2,
            16000,
            2,
        )
        assert parsed.getnframes() == 1000
    both, _ = soundfile.read(io.BytesIO(whole), dtype="int16")
    assert np.array_equal(both[:, 0], caller)
    assert np.array_equal(both[:600, 1], receiver) and not np.any(both[600:, 1])


def test_any_byte_range_reads_what_the_whole_file_holds_there() -> None:
    rng = np.random.default_rng(1)
    caller = rng.integers(-32768, 32767, 4003, dtype=np.int16)
    receiver = rng.integers(-32768, 32767, 4001, dtype=np.int16)
    whole = StereoWav(mono(caller), mono(receiver), 16000).read()
    assert len(whole) == 44 + 4003 * 4
    stereo = StereoWav(mono(caller), mono(receiver), 16000)
    picks = random.Random(2)
    for _ in range(200):
        start = picks.randrange(len(whole) + 10)
        count = picks.randrange(1, 3000)
        stereo.seek(start)
        assert stereo.read(count) == whole[start : start + count]
    assert stereo.seek(0, io.SEEK_END) == len(whole) and stereo.read(10) == b""


def test_a_call_with_one_side_has_a_silent_other_channel() -> None:
    caller = np.full(320, 1000, np.int16)
    both, _ = soundfile.read(io.BytesIO(StereoWav(mono(caller), None, 16000).read()), dtype="int16")
    assert both.shape == (320, 2) and np.all(both[:, 0] == 1000) and not np.any(both[:, 1])
