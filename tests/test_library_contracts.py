"""What callrelay assumes of its libraries beyond their public API, checked against the
installed releases: each test names the adapter module that relies on it, and fails on the
release that changes it (then change that module, and the pin in `pyproject.toml`)."""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator

import engineio
import pytest
from engineio import packet as eio_packet
from engineio import socket as eio_socket
from flask import Flask
from gunicorn.arbiter import Arbiter
from gunicorn.workers import base_async, ggevent
from simple_websocket import Client, ConnectionClosed
from socketio import packet as sio_packet
from werkzeug.serving import make_server

from callrelay.close_codes import CloseCode
from callrelay.web.engineio_queues import (
    client_queue,
    drop_oldest_audio,
    engineio_clients,
    queued_packets,
)
from callrelay.web.websocket_route import AcceptedSocket, add_websocket_route


def _event(name: str) -> eio_packet.Packet:
    """What python-socketio hands engine.io for `emit(name, ...)`."""
    encoded = sio_packet.Packet(sio_packet.EVENT, data=[name, {"payload": "AAAA"}]).encode()
    return eio_packet.Packet(eio_packet.MESSAGE, data=encoded)


@pytest.mark.parametrize("async_mode", ["gevent", "threading"])
def test_engineio_queues_reads_and_trims_each_clients_packet_queue(async_mode: str) -> None:
    """web/engineio_queues.py: `Server.sockets`, `Socket.queue` (a queue whose items sit in a
    `queue` deque, with `task_done`), and python-socketio's encoding of an event."""
    eio = engineio.Server(async_mode=async_mode)
    client = eio_socket.Socket(eio, "eio-sid")
    eio.sockets["eio-sid"] = client
    for name in ("media_in", "transcript", "media_out", "media_in", "call_ended"):
        client.send(_event(name))
    assert engineio_clients(eio) == [client]
    assert queued_packets(client) == 5
    waiting = client_queue(eio, "eio-sid")
    assert waiting is not None and client_queue(eio, "gone") is None
    assert drop_oldest_audio(waiting, keep=2) == 3
    left = [eio_packet.Packet(encoded_packet=p.encode()).data for p in list(waiting.queue)]
    assert [text.split('"')[1] for text in left] == ["transcript", "call_ended"]
    assert queued_packets(client) == 2


@pytest.fixture
def accepted() -> Iterator[tuple[str, list[AcceptedSocket], threading.Event]]:
    """A Flask app with one WebSocket route on werkzeug's server, on loopback: the socket its
    handler got, and an event to let the handler return."""
    app = Flask(__name__)
    sockets: list[AcceptedSocket] = []
    got, release = threading.Event(), threading.Event()

    def handler(ws: AcceptedSocket) -> None:
        sockets.append(ws)
        got.set()
        release.wait(10)

    add_websocket_route(app, "/ws", handler, max_message_size=1024)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.port}/ws", sockets, got
    finally:
        release.set()
        server.shutdown()
        thread.join(10)


def test_an_accepted_socket_says_when_its_peer_has_gone_and_with_what_code(
    accepted: tuple[str, list[AcceptedSocket], threading.Event],
) -> None:
    """web/websocket_route.py: simple-websocket's `connected` and `close_reason`."""
    url, sockets, got = accepted
    client = Client.connect(url)
    assert got.wait(10)
    ws = sockets[0]
    client.send("hello")
    assert ws.receive(5) == "hello"
    assert not ws.lost and ws.close_code is None
    client.close(CloseCode.GOING_AWAY, "bye")
    with pytest.raises(ConnectionClosed) as closed:
        while ws.receive(5) is not None:
            pass
    assert ws.lost and ws.close_code == CloseCode.GOING_AWAY == closed.value.reason


def test_an_oversized_message_closes_the_socket_with_message_too_big(
    accepted: tuple[str, list[AcceptedSocket], threading.Event],
) -> None:
    """The reader closes it; a `receive` may only time out (web/stream.py then asks `lost`)."""
    url, sockets, got = accepted
    client = Client.connect(url)
    assert got.wait(10)
    client.send("x" * 2048)
    with contextlib.suppress(ConnectionClosed):
        while not sockets[0].lost:
            sockets[0].receive(0.1)
    assert sockets[0].close_code == CloseCode.MESSAGE_TOO_BIG
    with pytest.raises(ConnectionClosed) as closed:
        client.receive(5)
    assert closed.value.reason == CloseCode.MESSAGE_TOO_BIG


def test_the_route_reads_the_readers_thread_and_the_server_it_runs_under() -> None:
    """web/websocket_route.py lingers on `Server.thread` and answers by `Server.mode`."""
    source = inspect.getsource(__import__("simple_websocket.ws", fromlist=["Base"]))
    assert "self.thread = thread_class(" in source
    assert "self.mode = 'gunicorn'" in source and "self.mode = 'werkzeug'" in source


def test_gunicorn_lets_an_app_that_used_the_socket_end_the_request_with_stop_iteration() -> None:
    """web/websocket_route.py raises StopIteration under gunicorn, as flask-sock does: gunicorn's
    async workers then write no response of their own."""
    source = inspect.getsource(base_async.AsyncWorker.handle_request)
    assert "except StopIteration" in source


def test_gunicorns_master_calls_manage_workers_from_its_loop() -> None:
    """web/server.py's arbiter checks the recognition processes in `manage_workers`, which the
    master's loop calls about once a second."""
    assert "self.manage_workers()" in inspect.getsource(Arbiter.run)
    assert inspect.signature(Arbiter.manage_workers).parameters.keys() == {"self"}
    assert Arbiter.WORKER_BOOT_ERROR == 3


def test_gunicorns_gevent_worker_hands_each_accepted_connection_to_its_handle() -> None:
    """web/call_routing.py peeks at a connection and may pass it on in `handle`, before any of
    it is read: gunicorn's gevent worker must call `handle(listener, client, addr)` for each
    connection one of `self.sockets` accepted, and parse HTTP only inside it."""
    run = inspect.getsource(ggevent.GeventWorker.run)
    assert "for s in self.sockets:" in run
    assert "hfun = partial(self.handle, s)" in run
    assert "StreamServer(s, handle=hfun" in run
    assert list(inspect.signature(ggevent.GeventWorker.handle).parameters) == [
        "self",
        "listener",
        "client",
        "addr",
    ]
    assert "get_parser(self.cfg, client, addr)" in inspect.getsource(base_async.AsyncWorker.handle)
    assert "worker.sockets = sock.create_sockets(" in inspect.getsource(Arbiter.spawn_worker)
