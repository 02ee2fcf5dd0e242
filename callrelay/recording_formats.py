"""The format a finished call's recordings are kept in (`RECORDINGS_FORMAT`).

Recordings are always written live as mono WAVs (a file valid at every moment, cheap to append,
readable while the call goes on). With `wav`, the default, they stay so. With `flac` or `opus`,
once the call is complete its two aligned tracks are encoded into one stereo file
(`recording.flac` or `recording.opus`: caller left, receiver right), the file is read back and
checked, and only then are the WAVs removed. FLAC is lossless; Opus (in Ogg, at about 43 kbit/s
for both channels) keeps speech clear at a sixth of FLAC's size but costs far more CPU to encode.

If a later stream resumes a call that was already encoded, its WAVs start on the call's
timeline where the encoded file ends, and the next completion appends them to it.

Encoding holds the CPU inside libsndfile: it runs in an OS thread (`background.run_in_os_thread`),
never on the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile

from callrelay.background import run_in_os_thread
from callrelay.call import OUTPUT_RATE
from callrelay.logs import log_event
from callrelay.recording import HEADER_BYTES
from callrelay.storage.files import LocalCallFiles
from callrelay.tracks import FILE_STEMS

logger = logging.getLogger("callrelay.recording")

PIECE_FRAMES = 60 * OUTPUT_RATE
"""Audio is encoded and read a minute at a time, never held whole."""
SIDE_FILES = tuple(f"{FILE_STEMS[track]}.wav" for track in ("inbound", "outbound"))
"""The mono WAVs of a call's first stream, in channel order (caller, receiver)."""


class RecordingFormat(StrEnum):
    WAV = "wav"
    FLAC = "flac"
    OPUS = "opus"


@dataclass(frozen=True)
class Codec:
    """How libsndfile writes one stored format."""

    name: str
    """The stereo file's name."""
    container: str
    subtype: str
    content_type: str
    options: dict[str, Any] = field(default_factory=dict)


CODECS = {
    RecordingFormat.FLAC: Codec("recording.flac", "FLAC", "PCM_16", "audio/flac"),
    RecordingFormat.OPUS: Codec(
        "recording.opus",
        "OGG",
        "OPUS",
        "audio/ogg; codecs=opus",
        # libsndfile maps the level to a bitrate: 0.94 is about 43 kbit/s for both channels.
        # Below about 40 kbit/s Opus switches to its speech modes, which cost three times the
        # CPU to encode for a file little smaller.
        {"compression_level": 0.94},
    ),
}
ENCODED_NAMES = {codec.name: codec for codec in CODECS.values()}


class EncodingFailed(Exception):
    """The encoded file did not read back as what was encoded: the WAVs are kept."""


def encode_call(folder: Path, codec: Codec) -> int:
    """Encode the call's WAVs in `folder` (appended to its encoded file, if it has one) into
    `codec`'s stereo file; check it; remove the WAVs. The frames the file holds (0: nothing to
    encode). Raises OSError or EncodingFailed, leaving every file as it was."""
    sides = [folder / name for name in SIDE_FILES]
    if not any(path.is_file() for path in sides):
        return 0
    target = folder / codec.name
    partial = folder / f".{codec.name}.partial"  # a dot: not one of the call's files
    try:
        with soundfile.SoundFile(
            partial,
            "w",
            OUTPUT_RATE,
            2,
            codec.subtype,
            format=codec.container,
            **codec.options,
        ) as out:
            frames = 0
            if target.is_file():
                for piece in soundfile.blocks(target, PIECE_FRAMES, dtype="int16", always_2d=True):
                    out.write(piece)
                    frames += len(piece)
            for piece in _wav_pieces(sides, frames):
                out.write(piece)
                frames += len(piece)
        written = soundfile.info(str(partial)).frames
        if written != frames:
            raise EncodingFailed(f"{codec.name} reads back {written} frames of {frames}")
        with open(partial, "rb") as file:
            os.fsync(file.fileno())
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    for path in sides:
        path.unlink(missing_ok=True)
    return frames


def _wav_pieces(paths: list[Path], start: int) -> Iterator[np.ndarray]:
    """The two mono WAVs as stereo pieces from frame `start` on (the shorter padded with
    silence)."""
    files = [path.open("rb") if path.is_file() else None for path in paths]
    try:
        lengths = [_wav_frames(file) for file in files]
        end = max(lengths)
        for first in range(start, end, PIECE_FRAMES):
            count = min(PIECE_FRAMES, end - first)
            piece = np.zeros((count, 2), np.int16)
            for channel, file in enumerate(files):
                available = min(count, lengths[channel] - first)
                if file is None or available <= 0:
                    continue
                file.seek(HEADER_BYTES + first * 2)
                samples = np.frombuffer(file.read(available * 2), "<i2")
                piece[: len(samples), channel] = samples
            yield piece
    finally:
        for file in files:
            if file is not None:
                file.close()


def _wav_frames(file: BinaryIO | None) -> int:
    if file is None:
        return 0
    return max(0, file.seek(0, os.SEEK_END) - HEADER_BYTES) // 2


def encoded_frames(file: BinaryIO) -> int:
    """How many stereo frames an encoded recording holds (read from its header)."""
    with file:
        return int(soundfile.info(file).frames)


def encoded_side(file: BinaryIO, channel: int) -> Iterator[np.ndarray]:
    """One channel of an encoded recording, a minute at a time."""
    with file:
        for piece in soundfile.blocks(file, PIECE_FRAMES, dtype="int16", always_2d=True):
            yield piece[:, channel]


class RecordingEncoder:
    """Encodes each complete call's recordings into `codec`'s stereo file, in the local folder
    the recorder wrote them to. Called from the call's completion task."""

    def __init__(self, files: LocalCallFiles, codec: Codec) -> None:
        self._files = files
        self.codec = codec

    def encode(self, call_sid: str) -> None:
        """Encode the call's WAVs; on failure they are kept, served as they are, and logged."""
        folder = self._files.folder(call_sid)
        try:
            frames, cpu_seconds = run_in_os_thread(_timed_encode, folder, self.codec)
        except (OSError, RuntimeError, EncodingFailed) as error:  # soundfile raises RuntimeError
            log_event(
                logger,
                "recording_encoding_failed",
                logging.ERROR,
                callSid=call_sid,
                error=f"{type(error).__name__}: {error}",
                detail="the WAVs are kept",
            )
            return
        if frames:
            log_event(
                logger,
                "recording_encoded",
                callSid=call_sid,
                file=self.codec.name,
                seconds=round(frames / OUTPUT_RATE, 3),
                bytes=(folder / self.codec.name).stat().st_size,
                cpuSeconds=round(cpu_seconds, 2),
            )


def _timed_encode(folder: Path, codec: Codec) -> tuple[int, float]:
    """`encode_call`, and the CPU seconds its thread spent."""
    started = time.thread_time()
    frames = encode_call(folder, codec)
    return frames, time.thread_time() - started
