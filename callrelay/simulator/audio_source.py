"""Audio files as a phone line carries them: 8 kHz mono mu-law, 160 bytes per 20 ms frame."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import soundfile
import soxr

from callrelay.audio import MULAW_SILENCE, mulaw_decode, mulaw_encode

FRAME_BYTES = 160
FRAME_MS = 20


def default_call_audio() -> tuple[Path, Path]:
    """The two-party call shipped with the package (caller and receiver, 31 s)."""
    data = resources.files("callrelay.simulator") / "data"
    return Path(str(data / "caller.flac")), Path(str(data / "receiver.flac"))


class UnreadableAudio(ValueError):
    """An audio file that is missing or in no format soundfile reads; says which file."""


def load_telephone_audio(path: Path) -> bytes:
    """Any file soundfile reads (WAV, FLAC, OGG...), mixed to mono, resampled to 8 kHz, mu-law."""
    try:
        samples, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (OSError, soundfile.LibsndfileError) as error:
        raise UnreadableAudio(f"cannot read {path}: {error}") from None
    mono = samples.mean(axis=1)
    if rate != 8000:
        mono = soxr.resample(mono, rate, 8000, quality="VHQ")
    pcm = np.clip(np.rint(mono * 32768.0), -32768, 32767).astype(np.int16)
    return mulaw_encode(pcm)


def frames(mulaw: bytes, total_frames: int | None = None) -> list[bytes]:
    """Cut into 20 ms frames, padding the last (and up to `total_frames`) with silence."""
    count = max(-(-len(mulaw) // FRAME_BYTES), total_frames or 0)
    padded = mulaw.ljust(count * FRAME_BYTES, bytes([MULAW_SILENCE]))
    return [padded[i : i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES)]


def is_silent(frame: bytes, threshold: int = 64) -> bool:
    """True when no sample of the frame is louder than `threshold` (of 32767)."""
    return int(np.abs(mulaw_decode(frame).astype(np.int32)).max()) <= threshold
