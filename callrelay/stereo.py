"""A call's two mono recordings read as one stereo WAV: the caller left, the receiver right.

The mono files are aligned sample for sample on the call's timeline, so the stereo file is
their samples interleaved, computed as it is read: nothing is built or stored, a byte range
costs only the frames it covers, and a recording still being written reads as far as it has
got. The shorter side is padded with silence.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from callrelay.ranged_file import RangedFile
from callrelay.recording import HEADER_BYTES, wav_header

BYTES_PER_FRAME = 4
"""A stereo PCM16 frame: two 2-byte samples."""


class StereoWav(RangedFile):
    """A seekable, read-only stereo WAV over two mono PCM16 WAVs (`None`: a side never heard)."""

    def __init__(self, left: BinaryIO | None, right: BinaryIO | None, rate: int) -> None:
        self._sides = (left, right)
        self._frames = [self._samples(side) for side in self._sides]
        self._header = wav_header(max(self._frames) * BYTES_PER_FRAME, rate, channels=2)
        super().__init__(HEADER_BYTES + max(self._frames) * BYTES_PER_FRAME)

    @staticmethod
    def _samples(side: BinaryIO | None) -> int:
        if side is None:
            return 0
        return max(0, side.seek(0, os.SEEK_END) - HEADER_BYTES) // 2

    def _read(self, position: int, count: int) -> bytes:
        header = self._header[position : position + count]
        start = max(position, HEADER_BYTES) - HEADER_BYTES
        end = position + count - HEADER_BYTES
        if end <= start:
            return header
        first, last = start // BYTES_PER_FRAME, -(-end // BYTES_PER_FRAME)
        frames = np.zeros((last - first, 2), np.int16)
        for channel, side in enumerate(self._sides):
            available = min(last, self._frames[channel]) - first
            if side is None or available <= 0:
                continue
            side.seek(HEADER_BYTES + first * 2)
            samples = np.frombuffer(side.read(available * 2), np.int16)
            frames[: len(samples), channel] = samples
        offset = start - first * BYTES_PER_FRAME
        return header + frames.tobytes()[offset : offset + end - start]

    def close(self) -> None:
        for side in self._sides:
            if side is not None:
                side.close()
        super().close()
