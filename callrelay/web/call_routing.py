"""Several processes on one port, and each call on one of them: its Twilio stream and every
client that follows it.

With `WORKERS` above 1 every process accepts connections on the shared port (SO_REUSEPORT: the
kernel spreads them at random). Before reading a byte, the process that accepted a connection
peeks at its request line. One that names a call (`/stream/<CallSid>`, or `callSid=` in the
query, as Socket.IO clients following a call send it) belongs to the process that the CallSid
hashes to, and is handed to it whole: the socket itself, passed over a Unix socket
(SCM_RIGHTS), its bytes still unread in the kernel. A call's audio then reaches its listeners
inside one process and never crosses Redis. Connections that name no call stay where they
landed; so does one whose process cannot take it (restarting), which then costs only what it
cost before: its audio crosses Redis.

gunicorn's gevent worker is extended at its connection handler (`handle`), the one place where
a connection exists before HTTP is parsed; tests/test_library_contracts.py checks that it is
still there. Everything here runs in the worker's event loop: the peek, the hand-over and the
inbox are greenlets' waits.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import gevent
import gevent.pool
import gevent.socket
from gunicorn.workers.ggevent import GeventWorker

from callrelay.logs import log_event
from callrelay.metrics import CONNECTIONS_HANDED_OVER

logger = logging.getLogger("callrelay.routing")

MAX_REQUEST_LINE = 8192
"""gunicorn refuses longer request lines (`limit_request_line`, 4094) anyway."""
PEEK_SECONDS = 5.0
"""How long a connection may take to send its request line before it is served unrouted."""
MAX_CALL_SID = 64


def routing_key(head: bytes) -> str | None:
    """The call a connection's first bytes name: `/stream/<CallSid>`, or `callSid=` in the
    query of any request (Socket.IO's `/socket.io/?...&callSid=CA...`)."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    path, _, query = target.partition("?")
    key: str | None = None
    if path.startswith("/stream/"):
        key = path[len("/stream/") :]
    elif query:
        key = next(iter(parse_qs(query).get("callSid", [])), None)
    return key if key and "/" not in key and len(key) <= MAX_CALL_SID else None


def owner(key: str, processes: int) -> int:
    """The process (0 to `processes` - 1) a call belongs to: the same in every process, and
    after a restart."""
    return zlib.crc32(key.encode()) % processes


def free_index(taken: Iterable[int], processes: int) -> int:
    """The index a new worker takes: the lowest that no running worker has, so a worker that
    replaces one that died takes its calls."""
    used = set(taken)
    return next((i for i in range(processes) if i not in used), 0)


def inbox_path(folder: Path, index: int) -> Path:
    return folder / f"worker-{index}.sock"


class CallRoutingWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, which hands connections for another process's calls to it.

    The master sets `route_index` (this worker's place among `WORKERS`) and `route_folder`
    (where the workers' inboxes are) in `pre_fork`."""

    route_index: int = 0
    route_folder: Path = Path()

    def run(self) -> None:
        self._peers: dict[int, gevent.socket.socket] = {}
        self._handed = gevent.pool.Pool(self.worker_connections)
        self._unreachable: set[int] = set()
        inbox = self._open_inbox()
        receiving = gevent.spawn(self._receive, inbox)
        log_event(logger, "worker_routing", worker=self.route_index, of=self.cfg.workers)
        try:
            super().run()
        finally:
            receiving.kill()
            inbox.close()
            for peer in self._peers.values():
                peer.close()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """A connection this process accepted: handed to its call's process, or served here."""
        target = self._target(client)
        if target is None or not self._hand_over(target, listener, client):
            super().handle(listener, client, addr)

    def _target(self, client: Any) -> int | None:
        """Another process, if the connection names a call that belongs to it."""
        key = routing_key(_peek_request_line(client))
        if key is None:
            return None
        target = owner(key, self.cfg.workers)
        return None if target == self.route_index else target

    def _hand_over(self, target: int, listener: Any, client: Any) -> bool:
        listener_index = self.sockets.index(listener)
        for attempt in range(2):  # a peer that restarted has a new inbox: connect again
            try:
                peer = self._peer(target)
                socket.send_fds(peer, [bytes([listener_index])], [client.fileno()])
            except OSError as error:
                self._peers.pop(target, None)
                if attempt == 1:
                    self._cannot_reach(target, error)
                    return False
                continue
            break
        client.close()  # the other process holds the connection now
        CONNECTIONS_HANDED_OVER.inc()
        if target in self._unreachable:
            self._unreachable.discard(target)
            log_event(logger, "worker_reachable", worker=target)
        return True

    def _peer(self, target: int) -> gevent.socket.socket:
        peer = self._peers.get(target)
        if peer is None:
            peer = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                peer.connect(str(inbox_path(self.route_folder, target)))
            except OSError:
                peer.close()
                raise
            self._peers[target] = peer
        return peer

    def _cannot_reach(self, target: int, error: OSError) -> None:
        if target not in self._unreachable:
            self._unreachable.add(target)
            log_event(
                logger,
                "worker_unreachable",
                logging.WARNING,
                worker=target,
                error=f"{type(error).__name__}: {error}",
                detail="its calls' connections are served where they arrive until it is back; "
                "their audio crosses Redis meanwhile",
            )

    def _open_inbox(self) -> gevent.socket.socket:
        path = inbox_path(self.route_folder, self.route_index)
        path.unlink(missing_ok=True)  # a worker this one replaces left it behind
        inbox = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        inbox.bind(str(path))
        return inbox

    def _receive(self, inbox: gevent.socket.socket) -> None:
        """Connections other processes hand over, each served here as if accepted here."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(inbox, 16, 1)
            except OSError as error:
                log_event(logger, "handover_failed", logging.WARNING, error=str(error))
                gevent.sleep(0.1)
                continue
            for fd in fds:
                client = gevent.socket.socket(fileno=fd)
                if not data or data[0] >= len(self.sockets):
                    client.close()
                    continue
                try:
                    address = client.getpeername()
                except OSError:
                    client.close()  # gone while it was handed over
                    continue
                # Served as gunicorn serves what it accepts, not routed again.
                self._handed.spawn(super().handle, self.sockets[data[0]], client, address)


def _peek_request_line(client: Any) -> bytes:
    """The connection's first bytes, up to the end of its request line, left unread."""
    deadline = time.monotonic() + PEEK_SECONDS
    while True:
        try:
            head: bytes = client.recv(MAX_REQUEST_LINE, socket.MSG_PEEK)
        except (OSError, ValueError):  # ValueError: TLS sockets take no flags
            return b""
        if not head or b"\r\n" in head or len(head) >= MAX_REQUEST_LINE:
            return head
        if time.monotonic() > deadline:
            return head
        gevent.sleep(0.005)  # the rest of the line is on its way


def make_route_folder() -> Path:
    """A folder only this user can use for the workers' inboxes (mkdtemp makes it 0700): a
    connection handed over is one the receiver serves as its own."""
    return Path(tempfile.mkdtemp(prefix="callrelay-workers-"))


POLLING_NEEDS_A_CALL = (
    b'{"error": "with several server processes (WORKERS) a long-polling Socket.IO client must '
    b"name the call it follows in the URL (?callSid=CA...), so that each of its requests "
    b'reaches the process that holds the call; or use the WebSocket transport"}'
)


def polling_needs_a_call(app: Any) -> Any:
    """WSGI middleware: a long-polling request that names no call is refused. Its session is
    in one process and each of its requests would reach any of them."""

    def refuse_unrouted_polling(environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("PATH_INFO", "").startswith("/socket.io"):
            return app(environ, start_response)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if query.get("transport") == ["polling"] and not query.get("callSid"):
            start_response(
                "400 Bad Request",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(POLLING_NEEDS_A_CALL))),
                ],
            )
            return [POLLING_NEEDS_A_CALL]
        return app(environ, start_response)

    return refuse_unrouted_polling
