"""REDACT=pci end to end, over real sockets with the bundled Whisper: a caller reads a card
number in four groups with pauses, then its expiry, and keys in a PIN. No digit of the card,
its expiry or the PIN reaches a Socket.IO client, transcript.jsonl, the history's search, the
exports, a webhook receiver or the log; and with REDACT=off the same call comes out as said."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from callrelay.audio import MULAW_SILENCE, mulaw_decode
from callrelay.simulator.audio_source import load_telephone_audio
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid
from callrelay.simulator.observer import RelayObserver
from callrelay.speech import Speech
from callrelay.twilio.media_stream import Track
from callrelay.web.call_routing import owner
from tests.helpers import RedisServer, start_relay, stream_call, wait_for
from tests.receiver import WebhookReceiver, new_secret

CARD = "4539148803436467"
SAID = [
    "My card number is four five three nine",
    "one four eight eight",
    "zero three four three",
    "six four six seven.",
    "Thank you very much.",
]
PIN = "2580"


@pytest.fixture(scope="module")
def card_call(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The caller, spoken by eSpeak NG with a pause of 1.5 s after each group, as a phone line
    carries it; the receiver silent."""
    speech = Speech()
    pieces = []
    for text in SAID:
        samples, rate = speech.say(text)
        pieces += [samples, np.zeros(int(1.5 * rate), np.int16)]
    path = tmp_path_factory.mktemp("card") / "caller.wav"
    soundfile.write(path, np.concatenate(pieces), rate)
    caller = load_telephone_audio(path)
    return {"inbound": caller, "outbound": bytes([MULAW_SILENCE]) * len(caller)}


