"""Simulator -> real relay process -> real Socket.IO client, over loopback sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import numpy as np
import pytest

from callrelay.simulator.local_relay import RunningRelay
from callrelay.simulator.media_client import StreamOptions, StreamReport, new_sid
from callrelay.tracks import MEDIA_EVENTS
from callrelay.twilio import media_stream as msg
from tests.helpers import (
    SECONDS,
    call_audio,
    callrelay,
    closed_with,
    decode,
    expected_pcm,
    raw_call,
    raw_stream,
    read_wav,
    stream_call,
    wait_for,
)


def logged(relay: RunningRelay, evt: str, call_sid: str) -> bool:
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    return any(line["evt"] == evt and line.get("callSid") == call_sid for line in lines)


def test_a_call_arrives_at_socketio_clients_as_16khz_pcm_exactly(relay: RunningRelay) -> None:
    audio = call_audio()
    call_sid = new_sid("CA")
    observer = relay.observer(call_sid=call_sid, keep_audio=True)
    try:
        report = stream_call(relay, audio, StreamOptions(speed=0), call_sid)
        assert observer.ended.wait(10)
    finally:
        observer.close()
    frames_per_track = SECONDS * 50
    assert report.frames_sent == {"inbound": frames_per_track, "outbound": frames_per_track}
    assert observer.counts["media_in"] == observer.counts["media_out"] == frames_per_track
    names = [name for name, _ in observer.events if name != "call_completed"]  # it may follow
    assert names[0] == "call_started" and names[-1] == "call_ended"
    started = observer.events[0][1]
    assert started["callSid"] == call_sid and started["tracks"] == ["inbound", "outbound"]
    assert started["customParameters"] == {"campaign": "e2e"}
    for track, event in MEDIA_EVENTS.items():
        received = [data for name, data in observer.audio if name == event]
        assert [d["timestamp"] for d in received] == [5 + 20 * i for i in range(frames_per_track)]
        assert all(
            d["callSid"] == call_sid and d["streamSid"] == report.stream_sid for d in received
        )
        assert all(len(decode(d)) == 320 for d in received)
        pcm = np.concatenate([decode(d) for d in received])
        assert np.array_equal(pcm, expected_pcm(audio[track]))


def test_recordings_hold_both_sides_aligned_sample_for_sample(relay: RunningRelay) -> None:
    audio = call_audio()
    report = stream_call(relay, audio, StreamOptions(speed=0))
    folder = relay.captures / report.call_sid
    wait_for(lambda: logged(relay, "recording_finished", report.call_sid))
    caller, rate = read_wav(folder / "caller.wav")
    receiver, _ = read_wav(folder / "receiver.wav")
    assert rate == 16000 and len(caller) == len(receiver) == 80 + SECONDS * 16000
    # The first frame is stamped 5 ms: 80 samples of silence come first on both files.
    assert np.array_equal(
        caller, np.concatenate([np.zeros(80, np.int16), expected_pcm(audio["inbound"])])
    )
    assert np.array_equal(
        receiver, np.concatenate([np.zeros(80, np.int16), expected_pcm(audio["outbound"])])
    )


def test_dropped_frames_and_skipped_silence_keep_recordings_aligned(
    relay: RunningRelay,
) -> None:
    audio = call_audio()
    observer = relay.observer(keep_audio=True)
    try:
        report = stream_call(
            relay, audio, StreamOptions(speed=0, silence="skip", drop_rate=0.1, seed=4)
        )
        assert observer.ended.wait(10)
    finally:
        observer.close()
    assert report.frames_dropped > 0 and report.frames_skipped_silent > 0
    wait_for(lambda: logged(relay, "recording_finished", report.call_sid))
    caller, _ = read_wav(relay.captures / report.call_sid / "caller.wav")
    receiver, _ = read_wav(relay.captures / report.call_sid / "receiver.wav")
    assert len(caller) == len(receiver)
    wavs = {"media_in": caller, "media_out": receiver}
    received = [(name, data) for name, data in observer.audio if data["callSid"] == report.call_sid]
    assert len(received) == sum(report.frames_sent.values())
    for name, data in received:
        start = data["timestamp"] * 16
        # Every frame sits in its file exactly where its Twilio timestamp puts it.
        assert np.array_equal(wavs[name][start : start + 320], decode(data))


def test_dtmf_is_relayed(relay: RunningRelay) -> None:
    observer = relay.observer()
    try:
        stream_call(relay, call_audio(1), StreamOptions(speed=0, dtmf=(("4", 0.2), ("#", 0.5))))
        assert observer.ended.wait(10)
    finally:
        observer.close()
    assert [data["digit"] for name, data in observer.events if name == "dtmf"] == ["4", "#"]


def test_a_client_can_follow_one_call_only(relay: RunningRelay) -> None:
    followed, other = new_sid("CA"), new_sid("CA")
    picky = relay.observer(call_sid=followed)
    everything = relay.observer()
    try:
        stream_call(relay, call_audio(1), StreamOptions(speed=0), other)
        stream_call(relay, call_audio(1), StreamOptions(speed=0), followed)
        assert picky.ended.wait(10)
        wait_for(lambda: everything.counts["call_ended"] == 2)
    finally:
        picky.close()
        everything.close()
    assert {data["callSid"] for _, data in picky.events} == {followed}
    assert picky.counts["media_in"] == 50
    assert everything.counts["media_in"] == 100


def test_log_has_one_json_line_per_event_and_no_per_frame_lines(relay: RunningRelay) -> None:
    report = stream_call(relay, call_audio(1), StreamOptions(speed=0))
    wait_for(lambda: logged(relay, "call_completed", report.call_sid))
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    mine = [line for line in lines if line.get("callSid") == report.call_sid]
    assert [line["evt"] for line in mine] == [
        "call_started",
        "recording_started",
        "call_ended",
        "recording_finished",
        "call_completed",  # its analytics, once its recordings are final
    ]
    ended = mine[2]
    assert ended["reason"] == "stop" and ended["frames"] == {"inbound": 50, "outbound": 50}
    assert all(line["ts"].endswith("Z") for line in lines)


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        (["{not json"], 1007),
        ([b"\x00binary"], 1003),
        (
            [
                msg.media_message(
                    stream_sid="MZ1",
                    track="inbound",
                    chunk=1,
                    timestamp_ms=0,
                    payload=b"\xff",
                    sequence_number=1,
                )
            ],
            1002,
        ),
        (["x" * (70 * 1024)], 1009),
    ],
    ids=["malformed-json", "binary-frame", "media-before-start", "oversized"],
)
def test_bad_input_gets_a_clean_close_with_a_reason(relay: RunningRelay, messages, code) -> None:
    ws = raw_stream(relay)
    for message in messages:
        ws.send(message)
    assert closed_with(ws) == code
    assert relay.get("/").json()["status"] == "ok"

    def refusals() -> list[int]:
        lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
        return [line["closeCode"] for line in lines if line["evt"] == "stream_refused"]

    wait_for(lambda: code in refusals())  # each refusal is logged with its own code


def test_bad_streams_do_not_disturb_a_call_in_flight(relay: RunningRelay) -> None:
    audio = call_audio(3)
    result: dict[str, StreamReport] = {}
    good = threading.Thread(
        target=lambda: result.update(report=stream_call(relay, audio, StreamOptions(speed=5)))
    )
    observer = relay.observer(keep_audio=True)
    good.start()
    try:
        for i in range(30):
            ws = raw_stream(relay)
            ws.send(
                [
                    "{",
                    "[]",
                    msg.stop_message(
                        stream_sid="MZ", account_sid="AC", call_sid="CA", sequence_number=1
                    ),
                ][i % 3]
            )
            closed_with(ws)
        good.join(30)
        assert observer.ended.wait(10)
    finally:
        observer.close()
    report = result["report"]
    received = [d for n, d in observer.audio if n == "media_in" and d["callSid"] == report.call_sid]
    assert len(received) == 150
    assert np.array_equal(
        np.concatenate([decode(d) for d in received]), expected_pcm(audio["inbound"])
    )


def test_a_twilio_socket_that_vanishes_mid_call_finalises_the_call(relay: RunningRelay) -> None:
    observer = relay.observer()
    call_sid, stream_sid = new_sid("CA"), new_sid("MZ")
    ws = raw_call(relay, call_sid, stream_sid)
    for i in range(25):
        ws.send(
            msg.media_message(
                stream_sid=stream_sid,
                track="inbound",
                chunk=i + 1,
                timestamp_ms=20 * i,
                payload=b"\x10" * 160,
                sequence_number=i + 2,
            )
        )
    wait_for(lambda: relay.get("/").json()["activeCalls"] >= 1)
    ws.sock.shutdown(socket.SHUT_RDWR)  # gone: no stop, no close frame
    ws.sock.close()
    try:
        wait_for(
            lambda: any(
                name == "call_ended" and data["callSid"] == call_sid
                for name, data in observer.events
            )
        )
    finally:
        observer.close()
    ended = next(data for name, data in observer.events if name == "call_ended")
    assert ended["reason"] == "disconnected"
    wait_for(lambda: logged(relay, "recording_finished", call_sid))
    caller, _ = read_wav(relay.captures / call_sid / "caller.wav")
    receiver, _ = read_wav(relay.captures / call_sid / "receiver.wav")
    assert len(caller) == len(receiver) == 25 * 320
    assert relay.get("/").json()["activeCalls"] == 0


def test_simulator_command_plays_a_call_and_prints_what_it_sees(
    relay: RunningRelay, tmp_path
) -> None:

    import soundfile

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    soundfile.write(tmp_path / "tone.flac", tone, 16000)  # 1 s at 16 kHz: resampled to 8 kHz

    def simulate(*extra: str) -> str:
        result = callrelay(
            "simulate",
            "call",
            "--server",
            relay.url,
            "--speed",
            "0",
            "--caller",
            str(tmp_path / "tone.flac"),
            "--receiver",
            str(tmp_path / "tone.flac"),
            "--dtmf",
            "9@0.5",
            *extra,
            env={"TWILIO_AUTH_TOKEN": relay.auth_token or "", "RELAY_API_TOKEN": relay.api_token},
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    lines = simulate().splitlines()
    events = [line.split()[1] for line in lines if line.strip()[:1].isdigit()]
    assert events[0] == "call_started" and events[-2:] == ["call_ended", "call_completed"]
    assert "dtmf" in events
    assert any("dtmf" in line and "digit 9" in line for line in lines)
    assert all(len(line) < 160 for line in lines)  # one short line per event
    stripped = [line.strip() for line in lines]
    assert "frames sent      inbound 50, outbound 50" in stripped
    assert "frames relayed   inbound 50, outbound 50" in stripped

    printed = [json.loads(line) for line in simulate("--json").splitlines()]
    assert printed[0]["event"] == "call_started"
    summary = printed[-1]
    assert summary["event"] == "summary"
    assert (
        summary["data"]["framesSent"]
        == summary["data"]["framesRelayed"]
        == {
            "inbound": 50,
            "outbound": 50,
        }
    )
    assert {
        "event": "dtmf",
        "data": {
            "callSid": summary["data"]["callSid"],
            "streamSid": summary["data"]["streamSid"],
            "digit": "9",
        },
    } in printed


def test_a_client_can_leave_out_audio(relay: RunningRelay) -> None:
    quiet = relay.observer(audio=False)
    loud = relay.observer()
    try:
        stream_call(relay, call_audio(1), StreamOptions(speed=0))
        assert quiet.ended.wait(10) and loud.ended.wait(10)
    finally:
        quiet.close()
        loud.close()
    assert quiet.counts["media_in"] == quiet.counts["media_out"] == 0
    assert quiet.counts["call_started"] == quiet.counts["call_ended"] == 1
    assert loud.counts["media_in"] == 50


def test_bursty_delivery_still_arrives_complete_and_in_order(relay: RunningRelay) -> None:
    audio = call_audio(2)
    observer = relay.observer(keep_audio=True)
    try:
        report = stream_call(relay, audio, StreamOptions(speed=4, jitter_ms=80, seed=9))
        assert observer.ended.wait(10)
    finally:
        observer.close()
    received = [
        d for n, d in observer.audio if n == "media_out" and d["callSid"] == report.call_sid
    ]
    assert [d["timestamp"] for d in received] == [5 + 20 * i for i in range(100)]
    assert np.array_equal(
        np.concatenate([decode(d) for d in received]), expected_pcm(audio["outbound"])
    )


def test_a_client_that_never_reads_loses_old_audio_not_memory_nor_others_audio(
    relay: RunningRelay,
) -> None:
    import socket as sockets

    import websocket  # websocket-client, which python-socketio's client uses too

    stalled = websocket.create_connection(
        relay.ws_url.replace("/stream", "/socket.io/?EIO=4&transport=websocket"),
        sockopt=((sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096),),
    )
    opened = stalled.recv()
    assert isinstance(opened, str) and opened.startswith("0")  # engine.io open
    stalled.send(json.dumps({"token": relay.api_token}).join(["40", ""]))
    connected = stalled.recv()
    assert isinstance(connected, str) and connected.startswith("40")  # socket.io connected
    # from now on it reads nothing
    healthy = relay.observer(keep_audio=True)
    try:
        audio = call_audio(30)
        # ~9 MB of audio events: more than the kernel's socket buffers (4 MB at most here)
        # can hide, so the stalled client's queue in the server must grow, or be cut.
        reports = [stream_call(relay, audio, StreamOptions(speed=4)) for _ in range(3)]
        wait_for(lambda: healthy.counts["call_ended"] == 3, timeout=60)
        dropped = relay.get("/").json()["socketio"]["droppedAudio"]
    finally:
        healthy.close()
        stalled.close()
    assert dropped > 0
    for report in reports:  # the healthy client lost nothing
        mine = [d for n, d in healthy.audio if n == "media_in" and d["callSid"] == report.call_sid]
        assert len(mine) == 1500
    names = [json.loads(line)["evt"] for line in relay.log_file.read_text().splitlines()]
    assert "client_slow" in names


def test_a_new_stream_for_the_same_call_resumes_its_recordings_and_timeline(
    relay: RunningRelay,
) -> None:
    """Twilio opens a new stream (new StreamSid, timestamps from 0) when TwiML streams again."""
    first_audio, second_audio = call_audio(2), call_audio(1)
    call_sid = new_sid("CA")
    observer = relay.observer(call_sid=call_sid, keep_audio=True)
    try:
        stream_call(relay, first_audio, StreamOptions(speed=0), call_sid)
        wait_for(lambda: logged(relay, "recording_finished", call_sid))
        time.sleep(2.5)  # the call goes on without a stream for a while
        second = stream_call(relay, second_audio, StreamOptions(speed=0), call_sid)
        wait_for(lambda: observer.counts["call_ended"] == 2)
    finally:
        observer.close()
    starts = [data for name, data in observer.events if name == "call_started"]
    assert [s["resumed"] for s in starts] == [False, True]
    offset_ms = starts[1]["offsetMs"]
    assert 2500 <= offset_ms < 10_000  # when it started, counted from the call's first start
    resumed_frames = [d for name, d in observer.audio if d["streamSid"] == second.stream_sid]
    assert resumed_frames[0]["timestamp"] == offset_ms + 5
    recordings = sorted(p.name for p in (relay.captures / call_sid).glob("*.wav"))
    assert recordings == ["caller.wav", "receiver.wav"]  # carried on, not caller-2.wav
    wait_for(lambda: len(recording_finished(relay, call_sid)) == 2)
    caller, _ = read_wav(relay.captures / call_sid / "caller.wav")
    start = 16 * (offset_ms + 5)
    assert len(caller) == start + 16000
    assert np.array_equal(caller[80 : 80 + 32000], expected_pcm(first_audio["inbound"]))
    assert not caller[80 + 32000 : start].any()
    assert np.array_equal(caller[start:], expected_pcm(second_audio["inbound"]))


def recording_finished(relay: RunningRelay, call_sid: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    return [x for x in lines if x["evt"] == "recording_finished" and x["callSid"] == call_sid]


def test_a_client_can_take_its_audio_in_batches(relay: RunningRelay) -> None:
    audio = call_audio(2)
    call_sid = new_sid("CA")
    batched = relay.observer(call_sid=call_sid, keep_audio=True, audio_batch_ms=100)
    every_frame = relay.observer(call_sid=call_sid)
    try:
        stream_call(relay, audio, StreamOptions(speed=0), call_sid)
        assert batched.ended.wait(10) and every_frame.ended.wait(10)
    finally:
        batched.close()
        every_frame.close()
    assert every_frame.counts["media_in"] == every_frame.counts["media_out"] == 100
    for track, event in MEDIA_EVENTS.items():
        received = [data for name, data in batched.audio if name == event]
        assert [d["frames"] for d in received] == [5] * 20  # 100 ms an event
        assert [d["timestamp"] for d in received] == [5 + 100 * i for i in range(20)]
        pcm = np.concatenate([decode(d) for d in received])
        assert np.array_equal(pcm, expected_pcm(audio[track]))
