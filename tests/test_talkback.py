"""Talk-back: audio a client plays into a talk-mode call reaches Twilio as the right mu-law, in
20 ms messages at real-time pace, followed by a mark whose echo is `played`; `clear` stops it;
a one-way call or an unknown one refuses `play` with a reason."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrelay.asr import load_engine
from callrelay.audio import mulaw_decode
from callrelay.config import load_settings
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamReport, TalkBackPlayer
from callrelay.simulator.observer import RelayObserver
from callrelay.talkback import (
    FRAME_BYTES,
    LEAD_SECONDS,
    ClipError,
    TalkBack,
    clip_from_pcm,
    clip_from_text,
    clip_from_wav,
)
from callrelay.twilio import outbound
from tests.helpers import (
    calling_settings,
    callrelay,
    simulated_twilio,
    start_relay,
    wait_for,
)


def tone(seconds: float, hz: float = 440.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)


def pcm_base64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<i2").tobytes()).decode()


# The clips and the pacing, without a server.


def test_pcm_becomes_8_khz_mu_law_in_whole_20_ms_frames() -> None:
    clip = clip_from_pcm(pcm_base64(tone(1.0)))
    assert len(clip) == 8000 and len(clip) % FRAME_BYTES == 0
    heard = mulaw_decode(clip).astype(np.float64)
    expected = tone(1.0, rate=8000).astype(np.float64)
    noise = heard[100:-100] - expected[100:-100]
    snr = 10 * np.log10(np.sum(expected[100:-100] ** 2) / np.sum(noise**2))
    assert snr > 30  # mu-law's own ~38 dB, less the resampler's edges


def test_a_wav_of_any_rate_and_channels_is_converted() -> None:
    stereo = np.stack([tone(0.5, rate=44100), tone(0.5, rate=44100)], axis=1)
    file = io.BytesIO()
    soundfile.write(file, stereo, 44100, format="WAV", subtype="PCM_16")
    clip = clip_from_wav(base64.b64encode(file.getvalue()).decode())
    assert len(clip) == 4000  # 0.5 s at 8 kHz


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: clip_from_pcm("not base64!"), "not valid base64"),
        (lambda: clip_from_pcm(base64.b64encode(b"abc").decode()), "whole 16-bit"),
        (lambda: clip_from_pcm(""), "base64 text"),
        (lambda: clip_from_pcm(pcm_base64(tone(121))), "at most 120 s"),
        (lambda: clip_from_wav(base64.b64encode(b"RIFF....junk").decode()), "not a readable"),
    ],
)
def test_audio_that_cannot_be_played_is_refused_with_a_reason(make: object, says: str) -> None:
    with pytest.raises(ClipError, match=says):
        make()  # type: ignore[operator]


class Sent:
    def __init__(self) -> None:
        self.messages: list[outbound.Outbound] = []
        self.played: list[tuple[str, bool]] = []

    def send(self, text: str) -> None:
        self.messages.append(outbound.parse_outbound(text))  # each as Twilio would check it

    def events(self) -> list[str]:
        return [m.event for m in self.messages]


def new_talkback() -> tuple[TalkBack, Sent]:
    sent = Sent()
    return TalkBack("MZ1", sent.send, lambda n, i: sent.played.append((n, i))), sent


def test_clips_go_out_paced_a_little_ahead_of_playback_then_their_mark() -> None:
    talkback, sent = new_talkback()
    talkback.play(b"\x01" * 8000, "first")  # 1 s
    talkback.play(b"\x02" * 1600, "second")  # 0.2 s
    wait = talkback.pump(now=100.0)
    ahead = len(sent.messages)
    assert ahead == round(LEAD_SECONDS / 0.02) and wait is not None and 0 < wait <= 0.02
    now = 100.0
    while (wait := talkback.pump(now)) is not None:
        now += wait
        in_flight = sum(len(m.payload) for m in sent.messages) / 8000 - (now - 100.0)
        assert in_flight <= LEAD_SECONDS + 0.02  # never more than the lead ahead
    assert all(len(m.payload) == FRAME_BYTES for m in sent.messages if m.event == "media")
    assert sent.events().count("media") == 60
    assert [m.name for m in sent.messages if m.event == "mark"] == ["clip-1", "clip-2"]
    assert sent.events()[50] == "mark"  # right after the first clip's 50 frames
    audio = b"".join(m.payload for m in sent.messages)
    assert audio == b"\x01" * 8000 + b"\x02" * 1600
    talkback.mark_echoed("clip-2")
    talkback.mark_echoed("clip-1")
    assert sent.played == [("second", False), ("first", False)]


def test_clear_drops_what_is_queued_and_reports_what_was_cut_off() -> None:
    talkback, sent = new_talkback()
    talkback.play(b"\x01" * 800, "short")  # 0.1 s: sent whole at once, with its mark
    talkback.play(b"\x02" * 8000, "long")
    talkback.play(b"\x03" * 8000, "later")
    talkback.pump(now=0.0)
    assert talkback.clear() == ["long", "later"]
    assert sent.events()[-1] == "clear" and not talkback.busy
    assert sent.played == [("long", True), ("later", True)]
    talkback.mark_echoed("clip-1")  # Twilio echoes the marks it held, after a clear
    assert sent.played[-1] == ("short", True)
    assert talkback.pump(now=1.0) is None


def test_when_the_stream_ends_every_clip_not_heard_is_reported_cut_off() -> None:
    talkback, sent = new_talkback()
    talkback.play(b"\x01" * 800, "sent")  # sent whole with its mark, not yet echoed
    talkback.play(b"\x02" * 8000, "queued")
    talkback.pump(now=0.0)
    talkback.ended()
    assert sent.played == [("queued", True), ("sent", True)]
    talkback.mark_echoed("clip-1")  # too late: nothing is reported twice
    assert len(sent.played) == 2 and not talkback.busy


# Talk-mode calls through the relay and the Twilio simulator.


@pytest.fixture(scope="module")
def live_twilio() -> Iterator[FakeTwilio]:
    """Calls that last 10 s in real time, so there is time to talk into them."""
    fake = simulated_twilio(seconds=10, speed=1)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def talk_relay(
    tmp_path_factory: pytest.TempPathFactory, live_twilio: FakeTwilio
) -> Iterator[RunningRelay]:
    running = start_relay(
        tmp_path_factory.mktemp("talk"), {"ASR_ENGINE": "off", **calling_settings(live_twilio)}
    )
    yield running
    stop_relay(running)


def started_call(relay: RunningRelay, fake: FakeTwilio, mode: str) -> tuple[str, RelayObserver]:
    observer = relay.observer()
    answer = relay.post("/make-call", json={"to": "+14155550190", "mode": mode})
    assert answer.status_code == 200, answer.text
    call_sid = answer.json()["callSid"]
    wait_for(lambda: any(n == "call_started" for n, _ in observer.events))
    return call_sid, observer


def played(observer: RelayObserver) -> list[dict[str, object]]:
    return [d for n, d in observer.events if n == "played"]


def test_a_clip_played_into_a_talk_call_reaches_twilio_exactly_and_comes_back_played(
    talk_relay: RunningRelay, live_twilio: FakeTwilio
) -> None:
    call_sid, observer = started_call(talk_relay, live_twilio, "talk")
    try:
        clip = tone(0.6, hz=300)
        ack = observer.ask("play", {"callSid": call_sid, "audio": pcm_base64(clip), "name": "hi"})
        assert ack == {
            "ok": True,
            "callSid": call_sid,
            "name": "hi",
            "seconds": 0.6,
            "aheadSeconds": 0.0,
        }
        wait_for(
            lambda: played(observer) == [{"callSid": call_sid, "name": "hi", "interrupted": False}]
        )
        talk_relay.post(f"/calls/{call_sid}/hangup")
        call = live_twilio.wait_for_call(call_sid)
        assert call.done.wait(15)
    finally:
        observer.close()
    assert call.script is not None and call.script.stream is not None
    assert call.script.stream.bidirectional and call.script.stream.tracks == ("inbound",)
    report = call.report
    assert report is not None and report.warnings == [] and report.talkback is not None
    assert bytes(report.talkback.audio) == clip_from_pcm(pcm_base64(clip))
    assert set(report.talkback.payload_sizes) == {160}
    assert report.talkback.marks_echoed == ["clip-1"]


def test_clear_stops_a_clip_and_says_it_was_cut_off(
    talk_relay: RunningRelay, live_twilio: FakeTwilio
) -> None:
    call_sid, observer = started_call(talk_relay, live_twilio, "talk")
    try:
        long = pcm_base64(tone(5.0))
        assert observer.ask("play", {"callSid": call_sid, "audio": long, "name": "long"})["ok"]
        assert observer.ask("play", {"callSid": call_sid, "audio": long, "name": "next"})["ok"]
        wait_for(lambda: (talk_relay.captures / call_sid / "caller.wav").exists())
        cleared = observer.ask("clear", {"callSid": call_sid})
        assert cleared == {"ok": True, "callSid": call_sid, "dropped": ["long", "next"]}
        wait_for(lambda: len(played(observer)) == 2)
        assert {(d["name"], d["interrupted"]) for d in played(observer)} == {
            ("long", True),
            ("next", True),
        }
        talk_relay.post(f"/calls/{call_sid}/hangup")
        call = live_twilio.wait_for_call(call_sid)
        assert call.done.wait(15)
    finally:
        observer.close()
    heard = call.report.talkback  # type: ignore[union-attr]
    assert heard is not None and heard.clears == 1
    assert len(heard.audio) < 5 * 8000  # cut off well before its end
    logged = [json.loads(line) for line in talk_relay.log_file.read_text().splitlines()]
    assert any(line["evt"] == "talkback_cleared" for line in logged)


def test_play_on_a_one_way_call_or_an_unknown_one_is_refused(
    talk_relay: RunningRelay, live_twilio: FakeTwilio
) -> None:
    call_sid, observer = started_call(talk_relay, live_twilio, "listen")
    try:
        audio = pcm_base64(tone(0.2))
        ack = observer.ask("play", {"callSid": call_sid, "audio": audio})
        assert ack["ok"] is False and "one-way" in ack["error"]
        unknown = observer.ask("play", {"callSid": "CA" + "0" * 32, "audio": audio})
        assert unknown["ok"] is False and "no live talk-back call" in unknown["error"]
        errors = [d for n, d in observer.events if n == "error"]
        assert [e["event"] for e in errors] == ["play", "play"]
        talk_relay.post(f"/calls/{call_sid}/hangup")
        call = live_twilio.wait_for_call(call_sid)
        assert call.done.wait(15)
    finally:
        observer.close()
    assert call.report is not None and call.report.warnings == []  # nothing sent on <Start>


def test_a_talk_call_cannot_also_bridge(talk_relay: RunningRelay) -> None:
    answer = talk_relay.post(
        "/make-call", json={"to": "+14155550190", "mode": "talk", "bridgeTo": "+14155550191"}
    )
    assert answer.status_code == 400 and "cannot bridge" in answer.json()["error"]
    assert (
        talk_relay.post("/make-call", json={"to": "+14155550190", "mode": "x"}).status_code == 400
    )


def test_the_twilio_simulator_checks_what_it_is_sent_and_echoes_marks_as_it_plays() -> None:
    report = StreamReport(call_sid="CA1", stream_sid="MZ1")
    player = TalkBackPlayer("MZ1", report)
    assert player.receive(outbound.outbound_media("MZ1", b"\x01" * 320)) == []
    assert player.receive(outbound.outbound_mark("MZ1", "a")) == []  # 40 ms not yet played
    assert player.advance() == [] and player.advance() == ["a"]
    assert player.receive(outbound.outbound_mark("MZ1", "b")) == ["b"]  # nothing buffered: at once
    player.receive(outbound.outbound_media("MZ1", b"\x02" * 1600))
    player.receive(outbound.outbound_mark("MZ1", "c"))
    assert player.receive(outbound.outbound_clear("MZ1")) == ["c"]  # cleared: echoed at once
    assert report.talkback is not None and report.talkback.dropped_by_clear == 1600
    for bad in (
        b"binary",
        '{"event": "media", "streamSid": "MZ1", "media": {"payload": "AA==", "track": "x"}}',
        '{"event": "media", "streamSid": "MZ2", "media": {"payload": "AA=="}}',
        '{"event": "play", "streamSid": "MZ1"}',
        '{"event": "mark", "streamSid": "MZ1", "mark": {}}',
    ):
        assert player.receive(bad) == []
    codes = [warning.split()[0] for warning in report.warnings]
    assert codes == ["31950", "31951", "31951", "31951", "31951"]


def test_typed_text_is_spoken_offline_and_whisper_hears_it() -> None:
    clip = clip_from_text("Your order has shipped and will arrive on Friday.")
    assert len(clip) % FRAME_BYTES == 0 and 1.5 < len(clip) / 8000 < 6
    engine = load_engine(load_settings(asr_engine="whisper"))
    assert engine is not None
    recogniser = engine.new_recogniser()
    heard = np.repeat(mulaw_decode(clip), 2)  # 8 kHz -> 16 kHz is enough for this check
    results = recogniser.accept(np.concatenate([heard, np.zeros(16000, np.int16)])).result()
    results += recogniser.finish().result()
    text = " ".join(r.text for r in results).lower()
    assert "order" in text and "friday" in text, text
    with pytest.raises(ClipError, match="nothing to say"):
        clip_from_text("   ")


def test_inbound_calls_talk_when_voice_mode_says_so(tmp_path: Path) -> None:
    relay = start_relay(tmp_path / "relay", {"ASR_ENGINE": "off", "VOICE_MODE": "talk"})
    try:
        result = callrelay(
            "simulate",
            "call",
            "--server",
            relay.url,
            "--token",
            relay.api_token,
            "--speed",
            "0",
            "--json",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        summary = next(line["data"] for line in lines if line["event"] == "summary")
        assert summary["framesSent"] == {"inbound": 1512}  # <Connect>: the caller's side only
        assert summary["talkBack"] == {"seconds": 0.0, "marksEchoed": [], "clears": 0}
        assert summary["warnings"] == []
    finally:
        stop_relay(relay)
