"""With redaction on, a track's audio waits before it is written, so that what redaction masks
is silenced before it reaches the disk; a stretch masked later still comes back to be
silenced where it was written."""

from __future__ import annotations

import numpy as np

from callrelay.call import AudioChunk
from callrelay.recording_masks import DelayedMasking

FRAME = 320  # 20 ms at 16 kHz


def chunk(number: int) -> AudioChunk:
    return AudioChunk("inbound", 20 * number, FRAME * number, np.full(FRAME, 1000, np.int16), b"")


def test_audio_waits_its_delay_and_what_is_masked_meanwhile_is_silence() -> None:
    masking = DelayedMasking(delay_seconds=1.0, margin_seconds=0.0)
    out = [ready for n in range(50) for ready in masking.push(chunk(n))]
    assert out == []  # a second of audio: still waiting
    assert masking.mask(FRAME * 10 + 100, FRAME * 12) is None  # nothing of it has left
    out = [ready for n in range(50, 100) for ready in masking.push(chunk(n))]
    samples = np.concatenate([c.pcm for c in out])
    assert len(samples) == 50 * FRAME
    assert not samples[FRAME * 10 + 100 : FRAME * 12].any()
    assert samples[: FRAME * 10 + 100].all() and samples[FRAME * 12 :].all()


def test_a_stretch_masked_after_it_left_is_returned_to_be_silenced_in_the_file() -> None:
    masking = DelayedMasking(delay_seconds=0.1, margin_seconds=0.01)
    for n in range(20):
        masking.push(chunk(n))
    left = masking.released_to
    assert masking.mask(100, 500) == (0, 660)  # with the margin, all of it already written
    assert masking.mask(left - 50, left + 300) == (left - 50 - 160, left)


def test_draining_lets_everything_out_masked() -> None:
    masking = DelayedMasking(delay_seconds=5.0, margin_seconds=0.0)
    for n in range(10):
        masking.push(chunk(n))
    masking.mask(0, FRAME)
    out = masking.drain()
    assert len(out) == 10 and not out[0].pcm.any() and out[1].pcm.all()
