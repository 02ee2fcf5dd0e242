"""Call analytics from the two aligned tracks, on calls whose figures are known: talk time,
words per minute, turns, monologues, overlap, silence, interruptions, first response."""

from __future__ import annotations

import numpy as np
import pytest

from callrelay.analytics import activity_from_audio, activity_from_spans, call_analytics
from callrelay.audio import mulaw_encode
from callrelay.simulator.local_relay import RunningRelay
from callrelay.simulator.media_client import StreamOptions, new_sid
from callrelay.twilio.media_stream import Track
from tests.helpers import stream_call

FRAMES = 700  # 14 s
CALLER = [(0.0, 3.0), (3.5, 5.0), (9.0, 12.0)]
RECEIVER = [(1.0, 1.4), (5.5, 9.5), (13.0, 14.0)]
"""The caller talks, pauses, goes on (one turn); the receiver says "mm-hm" inside it (overlap,
no turn), answers at 5.5 s, is cut in on at 9 s and stops at 9.5 s (an interruption), and has
the last word."""


def known_call() -> dict[str, object]:
    return call_analytics(
        {
            "caller": activity_from_spans(CALLER, FRAMES),
            "receiver": activity_from_spans(RECEIVER, FRAMES),
        },
        {"caller": 30, "receiver": 18},
    )


def test_each_side_has_its_talk_time_words_per_minute_turns_and_longest_monologue() -> None:
    figures = known_call()
    assert figures["caller"] == {
        "talkSeconds": 7.5,
        "words": 30,
        "wordsPerMinute": 240.0,
        "longestMonologueSeconds": 5.0,
        "turns": 2,
    }
    assert figures["receiver"] == {
        "talkSeconds": 5.4,
        "words": 18,
        "wordsPerMinute": 200.0,
        "longestMonologueSeconds": 4.0,
        "turns": 2,
    }


def test_the_call_has_its_silence_overlap_interruptions_and_first_response() -> None:
    figures = known_call()
    assert figures["silenceSeconds"] == 2.0
    assert figures["overlapSeconds"] == 0.9
    assert figures["interruptions"] == 1
    assert figures["firstResponseSeconds"] == 2.5


def test_a_side_that_never_speaks_has_no_response_and_no_words_per_minute() -> None:
    figures = call_analytics(
        {"caller": activity_from_spans([(0.5, 2.0)], 150), "receiver": np.zeros(150, np.bool_)},
        {"caller": None, "receiver": None},
    )
    assert figures["receiver"] == {
        "talkSeconds": 0.0,
        "words": None,
        "wordsPerMinute": None,
        "longestMonologueSeconds": 0,
        "turns": 0,
    }
    assert figures["firstResponseSeconds"] is None and figures["silenceSeconds"] == 1.5


def speech_like(spans: list[tuple[float, float]], seconds: float, rate: int = 16000) -> np.ndarray:
    """Tones at -20 dBFS where `spans` say, over a faint line noise (-70 dBFS)."""
    rng = np.random.default_rng(3)
    audio = rng.normal(0, 10, int(seconds * rate))
    t = np.arange(len(audio)) / rate
    for start, end in spans:
        inside = (t >= start) & (t < end)
        audio[inside] += 3277 * np.sin(2 * np.pi * 440 * t[inside])
    return audio.astype(np.int16)


def test_with_recognition_off_speech_is_found_in_the_audio_to_a_frame() -> None:
    caller = activity_from_audio(speech_like(CALLER, 14), 16000)
    receiver = activity_from_audio(speech_like(RECEIVER, 14), 16000)
    assert np.array_equal(caller, activity_from_spans(CALLER, FRAMES))
    assert np.array_equal(receiver, activity_from_spans(RECEIVER, FRAMES))
    figures = call_analytics({"caller": caller, "receiver": receiver}, {})
    assert figures["interruptions"] == 1 and figures["overlapSeconds"] == pytest.approx(0.9)


def test_short_pauses_stay_inside_speech_and_clicks_are_not_speech() -> None:
    audio = speech_like([(1.0, 2.0), (2.2, 3.0), (5.0, 5.04)], 6)  # a 200 ms pause; a click
    found = activity_from_audio(audio, 16000)
    assert np.array_equal(found, activity_from_spans([(1.0, 3.0)], 300))
    assert not activity_from_audio(np.zeros(16000, np.int16), 16000).any()  # digital silence


def test_a_finished_call_has_its_analytics_in_its_history_and_in_call_completed(
    relay: RunningRelay,
) -> None:
    """Recognition off: the figures come from the recordings' audio, once they are final."""
    audio: dict[Track, bytes] = {
        "inbound": mulaw_encode(speech_like(CALLER, 14, rate=8000)),
        "outbound": mulaw_encode(speech_like(RECEIVER, 14, rate=8000)),
    }
    call_sid = new_sid("CA")
    observer = relay.observer(call_sid=call_sid, audio=False)
    try:
        stream_call(relay, audio, StreamOptions(speed=0), call_sid)
        assert observer.completed.wait(30)
    finally:
        observer.close()
    completed = next(data for name, data in observer.events if name == "call_completed")
    call = relay.get_with_token(f"/calls/{call_sid}").json()
    assert completed["analytics"] == call["analytics"] and call["completedAt"] >= call["endedAt"]
    figures = call["analytics"]
    assert figures["caller"]["talkSeconds"] == pytest.approx(7.5, abs=0.1)
    assert figures["receiver"]["talkSeconds"] == pytest.approx(5.4, abs=0.1)
    assert figures["caller"]["turns"] == figures["receiver"]["turns"] == 2
    assert figures["caller"]["words"] is None  # nothing was transcribed
    assert figures["interruptions"] == 1
    assert figures["overlapSeconds"] == pytest.approx(0.9, abs=0.1)
    assert figures["firstResponseSeconds"] == pytest.approx(2.5, abs=0.1)
