"""The limits on one `/stream` connection: a flood is paused (never cut), a silent one is closed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wsproto.events import CloseConnection

from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid, play_stream
from callrelay.twilio import media_stream as msg
from callrelay.web.stream import MessageThrottle
from tests.helpers import (
    RawClient,
    call_audio,
    closed_with,
    one_frame_then_stop,
    raw_call,
    read_wav,
    start_relay,
    wait_for,
)

RATE = 200
IDLE_SECONDS = 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_twilio_pace_is_never_paused() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(1000, clock)
    for _ in range(60 * 100):  # a minute of a two-track stream
        clock.now += 0.01
        assert throttle.take() == 0.0
    assert throttle.pauses == 0


def test_a_burst_of_one_seconds_worth_passes_then_the_sender_is_paused() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(1000, clock)
    pauses = []
    for _ in range(1100):
        pauses.append(throttle.take())
        clock.now += pauses[-1]
    assert sum(pauses[:1049]) == 0.0
    # The excess costs its time at the rate, paused in 50 ms steps: 100 messages = 0.1 s.
    assert [p for p in pauses if p] == pytest.approx([0.05, 0.05])
    assert throttle.pauses == 2


def test_pausing_holds_a_flood_to_the_rate_on_average() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(500, clock)
    for _ in range(5000):
        clock.now += throttle.take()
    # 5000 messages with 500 free at once: (5000 - 500) / 500 = 9 s, within one pause step.
    assert clock.now - 100.0 == pytest.approx(9.0, abs=0.06)


@pytest.fixture(scope="module")
def slow_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRelay]:
    running = start_relay(
        tmp_path_factory.mktemp("limits"),
        {
            "ASR_ENGINE": "off",
            "STREAM_MAX_MESSAGES_PER_SECOND": str(RATE),
            "STREAM_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS),
        },
    )
    yield running
    stop_relay(running)


def test_a_flooding_stream_is_slowed_to_the_cap_and_loses_nothing(
    slow_relay: RunningRelay,
) -> None:
    audio = call_audio(4)  # 200 frames a track: 402 messages with connected, start and stop
    started = time.monotonic()
    report = play_stream(slow_relay.stream_target(), audio, options=StreamOptions(speed=0))
    assert report.server_closed is None
    folder = slow_relay.captures / report.call_sid
    wait_for_log(slow_relay.log_file, "recording_finished", report.call_sid)
    took = time.monotonic() - started
    # The server reads the first RATE messages at once, then RATE a second.
    assert took >= (report.messages_sent - RATE) / RATE - 0.1
    for name in ("caller", "receiver"):
        pcm, _ = read_wav(folder / f"{name}.wav")
        assert len(pcm) == 16 * StreamOptions().first_timestamp_ms + 2 * 8000 * 4
    lines = log_lines(slow_relay.log_file, report.call_sid)
    throttled = [line for line in lines if line["evt"] == "stream_throttled"]
    assert len(throttled) == 1
    assert throttled[0]["maxMessagesPerSecond"] == RATE


def log_lines(log_file: Path, call_sid: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    return [line for line in lines if line.get("callSid") == call_sid]


def wait_for_log(log_file: Path, evt: str, call_sid: str, timeout: float = 20) -> None:
    wait_for(lambda: any(line["evt"] == evt for line in log_lines(log_file, call_sid)), timeout)


def test_a_stream_that_goes_silent_is_closed_and_its_call_ended(slow_relay: RunningRelay) -> None:
    call_sid, stream_sid = new_sid("CA"), new_sid("MZ")
    ws = raw_call(slow_relay, call_sid, stream_sid)
    for i, track in enumerate(("inbound", "outbound") * 10):
        ws.send(
            msg.media_message(
                stream_sid=stream_sid,
                track=track,  # type: ignore[arg-type]
                chunk=i // 2 + 1,
                timestamp_ms=20 * (i // 2),
                payload=b"\x10" * 160,
                sequence_number=i + 2,
            )
        )
    last_sent = time.monotonic()
    # Then nothing: no frame, no stop, and the socket stays open.
    assert closed_with(ws, timeout=IDLE_SECONDS + 10) == 1000
    assert ws.close_message == "idle timeout"
    assert time.monotonic() - last_sent >= IDLE_SECONDS - 0.1
    wait_for_log(slow_relay.log_file, "recording_finished", call_sid)
    lines = log_lines(slow_relay.log_file, call_sid)
    assert [x["reason"] for x in lines if x["evt"] == "call_ended"] == ["idle_timeout"]
    assert [x["seconds"] for x in lines if x["evt"] == "stream_idle"] == [IDLE_SECONDS]
    pcm, _ = read_wav(slow_relay.captures / call_sid / "receiver.wav")
    assert len(pcm) == 10 * 320
    assert slow_relay.get("/").json()["activeCalls"] == 0


def test_a_stream_past_max_calls_is_refused_and_the_calls_running_go_on(tmp_path: Path) -> None:
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off", "MAX_CALLS": "2"})
    try:
        calls = [(new_sid("CA"), new_sid("MZ")) for _ in range(2)]
        running = [raw_call(relay, call_sid, stream_sid) for call_sid, stream_sid in calls]
        wait_for(lambda: relay.get("/").json()["activeCalls"] == 2)
        with RawClient(relay) as one_too_many:
            closing = one_too_many.next_event()
        assert isinstance(closing, CloseConnection) and closing.code == 1013  # try again later
        assert closing.reason == "over capacity"
        refused = [
            line
            for line in (json.loads(text) for text in relay.log_file.read_text().splitlines())
            if line["evt"] == "stream_refused"
        ]
        assert [(r["reason"], r["maxCalls"]) for r in refused] == [("over_capacity", 2)]
        health = relay.get("/").json()
        assert health["maxCalls"] == 2 and health["activeCalls"] == 2
        # Twilio asking for TwiML for one more call is told, politely, that the lines are busy.
        twiml = relay.post("/voice", token="", data={"CallSid": new_sid("CA")}).text
        assert "<Say>" in twiml and "<Hangup />" in twiml and "<Stream" not in twiml
        for (call_sid, stream_sid), ws in zip(calls, running, strict=True):
            assert one_frame_then_stop(ws, call_sid, stream_sid) == 1000
        wait_for(lambda: len(log_lines(relay.log_file, calls[1][0])) >= 3)
        ended = [
            line
            for call_sid, _ in calls
            for line in log_lines(relay.log_file, call_sid)
            if line["evt"] == "call_ended"
        ]
        assert [(e["reason"], e["frames"]["inbound"]) for e in ended] == [("stop", 1)] * 2
        # With the two calls over, there is room again.
        assert relay.get("/").json()["activeCalls"] == 0
        assert "<Stream" in relay.post("/voice", token="", data={"CallSid": new_sid("CA")}).text
    finally:
        stop_relay(relay)
