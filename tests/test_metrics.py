"""`GET /metrics`: Prometheus text that parses, counts what was sent, and needs the token."""

from __future__ import annotations

from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid
from tests.helpers import (
    RELAY_TOKEN,
    call_audio,
    one_frame_then_stop,
    raw_call,
    start_relay,
    stream_call,
)


def samples(relay: RunningRelay) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = requests.get(
        relay.url + "/metrics", headers={"Authorization": f"Bearer {RELAY_TOKEN}"}, timeout=10
    )
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_count_what_was_sent(tmp_path: Path) -> None:
    relay = start_relay(tmp_path, {"ASR_ENGINE": "off"})
    try:
        call_sid = new_sid("CA")
        listener = relay.observer(call_sid=call_sid)
        try:
            stream_call(relay, call_audio(1), StreamOptions(speed=0), call_sid)
            assert listener.ended.wait(10)
            assert samples(relay)[("callrelay_socketio_clients", ())] == 1
        finally:
            listener.close()
        bad_call, bad_stream = new_sid("CA"), new_sid("MZ")
        ws = raw_call(relay, bad_call, bad_stream)
        assert one_frame_then_stop(ws, bad_call, bad_stream, spoil=True) == 1000  # dropped
        found = samples(relay)
    finally:
        stop_relay(relay)
    for track in ("inbound", "outbound"):
        assert found[("callrelay_frames_received_total", (("track", track),))] == 50
        assert found[("callrelay_frames_relayed_total", (("track", track),))] == 50
    assert found[("callrelay_frames_dropped_total", (("reason", "invalid_media"),))] == 1
    assert found[("callrelay_calls_active", ())] == 0
    assert found[("callrelay_recording_bytes_total", ())] >= 2 * 2 * 50 * 320
    assert found[("callrelay_relay_latency_seconds_count", ())] >= 10  # every tenth message
    assert found[("callrelay_message_queue_up", ())] == -1  # no Redis configured


def test_metrics_need_the_token_unless_made_public(tmp_path: Path) -> None:
    private = start_relay(tmp_path / "private", {"ASR_ENGINE": "off"})
    public = start_relay(tmp_path / "public", {"ASR_ENGINE": "off", "METRICS_PUBLIC": "true"})
    try:
        assert requests.get(private.url + "/metrics", timeout=10).status_code == 401
        assert requests.get(public.url + "/metrics", timeout=10).status_code == 200
    finally:
        stop_relay(private)
        stop_relay(public)
