"""A call's transcript as captions: WebVTT with each speaker as a voice, SRT with the speaker's
name, and plain text; both sides on one timeline."""

from __future__ import annotations

from callrelay.exports import render, to_srt, to_text, to_webvtt

LINES = [
    {
        "speaker": "Caller",
        "text": "I'm calling about <order> 12 & 13.",
        "start": 3661.25,
        "end": 3663.5,
    },
    {"speaker": "Receiver", "text": "Hello,\nhow can I help?", "start": 0.52, "end": 1.9},
    {"speaker": "Caller", "text": "Hi.", "start": 1.5, "end": 1.2},  # overlapping; a bad end
    {"speaker": "Receiver", "text": "   ", "start": 2.0, "end": 2.5},  # nothing said
]


def test_webvtt_has_a_cue_per_line_with_its_speaker_as_a_voice_by_start_time() -> None:
    assert to_webvtt(LINES) == (
        "WEBVTT\n\n"
        "1\n00:00:00.520 --> 00:00:01.900\n<v Receiver>Hello, how can I help?\n\n"
        "2\n00:00:01.500 --> 00:00:01.500\n<v Caller>Hi.\n\n"
        "3\n01:01:01.250 --> 01:01:03.500\n<v Caller>I'm calling about &lt;order&gt; 12 &amp; 13.\n"
    )


def test_srt_names_the_speaker_in_each_cue_with_comma_milliseconds() -> None:
    assert to_srt(LINES) == (
        "1\n00:00:00,520 --> 00:00:01,900\nReceiver: Hello, how can I help?\n\n"
        "2\n00:00:01,500 --> 00:00:01,500\nCaller: Hi.\n\n"
        "3\n01:01:01,250 --> 01:01:03,500\nCaller: I'm calling about <order> 12 & 13.\n"
    )


def test_text_is_a_line_per_final_by_start_time() -> None:
    assert to_text(LINES) == (
        "[00:00.5] Receiver: Hello, how can I help?\n[00:01.5] Caller: Hi.\n"
        "[61:01.2] Caller: I'm calling about <order> 12 & 13.\n"
    )
    assert render("txt", LINES[:1]) == "[61:01.2] Caller: I'm calling about <order> 12 & 13.\n"


def test_a_call_with_nothing_said_is_an_empty_but_valid_file() -> None:
    assert to_webvtt([]) == "WEBVTT\n\n"
    assert to_srt([]) == ""
