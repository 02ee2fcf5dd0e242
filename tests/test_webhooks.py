"""Webhooks: each call's events posted to real HTTP receivers, signed as Standard Webhooks says
(verified here with the `standardwebhooks` library), in order within a call, at least once
with one id per event, retried on failure, and kept in an outbox that outlives a kill -9."""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid
from tests.helpers import call_audio, callrelay, start_relay, stream_call, wait_for
from tests.receiver import Answer, Received, WebhookReceiver, new_secret

SECRET = new_secret()
CALL_EVENTS = ["call.started", "call.ended", "call.completed"]


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[WebhookReceiver, WebhookReceiver]]:
    first, second = WebhookReceiver(SECRET), WebhookReceiver(SECRET)
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture(autouse=True)
def answering(receivers: tuple[WebhookReceiver, WebhookReceiver]) -> None:
    for receiver in receivers:
        receiver.answer = lambda _: Answer()


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> Iterator[RunningRelay]:
    running = start_relay(
        tmp_path_factory.mktemp("webhooks"),
        {
            "ASR_ENGINE": "off",
            "WEBHOOK_URL": ",".join(r.url for r in receivers),
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_TIMEOUT_SECONDS": "1",
            "PUBLIC_URL": "https://relay.example.com",
        },
    )
    yield running
    stop_relay(running)


def a_call(relay: RunningRelay, seconds: float = 2) -> str:
    call_sid = new_sid("CA")
    stream_call(relay, call_audio(seconds), StreamOptions(speed=0), call_sid)
    return call_sid


def types(payloads: list[dict[str, object]]) -> list[object]:
    return [p["type"] for p in payloads]


