"""SIGTERM or Ctrl-C: calls end cleanly, what was being said is transcribed, files are whole."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from callrelay.recording import HEADER_BYTES
from callrelay.simulator.conversation import Conversation
from callrelay.simulator.media_client import StreamOptions, new_sid, play_stream
from tests.helpers import call_audio, read_wav, real_speech_call, start_relay, wait_until_recorded


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_server_ends_calls_and_transcribes_what_was_pending(
    tmp_path: Path, signum: int
) -> None:
    relay = start_relay(tmp_path, {"ASR_ENGINE": "whisper"})
    conversation: Conversation = real_speech_call()
    call_sid = new_sid("CA")
    result = {}

    def stream() -> None:
        result["report"] = play_stream(
            relay.stream_target(),
            {"inbound": conversation.caller, "outbound": conversation.receiver},
            call_sid=call_sid,
            options=StreamOptions(speed=1),
        )

    streamer = threading.Thread(target=stream)
    streamer.start()
    # Stop in the middle of the first sentence ("and mister john dashwood had then leisure...").
    wait_until_recorded(relay, call_sid, conversation.turns[0].start + 2.5)
    if signum == signal.SIGINT:
        os.killpg(relay.process.pid, signum)  # Ctrl-C: every process of the terminal's group
    else:
        relay.process.send_signal(signum)
    assert relay.process.wait(30) == 0
    streamer.join(10)
    assert result["report"].server_closed == (1001, "shutdown")

    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    events = [line["evt"] for line in lines]
    assert events.index("shutdown_started") < events.index("shutdown_complete")
    ended = next(line for line in lines if line["evt"] == "call_ended")
    assert ended["reason"] == "shutdown"
    said = " ".join(line["text"] for line in lines if line["evt"] == "transcript").lower()
    assert "dashwood" in said or "john" in said, said
    transcript = relay.captures / call_sid / "transcript.jsonl"
    assert "Caller" in transcript.read_text()
    for name in ("caller.wav", "receiver.wav"):
        path = relay.captures / call_sid / name
        samples, _ = read_wav(path)
        assert path.stat().st_size == HEADER_BYTES + 2 * len(samples)  # header finalised
        assert len(samples) >= 16000 * 2  # the seconds streamed before the stop
    assert "Traceback" not in relay.server_output()
    assert "asr_process_died" not in relay.server_output()


def test_killed_server_leaves_valid_recordings_of_all_but_the_last_second(
    tmp_path: Path,
) -> None:
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off"})
    audio = call_audio(6)
    call_sid = new_sid("CA")
    sent = {}

    def stream() -> None:
        sent["report"] = play_stream(
            relay.stream_target(), audio, call_sid=call_sid, options=StreamOptions(speed=1)
        )

    streamer = threading.Thread(target=stream)
    streamer.start()
    wait_until_recorded(relay, call_sid, 3.0)
    worker = int(
        Path(f"/proc/{relay.process.pid}/task/{relay.process.pid}/children").read_text().split()[0]
    )
    killed_at = time.monotonic()
    for pid in (worker, relay.process.pid):
        os.kill(pid, signal.SIGKILL)
    relay.process.wait(10)
    streamer.join(10)
    streamed_seconds = killed_at - sent["report"].started_at
    for name in ("caller.wav", "receiver.wav"):
        samples, rate = read_wav(relay.captures / call_sid / name)  # a valid WAV, as it is
        assert rate == 16000
        assert len(samples) / rate >= streamed_seconds - 1.0, (
            len(samples) / rate,
            streamed_seconds,
        )
