"""Benchmark: the per-frame audio path (mu-law 8 kHz -> PCM 16 kHz), quality, cost and delay.

    callrelay bench audio-path [--frames N]   (or python -m benchmarks.audio_path)

Quality is the SNR of the live, frame-by-frame output against an offline VHQ resample (soxr) of
the whole decoded signal, for every file under tests/data: as it is (wideband up to 4 kHz)
and band-limited to 300-3400 Hz as the telephone network delivers it. Cost is microseconds per
20 ms frame on this machine, for our upsampler and for the alternatives peers use.
"""

from __future__ import annotations

import argparse
import timeit
import warnings
from pathlib import Path

import numpy as np
import soundfile
import soxr

from callrelay.audio import Upsampler2x, mulaw_decode, mulaw_encode

TEST_AUDIO = Path(__file__).resolve().parents[1] / "tests" / "data"


def telephone_band(signal: np.ndarray) -> np.ndarray:
    """300-3400 Hz, as a PSTN channel passes it (brick-wall in the frequency domain)."""
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(len(signal), 1 / 8000)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    return np.fft.irfft(spectrum, len(signal))


def snr_db(mulaw: bytes) -> float:
    decoded = mulaw_decode(mulaw).astype(np.float64)
    reference = soxr.resample(decoded, 8000, 16000, quality="VHQ")
    upsampler = Upsampler2x()
    live = np.concatenate(
        [upsampler.process_mulaw(mulaw[i : i + 160]) for i in range(0, len(mulaw), 160)]
    ).astype(np.float64)
    lag = 2 * Upsampler2x.DELAY_INPUT_SAMPLES
    aligned, ref = live[lag:], reference[: len(live) - lag]
    return float(10 * np.log10(np.sum(ref**2) / np.sum((aligned - ref) ** 2)))


def load_8k(path: Path) -> np.ndarray:
    samples, rate = soundfile.read(str(path), dtype="float64")
    resampled = samples if rate == 8000 else soxr.resample(samples, rate, 8000, quality="VHQ")
    return np.asarray(resampled, dtype=np.float64)


def to_mulaw(signal: np.ndarray) -> bytes:
    return mulaw_encode(np.clip(np.rint(signal * 32768), -32768, 32767).astype(np.int16))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=50_000)
    args = parser.parse_args()

    files = sorted(TEST_AUDIO.glob("*/*.flac"))
    if files:
        print(f"SNR against an offline soxr VHQ resample, {len(files)} files from {TEST_AUDIO}")
        print(f"{'file':<52} {'wideband':>9} {'telephone':>10}")
        wide, phone = [], []
        for path in files:
            signal = load_8k(path)
            wide.append(snr_db(to_mulaw(signal)))
            phone.append(snr_db(to_mulaw(telephone_band(signal))))
            print(f"{path.parent.name + '/' + path.name:<52} {wide[-1]:8.1f}  {phone[-1]:9.1f}")
        print(
            f"{'min / mean':<52} {min(wide):4.1f}/{np.mean(wide):4.1f} "
            f"{min(phone):4.1f}/{np.mean(phone):4.1f}  dB"
        )
    else:
        print(f"no test audio at {TEST_AUDIO}; skipping SNR")

    rng = np.random.default_rng(1)
    frame = mulaw_encode(rng.normal(0, 4000, 160).clip(-32768, 32767).astype(np.int16))
    upsampler = Upsampler2x()

    def ours() -> None:
        upsampler.process_mulaw(frame)

    stream = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality="QQ")

    def soxr_qq() -> None:
        stream.resample_chunk(mulaw_decode(frame))

    candidates = {"callrelay Upsampler2x (decode + upsample)": ours, "soxr QQ stream": soxr_qq}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop

            state = None
            linear = audioop.ulaw2lin(frame, 2)

            def ratecv() -> None:
                nonlocal state
                audioop.ratecv(linear, 2, 1, 8000, 16000, state)

            candidates["audioop.ratecv with state (decode excluded)"] = ratecv
        except ImportError:
            pass
    print(f"\nCost per 20 ms frame, best of 5 runs of {args.frames} frames")
    for name, run in candidates.items():
        seconds = min(timeit.repeat(run, number=args.frames, repeat=5)) / args.frames
        print(f"{name:<48} {seconds * 1e6:6.2f} us")
    delay_ms = (Upsampler2x.DELAY_INPUT_SAMPLES - 0.5) / 8
    print(f"\nAdded delay: {delay_ms:.2f} ms (interpolated samples need 16 samples of look-ahead)")


if __name__ == "__main__":
    main()
