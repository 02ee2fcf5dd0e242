import numpy as np
import pytest
import soxr

from callrelay.audio import (
    MULAW_SILENCE,
    MULAW_TO_LINEAR,
    Upsampler2x,
    mulaw_decode,
    mulaw_encode,
)
from tests.helpers import CALL_DIR, read_audio


def g711_expand(code: int) -> int:
    """ITU-T G.711 mu-law expansion written out from the standard, one code at a time."""
    code = ~code & 0xFF
    sign, exponent, mantissa = code & 0x80, (code >> 4) & 7, code & 0x0F
    magnitude = ((mantissa << 3) + 0x84 << exponent) - 0x84
    return -magnitude if sign else magnitude


def test_mulaw_table_is_the_exact_g711_expansion() -> None:
    assert [int(v) for v in MULAW_TO_LINEAR] == [g711_expand(c) for c in range(256)]
    assert MULAW_TO_LINEAR[0x00] == -32124 and MULAW_TO_LINEAR[0x80] == 32124


def test_both_silence_codes_decode_to_zero() -> None:
    assert MULAW_TO_LINEAR[MULAW_SILENCE] == 0 and MULAW_TO_LINEAR[0x7F] == 0


def test_encoding_then_decoding_every_code_gives_it_back() -> None:
    codes = bytes(range(256))
    decoded = mulaw_decode(codes)
    # 0x7F and 0xFF both mean zero; the coder picks 0xFF.
    assert mulaw_encode(decoded) == codes.replace(b"\x7f", b"\xff")


def test_encoder_matches_the_reference_coder_for_every_int16() -> None:
    audioop = pytest.importorskip("audioop")
    every_value = np.arange(-32768, 32768, dtype=np.int16)
    assert mulaw_encode(every_value) == audioop.lin2ulaw(every_value.tobytes(), 2)


def test_upsampler_gives_exactly_two_samples_per_input_sample() -> None:
    upsampler = Upsampler2x()
    for size in (160, 160, 1, 7, 159, 400, 160):
        assert len(upsampler.process(np.zeros(size, dtype=np.int16))) == 2 * size
    assert len(upsampler.process_mulaw(b"\xff" * 160)) == 320


def test_frame_by_frame_output_equals_whole_signal_output() -> None:
    rng = np.random.default_rng(7)
    signal = rng.integers(-30000, 30000, 8000).astype(np.int16)
    whole = Upsampler2x().process(signal)
    for frame in (160, 97, 13):
        upsampler = Upsampler2x()
        pieces = [upsampler.process(signal[i : i + frame]) for i in range(0, len(signal), frame)]
        assert np.array_equal(np.concatenate(pieces), whole)


def test_input_samples_pass_through_unchanged_after_the_fixed_delay() -> None:
    signal = np.arange(-800, 800, 5, dtype=np.int16)
    out = Upsampler2x().process(signal)
    delay = Upsampler2x.DELAY_INPUT_SAMPLES
    assert np.array_equal(out[2 * delay :: 2], signal[: len(signal) - delay])
    assert delay / 8000 <= 0.002


def test_mulaw_fast_path_equals_decode_then_upsample() -> None:
    payload = bytes(np.random.default_rng(3).integers(0, 256, 480, dtype=np.uint8))
    a, b = Upsampler2x(), Upsampler2x()
    fast = np.concatenate([a.process_mulaw(payload[i : i + 160]) for i in range(0, 480, 160)])
    slow = np.concatenate([b.process(mulaw_decode(payload[i : i + 160])) for i in (0, 160, 320)])
    assert np.array_equal(fast, slow)


def test_full_scale_overshoot_is_clipped_not_wrapped() -> None:
    square = np.tile(np.array([32124, 32124, -32124, -32124], dtype=np.int16), 100)
    out = Upsampler2x().process(square).astype(np.int32)
    assert out.max() <= 32767 and out.min() >= -32768
    assert out.max() > 32000  # peaks stay peaks


def test_upsampled_speech_is_within_40_db_of_an_offline_high_quality_resample() -> None:
    speech, rate = read_audio(CALL_DIR / "caller.flac")
    assert rate == 8000
    decoded = mulaw_decode(mulaw_encode(speech)).astype(np.float64)
    reference = soxr.resample(decoded, 8000, 16000, quality="VHQ")
    upsampler = Upsampler2x()
    frames = mulaw_encode(speech)
    live = np.concatenate(
        [upsampler.process_mulaw(frames[i : i + 160]) for i in range(0, len(frames), 160)]
    ).astype(np.float64)
    lag = 2 * Upsampler2x.DELAY_INPUT_SAMPLES
    aligned, ref = live[lag:], reference[: len(live) - lag]
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((aligned - ref) ** 2))
    assert snr >= 40, f"SNR {snr:.1f} dB"
