"""RECORDINGS_FORMAT: a complete call's two WAVs kept as one stereo FLAC (lossless) or Opus,
checked before the WAVs go, appended to when the call resumes, served with byte ranges."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile

from callrelay.recording import WavWriter
from callrelay.recording_formats import CODECS, RecordingFormat, encode_call
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid
from tests.helpers import call_audio, expected_pcm, start_relay, stream_call

FLAC = CODECS[RecordingFormat.FLAC]
OPUS = CODECS[RecordingFormat.OPUS]


def write_wav(path: Path, samples: np.ndarray) -> None:
    writer = WavWriter(path)
    writer.append(samples.astype(np.int16))
    writer.close()


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """A 300 Hz tone under a slow envelope with a little noise: something a codec must keep."""
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t + seed)
    noise = np.random.default_rng(seed).normal(0, 300, len(t))
    return (8000 * envelope * np.sin(2 * np.pi * 300 * t) + noise).astype(np.int16)


def test_flac_holds_both_sides_sample_for_sample_and_the_wavs_go(tmp_path: Path) -> None:
    caller, receiver = speech_like(3.0, 1), speech_like(2.5, 2)
    write_wav(tmp_path / "caller.wav", caller)
    write_wav(tmp_path / "receiver.wav", receiver)
    assert encode_call(tmp_path, FLAC) == len(caller)
    both, rate = soundfile.read(tmp_path / "recording.flac", dtype="int16")
    assert rate == 16000 and both.shape == (len(caller), 2)
    assert np.array_equal(both[:, 0], caller)
    assert np.array_equal(both[: len(receiver), 1], receiver) and not both[len(receiver) :, 1].any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recording.flac"]


def test_opus_is_far_smaller_and_still_the_same_sound(tmp_path: Path) -> None:
    caller, receiver = speech_like(4.0, 3), speech_like(4.0, 4)
    write_wav(tmp_path / "caller.wav", caller)
    write_wav(tmp_path / "receiver.wav", receiver)
    wav_bytes = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert encode_call(tmp_path, OPUS) == len(caller)
    stored = tmp_path / "recording.opus"
    assert stored.stat().st_size < wav_bytes / 5
    both, _ = soundfile.read(stored, dtype="int16")
    assert both.shape == (len(caller), 2)
    for channel, original in enumerate((caller, receiver)):
        decoded = both[:, channel].astype(np.float64)
        error = decoded - original
        snr = 10 * np.log10(np.sum(original.astype(np.float64) ** 2) / np.sum(error**2))
        assert snr > 10, f"channel {channel}: {snr:.1f} dB"


def test_a_call_resumed_after_encoding_is_appended_to_its_file(tmp_path: Path) -> None:
    first = speech_like(2.0, 5)
    write_wav(tmp_path / "caller.wav", first)
    encode_call(tmp_path, FLAC)
    # The resumed stream's WAV starts on the call's timeline, after a gap, where it resumed.
    later = speech_like(1.0, 6)
    write_wav(tmp_path / "caller.wav", np.concatenate([np.zeros(40000, np.int16), later]))
    assert encode_call(tmp_path, FLAC) == 40000 + len(later)
    both, _ = soundfile.read(tmp_path / "recording.flac", dtype="int16")
    assert np.array_equal(both[: len(first), 0], first)
    assert not both[len(first) : 40000].any() and np.array_equal(both[40000:, 0], later)
    assert not both[:, 1].any()


def test_a_file_that_cannot_be_encoded_onto_leaves_the_wavs_alone(tmp_path: Path) -> None:
    write_wav(tmp_path / "caller.wav", speech_like(1.0, 7))
    (tmp_path / "recording.flac").write_bytes(b"not a FLAC file")
    before = (tmp_path / "caller.wav").read_bytes()
    with pytest.raises(RuntimeError):
        encode_call(tmp_path, FLAC)
    assert (tmp_path / "caller.wav").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caller.wav", "recording.flac"]


def test_a_call_with_no_recordings_encodes_nothing(tmp_path: Path) -> None:
    assert encode_call(tmp_path, FLAC) == 0 and not list(tmp_path.iterdir())


# Over the relay: a call streamed to it is kept as FLAC and served from it.


def bearer(relay: RunningRelay) -> dict[str, str]:
    return {"Authorization": f"Bearer {relay.api_token}"}


def test_a_complete_call_is_kept_as_one_flac_and_served_in_ranges(tmp_path: Path) -> None:
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off", "RECORDINGS_FORMAT": "flac"})
    call_sid = new_sid("CA")
    observer = relay.observer(call_sid=call_sid, audio=False)
    try:
        audio = call_audio(3)
        stream_call(relay, audio, StreamOptions(speed=0), call_sid)
        assert observer.completed.wait(30)
        call = requests.get(relay.url + f"/calls/{call_sid}", headers=bearer(relay), timeout=5)
        record = call.json()
        assert [r["name"] for r in record["recordings"]] == ["recording.flac"]
        stereo = record["stereo"]
        assert stereo["name"] == "recording.flac" and stereo["channels"] == ["caller", "receiver"]
        assert stereo["seconds"] == pytest.approx(3.0, abs=0.05)
        assert record["analytics"]["caller"]["talkSeconds"] > 0.5  # read from the FLAC
        whole = requests.get(relay.url + stereo["url"], timeout=5)
        assert whole.status_code == 200 and whole.headers["Content-Type"] == "audio/flac"
        both, _ = soundfile.read(io.BytesIO(whole.content), dtype="int16")
        for channel, track in enumerate(("inbound", "outbound")):
            expected = expected_pcm(audio[track])  # type: ignore[index]
            lead = len(both) - len(expected)
            assert 0 <= lead < 320 and not both[:lead, channel].any()
            assert np.array_equal(both[lead:, channel], expected)
        part = requests.get(relay.url + stereo["url"], headers={"Range": "bytes=0-99"}, timeout=5)
        assert part.status_code == 206 and part.content == whole.content[:100]
        gone = requests.get(relay.url + f"/calls/{call_sid}/caller.wav", headers=bearer(relay))
        assert gone.status_code == 404
        assert not list((relay.captures / call_sid).glob("*.wav"))
    finally:
        observer.close()
        stop_relay(relay)
    logged = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    encoded = [line for line in logged if line["evt"] == "recording_encoded"]
    assert [line["file"] for line in encoded] == ["recording.flac"]
    assert encoded[0]["callSid"] == call_sid and encoded[0]["cpuSeconds"] >= 0
