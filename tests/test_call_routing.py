"""Several processes on one port: a call's Twilio stream and every client that names the call
are served by one process, so the call's audio never crosses Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import socketio
from prometheus_client.parser import text_string_to_metric_families

from callrelay.redis_state import ROOMS_CHANNEL
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, StreamTarget, new_sid, play_stream
from callrelay.simulator.observer import RelayObserver
from callrelay.web.call_routing import free_index, owner, routing_key
from callrelay.web.message_queue import CHANNEL
from callrelay.web.rooms import ALL_CALLS, audio_room
from tests.helpers import RedisServer, call_audio, start_relay, wait_for

WORKERS = 2


# Which call a connection names, and whose it is.


@pytest.mark.parametrize(
    ("request_line", "call_sid"),
    [
        (b"GET /stream/CA0123 HTTP/1.1\r\nHost: x\r\n", "CA0123"),
        (b"GET /socket.io/?EIO=4&transport=websocket&callSid=CA42 HTTP/1.1\r\n", "CA42"),
        (b"POST /socket.io/?EIO=4&transport=polling&sid=abc&callSid=CA42 HTTP/1.1\r\n", "CA42"),
        (b"GET /stream HTTP/1.1\r\n", None),
        (b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n", None),
        (b"GET /calls/CA0123 HTTP/1.1\r\n", None),
        (b"GET /stream/CA01/more HTTP/1.1\r\n", None),
        (b"GET /stream/" + b"C" * 65 + b" HTTP/1.1\r\n", None),
        (b"\x16\x03\x01\x02\x00\x01\x00", None),  # a TLS hello: nothing to read here
        (b"GET /stream/CA\xff HTTP/1.1\r\n", None),
        (b"", None),
    ],
)
def test_a_connection_names_its_call_in_its_request_line(
    request_line: bytes, call_sid: str | None
) -> None:
    assert routing_key(request_line) == call_sid


def test_calls_spread_over_the_processes_the_same_way_in_each() -> None:
    calls = [new_sid("CA") for _ in range(2000)]
    owners = [owner(call_sid, WORKERS) for call_sid in calls]
    assert owners == [owner(call_sid, WORKERS) for call_sid in calls]
    assert 900 < owners.count(0) < 1100
    assert {owner(call_sid, 4) for call_sid in calls} == {0, 1, 2, 3}


def test_a_worker_that_replaces_one_takes_its_place() -> None:
    assert free_index([], 2) == 0
    assert free_index([0], 2) == 1
    assert free_index([1], 2) == 0
    assert free_index([0, 2], 3) == 1


# Over real sockets, against `WORKERS=2`.


@pytest.fixture
def relay(tmp_path: Path, redis_server: RedisServer) -> Iterator[RunningRelay]:
    running = start_relay(
        tmp_path,
        {
            "ASR_ENGINE": "off",
            "REDIS_URL": redis_server.url,
            "WORKERS": str(WORKERS),
            "LOG_LEVEL": "DEBUG",  # `client_connected` says where each client is
        },
    )
    # Until a process has opened its inbox, its calls are served where they arrive.
    wait_for(lambda: len(worker_pids(running)) == WORKERS)
    yield running
    stop_relay(running)


class QueueWatch:
    """Every Socket.IO event that crosses between the relay's processes through Redis."""

    def __init__(self, url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.listened_rooms: list[str] = []
        """Audio rooms that a process said it has its first listener in."""
        self._pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(
            **{
                CHANNEL: lambda m: self.events.append(json.loads(m["data"])),
                ROOMS_CHANNEL: self._room_changed,
            }
        )
        self._thread = self._pubsub.run_in_thread(sleep_time=0.01, daemon=True)

    def __enter__(self) -> QueueWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()
        self._thread.join(5)
        self._pubsub.close()

    def _room_changed(self, message: dict[str, Any]) -> None:
        _, room, listened = json.loads(message["data"])
        if listened:
            self.listened_rooms.append(room)

    def media_for(self, call_sid: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.events
            if event.get("event", "").startswith("media_") and call_of(event) == call_sid
        ]


def call_of(event: dict[str, Any]) -> Any:
    """The call a published emit is about (its data: the event's arguments)."""
    [data] = event["data"]
    return data["callSid"]


def worker_pids(relay: RunningRelay) -> dict[int, int]:
    """Each worker's place among the workers, and its pid (the latest of each place)."""
    return {line["worker"]: line["pid"] for line in logged(relay, "worker_routing")}


def logged(relay: RunningRelay, evt: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in relay.log_file.read_text().splitlines()]
    return [line for line in lines if line["evt"] == evt]


def process_of(relay: RunningRelay, evt: str, call_sid: str) -> int:
    [line] = [line for line in logged(relay, evt) if line.get("callSid") == call_sid]
    return int(line["pid"])


def calls_of_each_worker(count: int) -> list[str]:
    """`count` new CallSids for each worker, alternating."""
    sids: dict[int, list[str]] = {index: [] for index in range(WORKERS)}
    while any(len(found) < count for found in sids.values()):
        call_sid = new_sid("CA")
        sids[owner(call_sid, WORKERS)].append(call_sid)
    return [found[i] for i in range(count) for found in sids.values()]


def play_as_twilio(relay: RunningRelay, call_sid: str, seconds: float) -> threading.Thread:
    """A call's stream at `/stream/<CallSid>`, as the relay's TwiML names it, in real time."""
    url = f"{relay.ws_url}/{call_sid}"
    target = StreamTarget(url, url, relay.auth_token)
    thread = threading.Thread(
        target=play_stream,
        args=(target, call_audio(seconds)),
        kwargs={"call_sid": call_sid, "options": StreamOptions(speed=1)},
    )
    thread.start()
    return thread


def metric(relay: RunningRelay, name: str) -> float:
    text = relay.get_with_token("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def test_a_calls_stream_and_its_listeners_meet_in_one_process_and_its_audio_stays_there(
    relay: RunningRelay, redis_server: RedisServer
) -> None:
    pids = worker_pids(relay)
    calls = calls_of_each_worker(3)
    with QueueWatch(redis_server.url) as queue:
        listeners = [relay.observer(call_sid=call_sid) for call_sid in calls]
        try:
            players = [play_as_twilio(relay, call_sid, 2) for call_sid in calls]
            for player in players:
                player.join(30)
            for listener in listeners:
                assert listener.ended.wait(10)
        finally:
            for listener in listeners:
                listener.close()
        for listener in listeners:
            assert listener.counts["media_in"] == listener.counts["media_out"] == 100
        for call_sid in calls:
            stream_process = process_of(relay, "call_started", call_sid)
            assert stream_process == pids[owner(call_sid, WORKERS)]
            assert process_of(relay, "client_connected", call_sid) == stream_process
        assert all(queue.media_for(call_sid) == [] for call_sid in calls)
        # The call's other events still reach every process, for clients following all calls.
        ended = [e for e in queue.events if e.get("event") == "call_ended"]
        assert {call_of(e) for e in ended} == set(calls)
    wait_for(lambda: metric(relay, "callrelay_connections_handed_over_total") >= 3)
    assert metric(relay, "callrelay_audio_events_across_processes_total") == 0


def test_a_client_following_every_call_hears_the_other_process_through_redis(
    relay: RunningRelay, redis_server: RedisServer
) -> None:
    calls = calls_of_each_worker(1)  # one on each process: one is not the client's
    with QueueWatch(redis_server.url) as queue:
        everything = relay.observer()
        wait_for(lambda: audio_room(ALL_CALLS) in queue.listened_rooms)
        try:
            players = [play_as_twilio(relay, call_sid, 2) for call_sid in calls]
            for player in players:
                player.join(30)
            wait_for(lambda: everything.counts["call_ended"] == 2)
            crossed = sorted(calls, key=lambda call_sid: len(queue.media_for(call_sid)))
            # What the client heard of the call on the other process came through Redis (the
            # first frames may go before that process hears of the client: Redis tells it,
            # possibly between a frame of one track and the same frame of the other). The last
            # frames may reach the client after `call_ended`, which takes another way.
            wait_for(lambda: heard(everything) - 2 * 100 == len(queue.media_for(crossed[1])))
        finally:
            everything.close()
        assert queue.media_for(crossed[0]) == []
        assert everything.counts["media_in"] > 100, everything.counts
    wait_for(
        lambda: (
            metric(relay, "callrelay_audio_events_across_processes_total")
            == len(queue.media_for(crossed[1]))
        )
    )


def heard(observer: RelayObserver) -> int:
    return observer.counts["media_in"] + observer.counts["media_out"]


def hear_over_polling(relay: RunningRelay, call_sid: str) -> Counter[str]:
    """A call, heard by a Socket.IO client on the long-polling transport that names it."""
    counts: Counter[str] = Counter()
    ended = threading.Event()
    client = socketio.Client(reconnection=False)
    for name in ("media_in", "media_out"):
        client.on(name, lambda data, name=name: counts.update([name]))
    client.on("call_ended", lambda data: ended.set())
    client.connect(
        f"{relay.url}?callSid={call_sid}",
        auth={"token": relay.api_token},
        transports=["polling"],
        wait_timeout=10,
    )
    try:
        play_as_twilio(relay, call_sid, 2).join(30)
        assert ended.wait(10)
        wait_for(lambda: sum(counts.values()) >= 200, timeout=5)
    finally:
        client.disconnect()
    return counts


def test_a_long_polling_client_that_names_its_call_is_served_by_the_calls_process(
    relay: RunningRelay,
) -> None:
    refused = requests.get(relay.url + "/socket.io/?EIO=4&transport=polling", timeout=5)
    assert refused.status_code == 400
    assert "callSid" in refused.json()["error"]
    for call_sid in calls_of_each_worker(1):
        assert hear_over_polling(relay, call_sid) == {"media_in": 100, "media_out": 100}
        assert process_of(relay, "client_connected", call_sid) == process_of(
            relay, "call_started", call_sid
        )


def test_a_worker_that_dies_is_replaced_by_one_that_takes_its_calls(
    relay: RunningRelay,
) -> None:
    dead = worker_pids(relay)[1]
    os.kill(dead, signal.SIGKILL)
    wait_for(lambda: worker_pids(relay)[1] != dead, timeout=30)
    replacement = worker_pids(relay)[1]
    [call_sid] = [c for c in calls_of_each_worker(1) if owner(c, WORKERS) == 1]
    listener = relay.observer(call_sid=call_sid)
    try:
        play_as_twilio(relay, call_sid, 2).join(30)
        assert listener.ended.wait(10)
    finally:
        listener.close()
    assert listener.counts["media_in"] == listener.counts["media_out"] == 100
    assert process_of(relay, "call_started", call_sid) == replacement
    assert process_of(relay, "client_connected", call_sid) == replacement


def answering_process(relay: RunningRelay, pieces: list[bytes]) -> int:
    """The pid `GET /` reports for a request sent in `pieces`, a little apart."""
    host, port = relay.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(0.05)  # a slow client: the rest of its request line comes later
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(json.loads(reply.split(b"\r\n\r\n", 1)[1])["process"]["pid"])


def test_a_request_that_names_a_call_is_answered_by_its_process_even_sent_slowly(
    relay: RunningRelay,
) -> None:
    pids = worker_pids(relay)
    for call_sid in calls_of_each_worker(3):
        request = f"GET /?callSid={call_sid} HTTP/1.1\r\nHost: relay\r\n\r\n".encode()
        assert answering_process(relay, [request]) == pids[owner(call_sid, WORKERS)]
        split = [request[:9], request[9:30], request[30:]]
        assert answering_process(relay, split) == pids[owner(call_sid, WORKERS)]
