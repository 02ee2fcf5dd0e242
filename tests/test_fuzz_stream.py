"""Thousands of bad messages over real sockets while real calls go on beside them."""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from callrelay.simulator.fuzz import fuzz_streams
from callrelay.simulator.local_relay import RunningRelay
from callrelay.simulator.media_client import StreamOptions
from callrelay.tracks import MEDIA_EVENTS
from tests.helpers import call_audio, decode, expected_pcm, stream_call, wait_for

MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "3000"))


def test_bad_messages_crash_nothing_leak_no_call_and_spare_the_calls_beside_them(
    relay: RunningRelay,
) -> None:
    audio = call_audio(4)
    observer = relay.observer(keep_audio=True)
    good_reports = []
    good_calls = [
        threading.Thread(
            target=lambda: good_reports.append(stream_call(relay, audio, StreamOptions(speed=1)))
        )
        for _ in range(2)
    ]
    for call in good_calls:
        call.start()
    report = fuzz_streams(relay.stream_target(), MESSAGES, threads=4)
    for call in good_calls:
        call.join(60)
    try:
        good_sids = {r.call_sid for r in good_reports}
        wait_for(
            lambda: good_sids <= {d["callSid"] for n, d in observer.events if n == "call_ended"}, 30
        )
        wait_for(lambda: relay.get("/").json()["activeCalls"] == 0, 30)  # none leaked
    finally:
        observer.close()
    assert report.messages >= MESSAGES and report.refused_handshakes == 0
    assert -1 not in report.close_codes  # every bad connection was closed by the server
    # 1006: the server closed while the fuzzer was still writing an oversized frame.
    assert set(report.close_codes) <= {1000, 1002, 1003, 1006, 1007, 1009}
    log = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    assert not any(
        line["evt"] == "log" and "stream handler failed" in line.get("msg", "") for line in log
    )  # no handler crashed
    assert relay.get("/").json()["status"] == "ok"
    for good in good_reports:  # the real calls' audio arrived whole and exact
        for track, event in MEDIA_EVENTS.items():
            frames = [d for n, d in observer.audio if n == event and d["callSid"] == good.call_sid]
            assert np.array_equal(
                np.concatenate([decode(d) for d in frames]), expected_pcm(audio[track])
            )
    print(
        f"\nfuzzed {report.messages} messages on {report.connections} connections; "
        f"closes {dict(report.close_codes)}"
    )
