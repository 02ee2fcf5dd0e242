"""A full disk costs recordings, never the relay: audio keeps flowing, one clear log line."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from callrelay.simulator.local_relay import stop_relay
from callrelay.simulator.media_client import StreamOptions, StreamReport
from callrelay.twilio.media_stream import Track
from tests.helpers import (
    AUTH_TOKEN,
    call_audio,
    expected_pcm,
    read_wav,
    start_relay,
    stream_call,
    wait_for,
)


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A small RAM disk mounted at `mount_point` (skips the test without root)."""
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: about 4 s of one call's recordings."""
    with tmpfs(tmp_path / "small", "256k") as mount_point:
        yield mount_point


def test_a_full_disk_keeps_audio_flowing_and_says_so_once(tmp_path: Path, small_disk: Path) -> None:
    relay = start_relay(
        tmp_path,
        {
            "ASR_ENGINE": "off",
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "PUBLIC_URL": "http://127.0.0.1:{port}",
            "CAPTURES_DIR": str(small_disk / "captures"),
        },
    )
    try:
        observer = relay.observer()
        try:
            report = stream_call(relay, call_audio(10), StreamOptions(speed=0))
            assert observer.ended.wait(20)
        finally:
            observer.close()
        assert observer.counts["media_in"] == observer.counts["media_out"] == 500
        lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
        wait_for(
            lambda: any(
                line["evt"] == "recording_finished"
                for line in [json.loads(x) for x in relay.log_file.read_text().splitlines()]
            )
        )
        failures = [
            line
            for line in lines
            if line["evt"] == "recording_failed" and line["callSid"] == report.call_sid
        ]
        assert len(failures) == 1 and "No space left" in failures[0]["error"]
        for name in ("caller.wav", "receiver.wav"):
            samples, rate = read_wav(small_disk / "captures" / report.call_sid / name)
            assert rate == 16000 and 0 < len(samples) < 10 * 16000  # valid, with what fitted
    finally:
        stop_relay(relay)


@pytest.fixture
def filled_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, to be filled by `leave_free`."""
    with tmpfs(tmp_path / "filled", "2m") as mount_point:
        yield mount_point


def leave_free(mount_point: Path, free_bytes: int) -> None:
    """Fill the disk with a ballast file until only `free_bytes` are left."""
    stats = os.statvfs(mount_point)
    (mount_point / "ballast").write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - free_bytes))


def test_recording_resumes_in_place_when_space_returns(tmp_path: Path, filled_disk: Path) -> None:
    relay = start_relay(
        tmp_path, {"ASR_ENGINE": "off", "CAPTURES_DIR": str(filled_disk / "captures")}
    )
    leave_free(filled_disk, 64 * 1024)  # about 1 s of one call's recordings
    seconds = 5
    audio = call_audio(seconds)
    try:
        result: dict[str, StreamReport] = {}
        streamer = threading.Thread(
            target=lambda: result.update(report=stream_call(relay, audio, StreamOptions(speed=1)))
        )
        streamer.start()
        wait_for(lambda: "recording_failed" in events(relay.log_file))
        (filled_disk / "ballast").unlink()  # space comes back mid-call
        streamer.join(20)
        call_sid = result["report"].call_sid
        wait_for(lambda: "recording_finished" in events(relay.log_file))
    finally:
        stop_relay(relay)
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    assert [x["evt"] for x in lines].count("recording_failed") == 1
    resumed = [x for x in lines if x["evt"] == "recording_resumed"]
    assert len(resumed) == 1
    retried_by = int((resumed[0]["at"] + 1.0) * 16000)  # each track retries once a second
    lost_seconds = 0.0
    recordings: tuple[tuple[str, Track], ...] = (
        ("caller.wav", "inbound"),
        ("receiver.wav", "outbound"),
    )
    for name, track in recordings:
        samples, _ = read_wav(filled_disk / "captures" / call_sid / name)
        expected = np.concatenate([np.zeros(80, np.int16), expected_pcm(audio[track])])
        assert len(samples) == len(expected)  # whole length, aligned from time 0
        assert np.array_equal(samples[retried_by:], expected[retried_by:])  # written in place
        lost = samples != expected
        assert not samples[lost].any()  # what the disk refused is silence, never noise
        lost_seconds += lost.sum() / 16000
    assert lost_seconds > 0.1  # the disk did refuse a stretch (the retry comes a second later)


def events(log_file: Path) -> list[str]:
    return [json.loads(line)["evt"] for line in log_file.read_text().splitlines()]
