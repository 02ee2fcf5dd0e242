"""Live transcription end to end: simulator -> relay with the real Whisper model -> Socket.IO."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from callrelay.simulator.audio_source import load_telephone_audio
from callrelay.simulator.conversation import (
    Conversation,
    read_turns,
    word_error_rate,
)
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid, play_stream
from callrelay.simulator.observer import RelayObserver
from callrelay.twilio.media_stream import Track
from tests.helpers import (
    CALL_DIR,
    HUNG_SECONDS,
    callrelay,
    read_wav,
    real_speech_call,
    start_relay,
    wait_for,
    wait_until_recorded,
)

SPEAKER_EVENTS = {"caller": "Caller", "receiver": "Receiver"}


@pytest.fixture(scope="module")
def asr_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRelay]:
    running = start_relay(
        tmp_path_factory.mktemp("asr"),
        {"ASR_ENGINE": "whisper", "ASR_MAX_LAG_SECONDS": "300"},
    )
    yield running
    stop_relay(running)


def play(relay: RunningRelay, conversation: Conversation, speed: float = 0):
    call_sid = new_sid("CA")
    observer = relay.observer(call_sid=call_sid)
    try:
        report = play_stream(
            relay.stream_target(),
            {"inbound": conversation.caller, "outbound": conversation.receiver},
            call_sid=call_sid,
            options=StreamOptions(speed=speed),
        )
        assert observer.transcription_ended.wait(120), "transcripts did not finish"
    finally:
        observer.close()
    return report, observer


def finals(observer: RelayObserver, speaker: str) -> list[dict[str, Any]]:
    return [data for name, data in observer.events if name == SPEAKER_EVENTS[speaker]]


def side_wer(conversation: Conversation, observer: RelayObserver, speaker: str) -> float:
    reference = " ".join(t.text for t in conversation.turns if t.speaker == speaker)
    hypothesis = " ".join(d["text"] for d in finals(observer, speaker))
    wer = word_error_rate([reference], [hypothesis])
    return wer


def test_real_speech_on_both_sides_is_transcribed_under_the_right_names(
    asr_relay: RunningRelay,
) -> None:
    conversation = real_speech_call()
    _, observer = play(asr_relay, conversation)
    # tiny.en offline on these clips through the phone channel: 7% WER (one slip in ~110 words
    # is 1%); 15% leaves room for utterance cuts without letting a broken pipeline pass.
    for speaker in ("caller", "receiver"):
        assert finals(observer, speaker), f"no {speaker} transcripts"
        wer = side_wer(conversation, observer, speaker)
        assert wer <= 0.15, f"{speaker} WER {wer:.2%}"


def test_transcript_times_fall_inside_the_turns(asr_relay: RunningRelay) -> None:
    turns = read_turns(CALL_DIR / "turns.tsv")
    conversation = Conversation(
        load_telephone_audio(CALL_DIR / "caller.flac"),
        load_telephone_audio(CALL_DIR / "receiver.flac"),
        tuple(turns),
    )
    report, observer = play(asr_relay, conversation)
    for speaker in ("caller", "receiver"):
        events = finals(observer, speaker)
        assert len(events) >= 4
        own_turns = [t for t in turns if t.speaker == speaker]
        for event in events:
            assert event["callSid"] == report.call_sid and 0 <= event["confidence"] <= 1
            assert event["start"] < event["end"]
            assert any(
                t.start - 0.3 <= event["start"] and event["end"] <= t.end + 0.3 for t in own_turns
            ), f"{speaker} {event} is outside its turns"
    # The synthetic voice is hard for tiny.en even offline (30-45% WER on the caller side);
    # accuracy is the real-speech test's job, this bound only catches a broken pipeline.
    for speaker in ("caller", "receiver"):
        assert side_wer(conversation, observer, speaker) <= 0.65
    transcript_file = asr_relay.captures / report.call_sid / "transcript.jsonl"
    lines = [json.loads(line) for line in transcript_file.read_text().splitlines()]
    assert len(lines) == len(finals(observer, "caller")) + len(finals(observer, "receiver"))
    assert {line["speaker"] for line in lines} == {"Caller", "Receiver"}
    for line in lines:  # each word's times, on the call's timeline, inside its final's
        words = line["words"]
        assert [w["word"] for w in words] == line["text"].split()
        assert all(
            line["start"] - 0.5 <= w["start"] <= w["end"] <= line["end"] + 0.5 for w in words
        )
    logged = [json.loads(line) for line in asr_relay.log_file.read_text().splitlines()]
    mine = [
        line
        for line in logged
        if line["evt"] == "transcript" and line["callSid"] == report.call_sid
    ]
    assert sorted(line["text"] for line in mine) == sorted(line["text"] for line in lines)
    # Where each final's time went: its wait for a decoder and its decode.
    assert all(0 <= line["queueSeconds"] < 30 and 0 < line["decodeSeconds"] < 30 for line in mine)
    # The call's analytics come from the utterances the recogniser cut and the words it heard.
    wait_for(lambda: "analytics" in asr_relay.get_with_token(f"/calls/{report.call_sid}").json())
    figures = asr_relay.get_with_token(f"/calls/{report.call_sid}").json()["analytics"]
    for speaker, side in (("Caller", "caller"), ("Receiver", "receiver")):
        own = [line for line in lines if line["speaker"] == speaker]
        assert figures[side]["words"] == sum(len(line["text"].split()) for line in own)
        spoken = sum(line["end"] - line["start"] for line in own)
        assert figures[side]["talkSeconds"] == pytest.approx(spoken, abs=0.05 * len(own))
        assert figures[side]["turns"] >= 1


def test_the_simulator_waits_for_and_prints_every_final(asr_relay: RunningRelay) -> None:
    """At full speed the stream ends long before its transcripts: the CLI must wait for them."""
    result = callrelay(
        "simulate",
        "call",
        "--server",
        asr_relay.url,
        "--speed",
        "0",
        "--json",
        env={"RELAY_API_TOKEN": asr_relay.api_token},
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    summary = printed[-1]["data"]
    assert summary["transcriptsComplete"] is True
    shown = [p["data"]["text"] for p in printed if p["event"] in ("Caller", "Receiver")]
    transcript_file = asr_relay.captures / summary["callSid"] / "transcript.jsonl"
    saved = [json.loads(line)["text"] for line in transcript_file.read_text().splitlines()]
    assert len(saved) >= 5 and sorted(shown) == sorted(saved)
    assert sum(summary["finals"].values()) == len(saved)
    assert [p["event"] for p in printed[-3:-1]] == ["transcription_ended", "call_completed"]


def test_hanging_up_mid_sentence_still_transcribes_it(asr_relay: RunningRelay) -> None:
    conversation = real_speech_call()
    first = conversation.turns[0]  # "and mister john dashwood had then leisure to consider..."
    cut = int((first.start + 2.2) * 8000)  # a couple of seconds in, mid-sentence
    hung_up = Conversation(conversation.caller[:cut], conversation.receiver[:cut], ())
    _, observer = play(asr_relay, hung_up)
    texts = " ".join(d["text"] for d in finals(observer, "caller")).lower()
    assert "dashwood" in texts or "john" in texts, texts


def test_health_shows_the_engine_and_its_lag(asr_relay: RunningRelay) -> None:
    asr = asr_relay.get("/").json()["asr"]
    assert asr["engine"] == "whisper" and asr["sampleRate"] == 16000
    assert asr["maxLagSeconds"] == 0 and asr["skippedSeconds"] == 0


def test_a_resumed_stream_is_transcribed_on_the_calls_timeline(asr_relay: RunningRelay) -> None:
    first = real_speech_call()
    turn = first.turns[0]
    cut = int((turn.end + 0.6) * 8000)
    utterance: dict[Track, bytes] = {
        "inbound": first.caller[:cut],
        "outbound": first.receiver[:cut],
    }
    call_sid = new_sid("CA")
    observer = asr_relay.observer(call_sid=call_sid)
    try:
        for _ in range(2):  # the same sentence on two streams of one call
            observer.transcription_ended.clear()
            play_stream(
                asr_relay.stream_target(),
                utterance,
                call_sid=call_sid,
                options=StreamOptions(speed=0),
            )
            assert observer.transcription_ended.wait(HUNG_SECONDS)
    finally:
        observer.close()
    resumed = [d for name, d in observer.events if name == "call_started"][1]
    offset = resumed["offsetMs"] / 1000
    assert resumed["resumed"] and offset >= cut / 8000
    spoken = [d for d in finals(observer, "caller") if d["streamSid"] == resumed["streamSid"]]
    assert spoken, "the resumed stream was not transcribed"
    assert offset + turn.start - 0.3 <= spoken[0]["start"] <= offset + turn.start + 0.6


def test_a_crashed_recogniser_process_is_replaced_mid_call(tmp_path) -> None:
    """The recognition process is killed mid-call: the relay starts another, the call goes on
    being transcribed, at the right times, and only the utterance in progress is lost."""
    relay = start_relay(tmp_path, {"ASR_ENGINE": "whisper"})
    try:
        conversation = real_speech_call()
        turns = conversation.turns[:6]
        cut = int((turns[-1].end + 0.8) * 8000)
        call_sid = new_sid("CA")
        observer = relay.observer(call_sid=call_sid, audio=False)
        streamer = threading.Thread(
            target=play_stream,
            args=(
                relay.stream_target(),
                {"inbound": conversation.caller[:cut], "outbound": conversation.receiver[:cut]},
            ),
            kwargs={"call_sid": call_sid, "options": StreamOptions(speed=1)},
        )
        streamer.start()
        started = time.monotonic()
        wait_until_recorded(relay, call_sid, turns[0].start + 1.0)  # mid-first-sentence
        os.kill(relay.get("/").json()["asr"]["process"], signal.SIGKILL)
        # The new process is loaded when the relay says so: 2 s on a quiet machine, many more
        # on a busy one; what the call says after that must be transcribed.
        wait_for(lambda: relay.get("/").json()["asr"].get("restarts") == 1, timeout=120)
        restarted_at = time.monotonic() - started
        streamer.join(60)
        assert observer.transcription_ended.wait(HUNG_SECONDS)
        observer.close()
        logged = [json.loads(line)["evt"] for line in relay.log_file.read_text().splitlines()]
        assert logged.count("asr_process_died") == 1
        assert logged.count("asr_process_restarted") == 1
        later = [t for t in turns if t.start > restarted_at]
        assert later, "the clip is too short to show recognition after the restart"
        for turn in later:
            events = finals(observer, turn.speaker)
            assert any(
                turn.start - 0.3 <= e["start"] and e["end"] <= turn.end + 0.3 for e in events
            ), f"nothing transcribed for {turn}"
        samples, _ = read_wav(relay.captures / call_sid / "caller.wav")
        assert len(samples) >= cut * 2  # the relay and the recording never noticed
    finally:
        stop_relay(relay)
