"""Benchmark: what each `RECORDINGS_FORMAT` costs for a 10-minute call.

    callrelay bench recording-formats [--minutes 10]
    (or python -m benchmarks.recording_formats)

The shipped two-party call (real speech, as a phone line carries it: 8 kHz mu-law, made 16 kHz
PCM by the relay's own path), repeated to `--minutes`, written as the recorder writes it (two
mono WAVs), then encoded by the relay's own encoder for each format. Prints the stored size,
the CPU seconds the encoding took, and, for Opus, how close the decoded audio is to the WAVs
(signal-to-noise ratio per channel). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from callrelay.audio import Upsampler2x
from callrelay.recording import WavWriter
from callrelay.recording_formats import CODECS, RecordingFormat, encode_call
from callrelay.simulator.audio_source import default_call_audio, frames, load_telephone_audio

SIDES = ("caller.wav", "receiver.wav")


def telephone_pcm(path: Path, seconds: int) -> np.ndarray:
    """The file as the relay records it: mu-law frames through the relay's upsampler."""
    mulaw = load_telephone_audio(path)
    mulaw = (mulaw * (-(-seconds * 8000 // len(mulaw))))[: seconds * 8000]
    upsampler = Upsampler2x()
    return np.concatenate([upsampler.process_mulaw(frame) for frame in frames(mulaw)])


def write_call(folder: Path, tracks: list[np.ndarray]) -> int:
    folder.mkdir()
    for name, samples in zip(SIDES, tracks, strict=True):
        writer = WavWriter(folder / name)
        writer.append(samples)
        writer.close()
    return sum((folder / name).stat().st_size for name in SIDES)


def snr(decoded: np.ndarray, original: np.ndarray) -> str:
    """Waveform signal-to-noise ratio: `lossless` when every sample is kept. (A perceptual
    codec scores low on it while sounding close: it keeps what is heard, not the waveform.)"""
    error = decoded.astype(np.float64) - original
    if not error.any():
        return "lossless"
    ratio = np.sum(original.astype(np.float64) ** 2) / np.sum(error**2)
    return f"{10 * np.log10(ratio):.1f} dB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    seconds = int(args.minutes * 60)
    tracks = [telephone_pcm(path, seconds) for path in default_call_audio()]
    print(f"a {args.minutes:g}-minute two-sided call, 16 kHz PCM16")
    with tempfile.TemporaryDirectory() as scratch:
        wav_bytes = write_call(Path(scratch) / "wav", tracks)
        print(f"  {'wav':<5} {wav_bytes / 1e6:6.1f} MB   (two mono WAVs, written live)")
        for kept_as in (RecordingFormat.FLAC, RecordingFormat.OPUS):
            folder = Path(scratch) / kept_as.value
            write_call(folder, tracks)
            codec = CODECS[kept_as]
            started = time.process_time()
            encode_call(folder, codec)
            cpu = time.process_time() - started
            stored = folder / codec.name
            size = stored.stat().st_size
            decoded, _ = soundfile.read(stored, dtype="int16")
            quality = ", ".join(
                snr(decoded[: len(t), channel], t) for channel, t in enumerate(tracks)
            )
            print(
                f"  {kept_as.value:<5} {size / 1e6:6.1f} MB   {size / wav_bytes:5.1%} of WAV, "
                f"{size * 8 / seconds / 1000:5.1f} kbit/s, encoding {cpu:5.2f} s CPU, "
                f"SNR {quality}",
            )


if __name__ == "__main__":
    main()
