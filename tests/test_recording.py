import os
import signal
import subprocess
import sys
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np

from callrelay.call import AudioChunk, CallInfo
from callrelay.recording import CallRecorder, WavWriter, repair_captures, repair_wav, wav_header
from callrelay.storage.files import LocalCallFiles
from tests.helpers import read_wav, wait_for

CALL = CallInfo("CA" + "1" * 32, "MZ" + "2" * 32, "AC" + "3" * 32, ("inbound", "outbound"), {}, 0.0)


def chunk(track: str, start: int, samples: np.ndarray) -> AudioChunk:
    return AudioChunk(track, start // 16, start, samples.astype(np.int16), b"")  # type: ignore[arg-type]


def test_header_is_canonical_pcm16_mono() -> None:
    header = wav_header(3200)
    assert len(header) == 44 and header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "


def test_a_file_being_written_is_a_valid_wav_at_most_a_second_behind(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    writer = WavWriter(path)
    for n in range(1, 151):  # 3 s in 20 ms frames
        writer.append(np.full(320, n, dtype=np.int16))
        data, rate = read_wav(path)  # read while still open
        assert rate == 16000 and 320 * n - 16000 < len(data) <= 320 * n
        assert np.array_equal(data, np.repeat(np.arange(1, len(data) // 320 + 1), 320))
    writer.close()
    data, _ = read_wav(path)
    assert len(data) == 320 * 150  # closed: the header counts every sample


def test_recorder_writes_both_tracks_aligned_and_padded(tmp_path: Path) -> None:
    recorder = CallRecorder(LocalCallFiles(tmp_path))
    recorder.call_started(CALL)
    recorder.audio(CALL, chunk("inbound", 0, np.full(320, 100)))
    recorder.audio(CALL, chunk("outbound", 640, np.full(320, -100)))  # begins 40 ms later
    recorder.audio(CALL, chunk("inbound", 320, np.full(320, 200)))
    recorder.call_ended(CALL, "stop")
    caller, _ = read_wav(tmp_path / CALL.call_sid / "caller.wav")
    receiver, _ = read_wav(tmp_path / CALL.call_sid / "receiver.wav")
    assert len(caller) == len(receiver) == 960
    assert (receiver[:640] == 0).all() and (receiver[640:] == -100).all()
    assert (caller[:320] == 100).all() and (caller[640:] == 0).all()


def test_second_stream_for_a_call_does_not_overwrite_the_first(tmp_path: Path) -> None:
    for _ in range(2):
        recorder = CallRecorder(LocalCallFiles(tmp_path))
        recorder.call_started(CALL)
        recorder.audio(CALL, chunk("inbound", 0, np.ones(320)))
        recorder.call_ended(CALL, "stop")
    names = sorted(p.name for p in (tmp_path / CALL.call_sid).iterdir())
    assert names == ["caller-2.wav", "caller.wav", "receiver-2.wav", "receiver.wav"]


def test_a_stream_that_resumes_a_call_carries_on_its_recordings(tmp_path: Path) -> None:
    recorder = CallRecorder(LocalCallFiles(tmp_path))
    recorder.call_started(CALL)
    recorder.audio(CALL, chunk("inbound", 0, np.full(320, 1)))
    recorder.call_ended(CALL, "stop")
    # A later stream of the same call, started 3 s into the call's timeline.
    resumed = replace(CALL, stream_sid="MZ" + "9" * 32, offset_ms=3000, resumed=True)
    recorder = CallRecorder(LocalCallFiles(tmp_path))
    recorder.call_started(resumed)
    recorder.audio(resumed, chunk("outbound", 48000, np.full(320, 2)))
    recorder.call_ended(resumed, "stop")
    assert sorted(p.name for p in (tmp_path / CALL.call_sid).iterdir()) == [
        "caller.wav",
        "receiver.wav",
    ]
    caller, _ = read_wav(tmp_path / CALL.call_sid / "caller.wav")
    receiver, _ = read_wav(tmp_path / CALL.call_sid / "receiver.wav")
    assert len(caller) == len(receiver) == 48320
    assert (caller[:320] == 1).all() and (caller[320:] == 0).all()
    assert (receiver[:48000] == 0).all() and (receiver[48000:] == 2).all()


def test_unwritable_folder_is_reported_once_and_recording_resumes(
    tmp_path: Path, caplog, monkeypatch
) -> None:
    monkeypatch.setattr("callrelay.recording.RETRY_SECONDS", 0.0)
    blocker = tmp_path / "captures"
    blocker.write_text("a file where the folder should be")
    recorder = CallRecorder(LocalCallFiles(blocker))
    recorder.call_started(CALL)
    for i in range(5):
        recorder.audio(CALL, chunk("inbound", 320 * i, np.ones(320)))
    failures = [r for r in caplog.records if r.getMessage() == "recording_failed"]
    assert len(failures) == 1
    blocker.unlink()  # space comes back
    recorder.audio(CALL, chunk("inbound", 1600, np.full(320, 5)))
    recorder.call_ended(CALL, "stop")
    caller, _ = read_wav(blocker / CALL.call_sid / "caller.wav")
    assert len(caller) == 1920 and (caller[:1600] == 0).all() and (caller[1600:] == 5).all()


def test_repair_fixes_a_header_that_missed_the_last_appends(tmp_path: Path) -> None:
    path = tmp_path / "CAx" / "caller.wav"
    path.parent.mkdir()
    path.write_bytes(wav_header(0) + np.ones(1001, dtype="<i2").tobytes() + b"\x01")
    assert repair_captures(tmp_path) == [path]
    with wave.open(str(path)) as wav:
        assert wav.getnframes() == 1001
    assert repair_wav(path) is False


def test_killed_writer_leaves_a_playable_wav(tmp_path: Path) -> None:
    path = tmp_path / "killed.wav"
    script = (
        "import sys, time, numpy as np\n"
        "from callrelay.recording import WavWriter\n"
        f"w = WavWriter(__import__('pathlib').Path({str(path)!r}))\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    w.append(np.full(320, 7, dtype=np.int16)); time.sleep(0.001)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
    wait_for(lambda: path.stat().st_size >= 44 + 2 * 16000 + 2 * 320)  # over a second of it
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    data, rate = read_wav(path)
    assert rate == 16000 and len(data) >= 16000 and (data == 7).all()  # its header was written
    assert 0 <= path.stat().st_size - 44 - 2 * len(data) < 2 * 16000  # at most the last second
    assert repair_wav(path) is True
    repaired, _ = read_wav(path)
    assert 2 * len(repaired) == path.stat().st_size - 44  # the next start counts every sample