def run_call(
    relay: RunningRelay, audio: dict[str, bytes], call_sid: str | None = None
) -> tuple[str, list[str]]:
    """Stream the call in real time with the PIN keyed in; the Caller texts a client got."""
    call_sid = call_sid or new_sid("CA")
    observer = relay.observer(call_sid=call_sid, audio=False)
    try:
        dtmf = [(digit, 1.0 + 0.2 * i) for i, digit in enumerate(PIN)]
        stream_call(relay, audio, StreamOptions(speed=1, dtmf=dtmf), call_sid)  # type: ignore[arg-type]
        assert observer.completed.wait(120)
    finally:
        observer.close()
    texts = [data["text"] for name, data in observer.events if name == "Caller"]
    keys = [data["digit"] for name, data in observer.events if name == "dtmf"]
    return call_sid, [*texts, "".join(keys)]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def digits_of(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def leaks(text: str) -> bool:
    """Whether any group of the card number or the PIN is in `text`, as digits or as words."""
    digits, lowered = digits_of(text), text.lower()
    for group in [CARD[i : i + 4] for i in range(0, 16, 4)] + [PIN]:
        if group in digits or " ".join(WORDS[int(d)] for d in group) in lowered:
            return True
    return False


def test_a_card_number_read_in_groups_reaches_nothing_unmasked(
    tmp_path: Path, card_call: dict[str, bytes]
) -> None:
    receiver = WebhookReceiver(new_secret())
    relay = start_relay(
        tmp_path,
        {
            "ASR_ENGINE": "whisper",
            "REDACT": "pci",
            "WEBHOOK_URL": receiver.url,
            "WEBHOOK_SECRET": receiver.secret,
        },
    )
    try:
        call_sid, heard = run_call(relay, card_call)
        *texts, keys = heard
        assert keys == "*" * len(PIN)
        said = " ".join(texts)
        assert "[card number]" in said, texts
        assert "thank you" in said.lower()  # the rest of what was said stays
        receiver.wait_for(
            lambda: any(p["type"] == "call.completed" for p in receiver.accepted(call_sid))
        )
        transcript = (relay.captures / call_sid / "transcript.jsonl").read_text()
        lines = [json.loads(line) for line in transcript.splitlines()]
        logged = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
        outputs = {
            "socket.io": said,
            "transcript.jsonl": " ".join(
                [line["text"] for line in lines]
                + [w["word"] for line in lines for w in line.get("words", [])]
            ),
            "webhooks": " ".join(p["data"].get("text", "") for p in receiver.accepted(call_sid)),
            "log": " ".join(line.get("text", "") for line in logged),
            "vtt": relay.get_with_token(f"/calls/{call_sid}/transcript?format=vtt").text,
            "txt": relay.get_with_token(f"/calls/{call_sid}/transcript?format=txt").text,
        }
        assert "[card number]" in outputs["webhooks"] and "[card number]" in outputs["vtt"]
        for name, text in outputs.items():
            assert not leaks(text), f"{name}: {text}"
        for group in ("4539", "1488", "0343", "6467", "four five three nine"):
            found = relay.get_with_token(f"/calls?q={group}").json()["calls"]
            assert found == [], group
        masked = [r for line in lines for r in line.get("redacted", [])]
        assert masked and {r["kind"] for r in masked} == {"card number"}
        assert all(0 < r["start"] < r["end"] for r in masked)
        recorded, rate = soundfile.read(relay.captures / call_sid / "caller.wav", dtype="int16")
        original = mulaw_decode(card_call["inbound"]).astype(np.float64)
        for span in masked:  # silence where the card was said, in what was kept only
            first, last = int(span["start"] * rate), int(span["end"] * rate)
            assert not recorded[first:last].any(), span
            assert rms(original[first // 2 : last // 2]) > 300  # the line carried speech there
        spoken = next(line for line in lines if "thank" in line["text"].lower())
        rest = recorded[int(spoken["start"] * rate) : int(spoken["end"] * rate)]
        assert rms(rest.astype(np.float64)) > 300  # the rest of the call is kept
    finally:
        stop_relay(relay)
        receiver.stop()


def test_with_two_processes_a_listener_on_the_other_process_gets_the_masked_call(
    tmp_path: Path, card_call: dict[str, bytes], redis_server: RedisServer
) -> None:
    """The call is redacted in its own process; a listener that names it (served there) and
    one that follows every call from the other process get only what it let out."""
    relay = start_relay(
        tmp_path,
        {
            "ASR_ENGINE": "whisper",
            "ASR_PROCESSES": "1",
            "REDACT": "pci",
            "REDIS_URL": redis_server.url,
            "WORKERS": "2",
            "LOG_LEVEL": "DEBUG",  # `client_connected` says where each client is
        },
    )
    try:
        wait_for(lambda: len(logged(relay, "worker_routing")) == 2, timeout=60)
        call_sid = new_sid("CA")
        [calls_process] = [
            line["pid"]
            for line in logged(relay, "worker_routing")
            if line["worker"] == owner(call_sid, 2)
        ]
        elsewhere = listener_not_in(relay, calls_process)
        try:
            _, heard = run_call(relay, card_call, call_sid)
            assert elsewhere.completed.wait(30)
        finally:
            elsewhere.close()
        *texts, keys = heard
        assert keys == "*" * len(PIN)
        assert "[card number]" in " ".join(texts), texts
        followed = [d["text"] for name, d in elsewhere.events if name == "Caller"]
        assert followed == texts
        assert [d["digit"] for name, d in elsewhere.events if name == "dtmf"] == ["*"] * 4
        kept = (relay.captures / call_sid / "transcript.jsonl").read_text().splitlines()
        assert not leaks(" ".join(json.loads(line)["text"] for line in kept))
    finally:
        stop_relay(relay)


def logged(relay: RunningRelay, evt: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    return [line for line in lines if line["evt"] == evt]


def listener_not_in(relay: RunningRelay, pid: int) -> RelayObserver:
    """A client following every call, served by a process other than `pid` (connections are
    spread over the processes by the kernel: a few tries find one)."""
    for _ in range(32):
        before = len(logged(relay, "client_connected"))
        observer = relay.observer(audio=False)
        wait_for(lambda: len(logged(relay, "client_connected")) > before)  # noqa: B023
        if logged(relay, "client_connected")[-1]["pid"] != pid:
            return observer
        observer.close()
    raise AssertionError("every connection reached the same process")


def test_with_redaction_off_the_same_call_comes_out_as_said(
    tmp_path: Path, card_call: dict[str, bytes]
) -> None:
    relay = start_relay(tmp_path, {"ASR_ENGINE": "whisper"})
    try:
        _, heard = run_call(relay, card_call)
        *texts, keys = heard
        assert keys == PIN
        assert "[card number]" not in " ".join(texts)
        assert leaks(" ".join(texts))  # the card's groups, as Whisper wrote them
    finally:
        stop_relay(relay)


def test_with_pii_a_name_said_reaches_no_client_and_no_file(tmp_path: Path) -> None:
    samples, rate = Speech().say("Hello, my name is Sarah Johnson.")
    path = tmp_path / "name.wav"
    soundfile.write(path, np.concatenate([samples, np.zeros(rate, np.int16)]), rate)
    caller = load_telephone_audio(path)
    audio: dict[Track, bytes] = {
        "inbound": caller,
        "outbound": bytes([MULAW_SILENCE]) * len(caller),
    }
    relay = start_relay(tmp_path / "relay", {"ASR_ENGINE": "whisper", "REDACT": "pii"})
    try:
        call_sid = new_sid("CA")
        observer = relay.observer(call_sid=call_sid, audio=False)
        stream_call(relay, audio, StreamOptions(speed=0), call_sid)
        assert observer.completed.wait(120)
        observer.close()
        texts = [d["text"] for n, d in observer.events if n in ("Caller", "partial")]
        assert any("[name]" in text for text in texts), texts
        kept = (relay.captures / call_sid / "transcript.jsonl").read_text()
        for text in [*texts, kept, relay.log_file.read_text()]:
            assert "Sarah" not in text and "Johnson" not in text
    finally:
        stop_relay(relay)
