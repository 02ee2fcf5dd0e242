"""A full disk costs recordings, never the relay: audio keeps flowing, one clear log line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from callrelay.simulator.media_client import StreamOptions
from tests.audio_files import read_wav
from tests.conftest import AUTH_TOKEN, start_relay, stop_relay, wait_for
from tests.test_end_to_end import call_audio, stream_call


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs: about 4 s of one call's recordings."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


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
