"""A real HTTP webhook receiver on loopback, the way a user's would be: it verifies each
delivery with the `standardwebhooks` library and answers as the test tells it (accept,
fail, ask to retry later, hang)."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass(frozen=True)
class Answer:
    status: int = 204
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    """Seconds to wait before answering (a receiver that hangs)."""


@dataclass(frozen=True)
class Received:
    at: float
    webhook_id: str
    headers: dict[str, str]
    payload: dict[str, Any]
    """The verified body."""
    status: int
    """What the receiver answered."""


class WebhookReceiver:
    def __init__(self, secret: str, port: int = 0) -> None:
        self.secret = secret
        self.answer: Callable[[Received], Answer] = lambda _: Answer()
        self.received: list[Received] = []
        self.refused: list[str] = []
        """Deliveries whose signature did not verify."""
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except Exception as error:
                    receiver.refused.append(str(error))
                    self.send_response(401)
                    self.end_headers()
                    return
                seen = Received(time.time(), headers["webhook-id"], headers, payload, 0)
                answer = receiver.answer(seen)
                time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    return  # the relay gave up waiting
                with receiver._changed:
                    receiver.received.append(
                        Received(seen.at, seen.webhook_id, headers, payload, answer.status)
                    )
                    receiver._changed.notify_all()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def accepted(self, call_sid: str | None = None) -> list[dict[str, Any]]:
        """The payloads answered with a 2xx, in the order they came."""
        return [
            r.payload
            for r in list(self.received)
            if 200 <= r.status < 300 and (call_sid is None or _call_sid(r.payload) == call_sid)
        ]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; received {[r.payload['type'] for r in self.received]}"
                self._changed.wait(min(left, 0.5))

    def wait_for_call(self, call_sid: str, events: int = 3, timeout: float = 60.0) -> None:
        """Until `events` deliveries of the call have been accepted."""
        self.wait_for(lambda: len(self.accepted(call_sid)) >= events, timeout)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _call_sid(payload: dict[str, Any]) -> str | None:
    sid = payload.get("data", {}).get("callSid")
    return str(sid) if sid else None