def test_each_event_of_a_call_reaches_every_receiver_signed_and_in_order(
    relay: RunningRelay, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    call_sid = a_call(relay)
    for receiver in receivers:
        receiver.wait_for_call(call_sid)
        assert types(receiver.accepted(call_sid)) == CALL_EVENTS and receiver.refused == []
    first = [r for r in receivers[0].received if r.payload["data"]["callSid"] == call_sid]
    ids = [r.webhook_id for r in first]
    assert len(set(ids)) == 3 and all(i.startswith("msg_") for i in ids)
    assert ids == [  # one id per event, the same for every receiver
        r.webhook_id for r in receivers[1].received if r.payload["data"]["callSid"] == call_sid
    ]
    started, ended, completed = (r.payload for r in first)
    assert started["data"]["tracks"] == ["inbound", "outbound"]
    assert started["data"]["customParameters"] == {"campaign": "e2e"}
    assert ended["data"]["reason"] == "stop"
    assert started["timestamp"].endswith("Z") and started["timestamp"] <= ended["timestamp"]
    data = completed["data"]
    assert data["callSid"] == call_sid and data["seconds"] == pytest.approx(2.0, abs=0.1)
    assert data["analytics"]["caller"]["talkSeconds"] > 0
    assert data["links"]["recording"] == (
        f"https://relay.example.com/calls/{call_sid}/recording.wav"
    )
    assert all(r.headers["content-type"] == "application/json" for r in first)


def test_a_receiver_that_fails_gets_each_event_again_with_its_id_until_it_answers(
    relay: RunningRelay, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    flaky, steady = receivers
    tries: dict[str, int] = {}

    def fail_twice(seen: Received) -> Answer:
        tries[seen.webhook_id] = tries.get(seen.webhook_id, 0) + 1
        return Answer(503) if tries[seen.webhook_id] <= 2 else Answer(200)

    flaky.answer = fail_twice
    call_sid = a_call(relay)
    flaky.wait_for(lambda: len(flaky.accepted(call_sid)) == 3)
    assert types(flaky.accepted(call_sid)) == CALL_EVENTS  # the order holds through retries
    assert sorted(tries.values()) == [3, 3, 3]
    mine = [r for r in flaky.received if r.payload["data"]["callSid"] == call_sid]
    assert [r.status for r in mine] == [503, 503, 200] * 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(mine) if a.status == 503]
    assert all(gap >= 0.2 for gap in gaps)  # it waited before each retry
    assert types(steady.accepted(call_sid)) == CALL_EVENTS  # the other never waited on it


def test_retry_after_is_waited_for(
    relay: RunningRelay, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    busy = receivers[0]
    answered: list[str] = []

    def busy_once(seen: Received) -> Answer:
        answered.append(seen.webhook_id)
        return Answer(429, (("Retry-After", "2"),)) if len(answered) == 1 else Answer()

    busy.answer = busy_once
    call_sid = a_call(relay)
    busy.wait_for(lambda: len(busy.accepted(call_sid)) == 3)
    mine = [r for r in busy.received if r.payload["data"]["callSid"] == call_sid]
    assert mine[0].status == 429 and mine[1].webhook_id == mine[0].webhook_id
    assert mine[1].at - mine[0].at >= 1.9


def test_a_refusal_is_final_logged_and_counted(
    relay: RunningRelay, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    refusing = receivers[0]
    refusing.answer = lambda _: Answer(400)
    call_sid = a_call(relay)
    receivers[1].wait_for(lambda: len(receivers[1].accepted(call_sid)) == 3)
    wait_for(lambda: len(given_up(relay, call_sid)) == 3)
    mine = [r for r in refusing.received if r.payload["data"]["callSid"] == call_sid]
    assert [r.status for r in mine] == [400, 400, 400]  # each tried once, in order
    logged = given_up(relay, call_sid)
    assert logged[0]["error"] == "400, not retried" and logged[0]["receiver"] == refusing.url
    metrics = relay.get_with_token("/metrics").text
    assert 'callrelay_webhook_deliveries_total{event="call.completed",outcome="given_up"}' in (
        metrics
    )


def test_a_receiver_that_hangs_holds_up_no_one_else(
    relay: RunningRelay, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    hanging, steady = receivers
    hanging.answer = lambda _: Answer(delay=5)  # the relay waits 1 s (WEBHOOK_TIMEOUT_SECONDS)
    calls = [a_call(relay, seconds=1) for _ in range(3)]
    for call_sid in calls:
        steady.wait_for_call(call_sid, timeout=15)
    health = relay.get("/").json()["webhooks"]
    assert health["receivers"] == 2 and health["failing"] == 1 and health["pending"] >= 3
    hanging.answer = lambda _: Answer()
    for call_sid in calls:  # and once it answers again, it gets everything, in order
        hanging.wait_for_call(call_sid)
        assert types(hanging.accepted(call_sid)) == CALL_EVENTS
    wait_for(lambda: relay.get("/").json()["webhooks"]["pending"] == 0)


def given_up(relay: RunningRelay, call_sid: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    return [
        line for line in lines if line["evt"] == "webhook_given_up" and line["callSid"] == call_sid
    ]


def test_the_outbox_outlives_a_killed_relay_and_the_next_start_delivers_it(
    tmp_path: Path,
) -> None:
    receiver = WebhookReceiver(SECRET)
    receiver.answer = lambda _: Answer(503)  # down
    settings = {"ASR_ENGINE": "off", "WEBHOOK_URL": receiver.url, "WEBHOOK_SECRET": SECRET}
    relay = start_relay(tmp_path, settings)
    try:
        call_sid = a_call(relay)
        wait_for(lambda: relay.get("/").json()["webhooks"]["pending"] == 3)
        tried = {r.webhook_id for r in receiver.received}
        os.killpg(relay.process.pid, signal.SIGKILL)
        relay.process.wait(30)
    finally:
        stop_relay(relay)
    receiver.answer = lambda _: Answer()  # back up
    again = start_relay(tmp_path, settings)
    try:
        receiver.wait_for(lambda: len(receiver.accepted(call_sid)) == 3)  # once its lease ran out
        assert types(receiver.accepted(call_sid)) == CALL_EVENTS
        delivered = {r.webhook_id for r in receiver.received if r.status == 204}
        assert tried <= delivered  # the same ids as before the kill: receivers drop duplicates
        wait_for(lambda: again.get("/").json()["webhooks"]["pending"] == 0)
    finally:
        stop_relay(again)
        receiver.stop()


def test_a_delivery_is_given_up_after_its_time(tmp_path: Path) -> None:
    receiver = WebhookReceiver(SECRET)
    receiver.answer = lambda _: Answer(500)
    relay = start_relay(
        tmp_path,
        {
            "ASR_ENGINE": "off",
            "WEBHOOK_URL": receiver.url,
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_GIVE_UP_SECONDS": "2",
            "WEBHOOK_EVENTS": "call.started",
        },
    )
    try:
        call_sid = a_call(relay)
        wait_for(lambda: len(given_up(relay, call_sid)) == 1)
        tries = [r for r in receiver.received if r.payload["data"]["callSid"] == call_sid]
        assert len(tries) >= 2 and {r.payload["type"] for r in tries} == {"call.started"}
        assert given_up(relay, call_sid)[0]["error"] == "500"
        assert relay.get("/").json()["webhooks"]["pending"] == 0
    finally:
        stop_relay(relay)
        receiver.stop()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"WEBHOOK_URL": "http://127.0.0.1:9/hooks"}, "WEBHOOK_URL needs WEBHOOK_SECRET"),
        (
            {"WEBHOOK_URL": "http://127.0.0.1:9/hooks", "WEBHOOK_SECRET": "whsec_short"},
            "WEBHOOK_SECRET: must be 'whsec_' and the base64 of at least 16 random bytes",
        ),
        ({"WEBHOOK_URL": "ftp://example.com"}, "WEBHOOK_URL: 'ftp://example.com' is not"),
        ({"WEBHOOK_EVENTS": "call.begun"}, "WEBHOOK_EVENTS: unknown ['call.begun']"),
    ],
)
def test_webhook_settings_that_cannot_work_stop_the_server_with_one_line(
    settings: dict[str, str], message: str, tmp_path: Path
) -> None:
    result = callrelay("serve", env={**settings, "CAPTURES_DIR": str(tmp_path)}, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "whsec_short" not in result.stderr


def test_finals_are_posted_with_their_speaker_and_completed_comes_after_the_last(
    tmp_path: Path,
) -> None:
    receiver = WebhookReceiver(SECRET)
    relay = start_relay(
        tmp_path, {"ASR_ENGINE": "whisper", "WEBHOOK_URL": receiver.url, "WEBHOOK_SECRET": SECRET}
    )
    try:
        call_sid = a_call(relay, seconds=6)
        receiver.wait_for(lambda: "call.completed" in types(receiver.accepted(call_sid)), 120)
        posted = receiver.accepted(call_sid)
        assert posted[0]["type"] == "call.started" and posted[-1]["type"] == "call.completed"
        finals = [p["data"] for p in posted if p["type"] == "transcript.final"]
        saved = [
            json.loads(line)
            for line in (relay.captures / call_sid / "transcript.jsonl").read_text().splitlines()
        ]
        assert finals and len(finals) == len(saved)  # every final, once
        assert {(f["speaker"], f["text"]) for f in finals} == {
            (s["speaker"], s["text"]) for s in saved
        }
        assert all({"callSid", "streamSid", "start", "end", "confidence"} <= set(f) for f in finals)
        assert "transcript.partial" not in types(posted)  # off unless asked for
        words = posted[-1]["data"]["analytics"]["caller"]["words"]
        assert words == sum(len(f["text"].split()) for f in finals if f["speaker"] == "Caller")
    finally:
        stop_relay(relay)
        receiver.stop()
