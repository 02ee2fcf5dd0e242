"""Several relay processes behind one Redis: any process takes any stream, any listener hears
any call, and Redis going away costs only what crosses between processes."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, StreamReport, new_sid, play_stream
from callrelay.talkback import TALK_PARAMETER, clip_from_pcm
from callrelay.tracks import MEDIA_EVENTS
from tests.helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TWILIO_NUMBER,
    RedisServer,
    call_audio,
    decode,
    expected_pcm,
    start_relay,
    stream_call,
    wait_for,
)


@pytest.fixture
def two_relays(tmp_path: Path, redis_server: RedisServer) -> Iterator[list[RunningRelay]]:
    relays = [
        start_relay(tmp_path / name, {"ASR_ENGINE": "off", "REDIS_URL": redis_server.url})
        for name in ("a", "b")
    ]
    yield relays
    for relay in relays:
        stop_relay(relay)


def logged(relay: RunningRelay, evt: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    return [line for line in lines if line["evt"] == evt]


def in_background(play: object) -> tuple[threading.Thread, dict[str, StreamReport]]:
    result: dict[str, StreamReport] = {}

    def run() -> None:
        result["report"] = play()  # type: ignore[operator]

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_a_call_on_one_process_reaches_a_listener_on_another_bit_exact(
    two_relays: list[RunningRelay],
) -> None:
    a, b = two_relays
    audio = call_audio(3)
    call_sid = new_sid("CA")
    listener = b.observer(call_sid=call_sid, keep_audio=True)
    try:
        streamer, result = in_background(
            lambda: stream_call(a, audio, StreamOptions(speed=1), call_sid)
        )
        wait_for(lambda: call_sid in b.get("/").json()["calls"])  # B lists A's call
        health = b.get("/").json()
        assert health["activeCalls"] == 1 and health["process"]["activeCalls"] == 0
        streamer.join(30)
        assert listener.ended.wait(10)
    finally:
        listener.close()
    assert result["report"].frames_sent == {"inbound": 150, "outbound": 150}
    for track, event in MEDIA_EVENTS.items():
        received = [data for name, data in listener.audio if name == event]
        assert [d["timestamp"] for d in received] == [5 + 20 * i for i in range(150)]
        pcm = np.concatenate([decode(d) for d in received])
        assert np.array_equal(pcm, expected_pcm(audio[track]))
    wait_for(lambda: b.get("/").json()["activeCalls"] == 0)


def test_placing_calls_is_rate_limited_across_processes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    relays = [
        start_relay(
            tmp_path / name,
            {"ASR_ENGINE": "off", "REDIS_URL": redis_server.url, "MAKE_CALL_LIMIT": "3"},
        )
        for name in ("a", "b")
    ]
    try:
        statuses = [
            relays[i % 2].post("/make-call", json={"to": "+14155550123"}).status_code
            for i in range(5)
        ]
    finally:
        for relay in relays:
            stop_relay(relay)
    # Three calls a minute in all: past them, either process says 429 (503 is "not
    # configured": the call got past the limit).
    assert statuses == [503, 503, 503, 429, 429]


def test_redis_going_away_costs_only_what_crosses_between_processes(
    two_relays: list[RunningRelay], redis_server: RedisServer
) -> None:
    a, b = two_relays
    audio = call_audio(6)
    call_sid = new_sid("CA")
    own = a.observer(call_sid=call_sid)
    across = b.observer(call_sid=call_sid)
    try:
        streamer, result = in_background(
            lambda: stream_call(a, audio, StreamOptions(speed=1), call_sid)
        )
        wait_for(lambda: across.counts["media_in"] > 25)  # flowing across
        redis_server.kill()
        streamer.join(30)
        assert own.ended.wait(10)
    finally:
        own.close()
    # A's own listener heard the whole call; B's missed what crossed while Redis was gone.
    assert result["report"].server_closed is None
    assert own.counts["media_in"] == own.counts["media_out"] == 300
    assert across.counts["media_in"] < 300
    assert len(logged(a, "message_queue_down")) == 1
    recordings = a.captures / call_sid
    # Nothing lost on disk: 5 ms of silence before the first frame, then every frame.
    assert (recordings / "caller.wav").stat().st_size == 44 + 2 * (80 + 300 * 320)
    # Redis returns: events flow across again.
    redis_server.start()
    second = new_sid("CA")
    later = b.observer(call_sid=second)
    try:
        deadline_call = call_audio(1)

        def across_again() -> bool:
            stream_call(a, deadline_call, StreamOptions(speed=0), second)
            return later.counts["media_in"] > 0

        wait_for(across_again, timeout=90)  # B's listener resubscribes with back-off
    finally:
        later.close()
        across.close()
    assert len(logged(a, "message_queue_up")) == 1


def test_two_workers_on_one_port_share_the_calls_and_deliver_every_frame(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    relay = start_relay(
        tmp_path, {"ASR_ENGINE": "off", "REDIS_URL": redis_server.url, "WORKERS": "2"}
    )
    try:
        pids = {
            requests.get(relay.url + "/", timeout=5).json()["process"]["pid"] for _ in range(40)
        }
        assert len(pids) == 2, "connections should reach both processes"
        calls = [new_sid("CA") for _ in range(8)]
        listeners = [relay.observer(call_sid=call_sid) for call_sid in calls]
        try:
            players = [
                in_background(
                    lambda call_sid=call_sid: stream_call(
                        relay, call_audio(2), StreamOptions(speed=1), call_sid
                    )
                )
                for call_sid in calls
            ]
            wait_for(lambda: relay.get("/").json()["activeCalls"] == 8)
            for thread, _ in players:
                thread.join(30)
            for listener in listeners:
                assert listener.ended.wait(10)
        finally:
            for listener in listeners:
                listener.close()
        for listener in listeners:
            assert listener.counts["media_in"] == listener.counts["media_out"] == 100

        def metrics() -> dict[str, float]:
            text = relay.get_with_token("/metrics").text
            return {
                f"{sample.name}{sorted(sample.labels.items())}": sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }

        # Both processes' counters, added up by whichever answers (each writes them each second).
        received = "callrelay_frames_received_total[('track', 'inbound')]"
        wait_for(lambda: metrics().get(received) == 8 * 100)
        polling = requests.get(relay.url + "/socket.io/?EIO=4&transport=polling", timeout=5)
        assert polling.status_code == 400  # long-polling must name its call (test_call_routing)
    finally:
        stop_relay(relay)


def test_a_call_resumed_on_another_process_carries_on_its_timeline(
    two_relays: list[RunningRelay],
) -> None:
    a, b = two_relays
    call_sid = new_sid("CA")
    listener = b.observer(call_sid=call_sid)
    try:
        stream_call(a, call_audio(2), StreamOptions(speed=0), call_sid)  # the first stream, on A
        wait_for(lambda: listener.counts["call_ended"] == 1)
        stream_call(b, call_audio(1), StreamOptions(speed=0), call_sid)  # Twilio streams again
        wait_for(lambda: listener.counts["call_ended"] == 2)
    finally:
        listener.close()
    first, second = [data for name, data in listener.events if name == "call_started"]
    assert first["offsetMs"] == 0 and not first["resumed"]
    assert second["resumed"] and second["offsetMs"] >= 2000  # after what the call already has


def test_hanging_up_from_one_process_ends_a_call_placed_through_another(
    tmp_path: Path,
    redis_server: RedisServer,
    fake_twilio: FakeTwilio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fake_twilio, "stream_options", StreamOptions(speed=1))
    calling = {
        "ASR_ENGINE": "off",
        "REDIS_URL": redis_server.url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_NUMBER": TWILIO_NUMBER,
        "TWILIO_API_BASE": fake_twilio.base_url,
        "PUBLIC_URL": "http://127.0.0.1:{port}",
    }
    a, b = (start_relay(tmp_path / name, calling) for name in ("a", "b"))
    listener = b.observer()
    try:
        call_sid = a.post("/make-call", json={"to": "+14155550123"}).json()["callSid"]
        wait_for(lambda: call_sid in b.get("/").json()["calls"])  # streaming into A
        answer = b.post(f"/calls/{call_sid}/hangup")
        assert answer.status_code == 200 and answer.json()["status"] == "completed"
        wait_for(
            lambda: any(n == "call_ended" and d["callSid"] == call_sid for n, d in listener.events)
        )
        call = fake_twilio.wait_for_call(call_sid, timeout=10)
        assert call.report is not None and call.report.hung_up
        wait_for(lambda: call_sid not in b.get("/").json()["calls"])
    finally:
        listener.close()
        stop_relay(a)
        stop_relay(b)


def test_workers_can_share_one_recognition_process(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    relay = start_relay(
        tmp_path,
        {
            "ASR_ENGINE": "whisper",
            "REDIS_URL": redis_server.url,
            "WORKERS": "2",
            "ASR_PROCESSES": "1",
        },
    )
    try:
        recognisers: dict[int, int] = {}
        for _ in range(40):
            status = requests.get(relay.url + "/", timeout=5).json()
            recognisers[status["process"]["pid"]] = status["asr"]["process"]
        assert len(recognisers) == 2, "connections should reach both processes"
        assert len(set(recognisers.values())) == 1, "both use the one recognition process"
        assert not set(recognisers.values()) & set(recognisers)

        calls = [new_sid("CA") for _ in range(4)]
        players = [
            in_background(
                lambda call_sid=call_sid: stream_call(
                    relay, call_audio(10), StreamOptions(speed=2), call_sid
                )
            )
            for call_sid in calls
        ]
        for thread, _ in players:
            thread.join(60)
        wait_for(lambda: len(logged(relay, "transcription_ended")) == 4, timeout=60)
        for call_sid in calls:
            lines = (relay.captures / call_sid / "transcript.jsonl").read_text().splitlines()
            speakers = {json.loads(line)["speaker"] for line in lines}
            assert speakers == {"Caller", "Receiver"}, call_sid
    finally:
        stop_relay(relay)


def test_a_client_on_one_process_talks_into_a_call_held_by_another(
    two_relays: list[RunningRelay],
) -> None:
    holder, other = two_relays
    talk_sid, listen_sid = new_sid("CA"), new_sid("CA")
    client = other.observer(call_sid=talk_sid)
    talk, talked = in_background(
        lambda: play_stream(
            holder.stream_target(),
            {"inbound": call_audio(4)["inbound"]},
            call_sid=talk_sid,
            custom_parameters={TALK_PARAMETER: "1"},
            options=StreamOptions(speed=1),
            bidirectional=True,
        )
    )
    listen, _ = in_background(
        lambda: stream_call(holder, call_audio(4), StreamOptions(speed=1), listen_sid)
    )
    try:
        wait_for(lambda: {talk_sid, listen_sid} <= set(other.get("/").json()["calls"]))
        samples = (np.sin(np.arange(6400) / 16000 * 2 * np.pi * 300) * 9000).astype("<i2")
        audio = base64.b64encode(samples.tobytes()).decode()
        ack = client.ask("play", {"callSid": talk_sid, "audio": audio, "name": "hello"})
        assert ack["ok"] and ack["forwarded"] and ack["seconds"] == 0.4
        wait_for(
            lambda: (
                [d for n, d in client.events if n == "played"]
                == [{"callSid": talk_sid, "name": "hello", "interrupted": False}]
            )
        )
        # A one-way call on the other process: refused there, and the refusal comes back.
        assert client.ask("play", {"callSid": listen_sid, "audio": audio})["forwarded"]
        wait_for(lambda: any(n == "error" for n, _ in client.events))
        error = next(d for n, d in client.events if n == "error")
        assert error["callSid"] == listen_sid and "one-way" in error["error"]
        talk.join(30)
        listen.join(30)
    finally:
        client.close()
    heard = talked["report"].talkback
    assert heard is not None and bytes(heard.audio) == clip_from_pcm(audio)
    assert heard.marks_echoed == ["clip-1"] and talked["report"].warnings == []
