"""Pause and resume (PCI): while a call is paused its recordings get silence (the tracks stay
aligned), listeners get no audio, nothing is transcribed, and the history, clients and
webhooks mark the pause; from any process; and, with PAUSE_ON_DTMF, while keys are pressed."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import requests
import soundfile

from callrelay.audio import mulaw_encode
from callrelay.pauses import CallPauses, PauseListener
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid
from tests.helpers import RedisServer, start_relay, stream_call, wait_for, wait_until_recorded
from tests.receiver import WebhookReceiver, new_secret


class Heard(PauseListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def call_paused(self, call_sid: str, reason: str, at: float) -> None:
        self.events.append(("paused", call_sid, reason))

    def call_resumed(self, call_sid: str, reason: str, at: float) -> None:
        self.events.append(("resumed", call_sid, reason))


def test_a_call_is_paused_and_resumed_once_each_and_listeners_hear_of_it() -> None:
    heard = Heard()
    pauses = CallPauses([heard])
    assert pauses.pause("CA1") and not pauses.pause("CA1")
    assert pauses.is_paused("CA1") and not pauses.is_paused("CA2")
    assert pauses.resume("CA1") and not pauses.resume("CA1")
    assert heard.events == [("paused", "CA1", "api"), ("resumed", "CA1", "api")]


def test_keys_pause_a_call_until_they_have_stopped_for_a_while() -> None:
    now = [0.0]
    heard = Heard()
    pauses = CallPauses([heard], on_dtmf=True, dtmf_resume_seconds=4, clock=lambda: now[0])
    pauses.keyed("CA1")
    now[0] = 3.0
    pauses.keyed("CA1")  # a second key keeps it paused
    now[0] = 6.5
    assert pauses.is_paused("CA1")
    now[0] = 7.0
    assert not pauses.is_paused("CA1")
    assert heard.events == [("paused", "CA1", "dtmf"), ("resumed", "CA1", "dtmf")]
    assert not CallPauses(on_dtmf=False).is_paused("CA1")


# Over the relay, with a call that is never silent, so a pause is plain in its recordings.


def tone_call(seconds: float) -> dict[str, bytes]:
    t = np.arange(int(8000 * seconds)) / 8000
    tone = (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return {"inbound": mulaw_encode(tone), "outbound": mulaw_encode(tone)}


def silent_runs(samples: np.ndarray, shortest: int = 1600) -> list[tuple[int, int]]:
    """Runs of exact silence longer than `shortest` samples (0.1 s at 16 kHz)."""
    silent = np.concatenate([[False], samples == 0, [False]])
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    return [
        (int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= shortest
    ]


def in_background(
    relay: RunningRelay, seconds: float, call_sid: str, **options: Any
) -> threading.Thread:
    player = threading.Thread(
        target=stream_call,
        args=(relay, tone_call(seconds), StreamOptions(speed=1, **options), call_sid),
    )
    player.start()
    return player


def test_a_paused_stretch_is_silence_in_the_recordings_and_no_audio_to_listeners(
    tmp_path: Path,
) -> None:
    receiver = WebhookReceiver(new_secret())
    relay = start_relay(
        tmp_path,
        {"ASR_ENGINE": "off", "WEBHOOK_URL": receiver.url, "WEBHOOK_SECRET": receiver.secret},
    )
    call_sid = new_sid("CA")
    observer = relay.observer(call_sid=call_sid, keep_audio=True)
    try:
        player = in_background(relay, 5, call_sid)
        wait_until_recorded(relay, call_sid, 1.0)
        paused = relay.post(f"/calls/{call_sid}/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True
        wait_until_recorded(relay, call_sid, 2.5)
        assert relay.post(f"/calls/{call_sid}/resume").status_code == 200
        player.join(30)
        assert observer.completed.wait(30)
    finally:
        observer.close()
    try:
        assert [n for n, _ in observer.events if n in ("call_paused", "call_resumed")] == [
            "call_paused",
            "call_resumed",
        ]
        runs = {}
        for name in ("caller.wav", "receiver.wav"):
            samples, _ = soundfile.read(relay.captures / call_sid / name, dtype="int16")
            runs[name] = [r for r in silent_runs(samples) if r[0] > 1000]
            assert len(runs[name]) == 1, runs[name]  # one silent stretch: the pause
            first, last = runs[name][0]
            assert 16000 <= first <= 32000 and 0.8 <= (last - first) / 16000 <= 2.5
        assert runs["caller.wav"] == runs["receiver.wav"]  # aligned
        times = sorted(data["timestamp"] for name, data in observer.audio if name == "media_in")
        gaps = np.diff(times)
        assert gaps.max() >= 800  # ms: no audio to listeners while paused
        call = relay.get_with_token(f"/calls/{call_sid}").json()
        [pause] = call["pauses"]
        assert pause["reason"] == "api" and 0.8 <= pause["end"] - pause["start"] <= 3.0
        receiver.wait_for(lambda: len(receiver.accepted(call_sid)) >= 5)
        kinds = [p["type"] for p in receiver.accepted(call_sid)]
        assert (
            kinds.index("call.paused") < kinds.index("call.resumed") < kinds.index("call.completed")
        )
        assert relay.post(f"/calls/{call_sid}/pause").status_code == 404  # no longer live
        refused = requests.post(relay.url + f"/calls/{call_sid}/pause", timeout=5)
        assert refused.status_code == 401
    finally:
        stop_relay(relay)
        receiver.stop()


def test_keypad_digits_pause_the_call_with_pause_on_dtmf(tmp_path: Path) -> None:
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off", "PAUSE_ON_DTMF": "true"})
    call_sid = new_sid("CA")
    observer = relay.observer(call_sid=call_sid, audio=False)
    try:
        player = in_background(relay, 7, call_sid, dtmf=[("1", 1.0), ("2", 1.5)])
        player.join(30)
        assert observer.completed.wait(30)
    finally:
        observer.close()
        stop_relay(relay)
    reasons = [(n, d["reason"]) for n, d in observer.events if n in ("call_paused", "call_resumed")]
    assert reasons == [("call_paused", "dtmf"), ("call_resumed", "dtmf")]
    samples, _ = soundfile.read(relay.captures / call_sid / "caller.wav", dtype="int16")
    [(first, last)] = [r for r in silent_runs(samples) if r[0] > 1000]
    assert 0.9 <= first / 16000 <= 1.3 and 4.0 <= (last - first) / 16000 <= 5.0


def test_a_call_is_paused_from_a_process_that_does_not_hold_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, b = (
        start_relay(tmp_path / name, {"ASR_ENGINE": "off", "REDIS_URL": redis_server.url})
        for name in ("a", "b")
    )
    call_sid = new_sid("CA")
    observer = a.observer(call_sid=call_sid, audio=False)
    try:
        player = in_background(a, 4, call_sid)
        wait_until_recorded(a, call_sid, 0.5)
        wait_for(lambda: call_sid in b.get("/").json()["calls"])
        forwarded = b.post(f"/calls/{call_sid}/pause")
        assert forwarded.status_code == 202 and forwarded.json()["forwarded"] is True
        wait_for(lambda: any(n == "call_paused" for n, _ in observer.events))
        player.join(30)
    finally:
        observer.close()
        stop_relay(a)
        stop_relay(b)
    logged = [json.loads(line) for line in a.log_file.read_text().splitlines()]
    assert any(line["evt"] == "call_paused" and line["callSid"] == call_sid for line in logged)
