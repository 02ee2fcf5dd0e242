"""Benchmark: an hour of a receiver's outage, compressed; what the outbox holds and how soon
it is delivered once the receiver is back.

    callrelay bench webhook-outage [--calls 400] [--finals 60] [--outage 60] [--retry-max 5]
    (or python -m benchmarks.webhook_outage)

The outbox and its delivery as the relay runs them (`SqliteOutbox`, `WebhookDelivery`), with a
real HTTP receiver on loopback. An hour of a busy relay's events (`--calls` calls, each
`call.started`, `--finals` finals, `call.ended`, `call.completed`) is written while the
receiver answers 503, as fast as they come; the retries go on for `--outage` seconds (the
waits capped at `--retry-max` seconds instead of 300: the compression), then the receiver
answers 204. Prints the time one event's write takes (what a call's task spends on it), the
outbox's size at the end of the outage, the tries the outage cost, and the time from the
receiver's return to the last delivery. Loopback only. Figures, not pass/fail.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # first, as `callrelay serve` does: the delivery's tasks are greenlets

import argparse  # noqa: E402
import base64  # noqa: E402
import http.server  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from callrelay.webhooks.delivery import WebhookDelivery, WebhookPolicy  # noqa: E402
from callrelay.webhooks.events import WebhookEvent  # noqa: E402
from callrelay.webhooks.outbox import OUTBOX_FILE, SqliteOutbox  # noqa: E402


class Receiver:
    """A receiver in a process of its own (spawned: nothing in it is gevent's) that counts
    what it is sent and answers 503 while `down` is set."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._down = context.Value("b", 1)
        self._tries = context.Value("q", 0)
        self._delivered = context.Value("q", 0)
        self._last = context.Value("d", 0.0)
        ready = context.Queue()
        context.Process(
            target=_serve,
            args=(self._down, self._tries, self._delivered, self._last, ready),
            daemon=True,
        ).start()
        self.url = f"http://127.0.0.1:{ready.get(timeout=30)}/hooks"

    def come_back(self) -> None:
        self._down.value = 0

    @property
    def tries(self) -> int:
        return int(self._tries.value)

    @property
    def delivered(self) -> int:
        return int(self._delivered.value)

    @property
    def last_delivered_at(self) -> float:
        return float(self._last.value)


def _serve(down: Any, tries: Any, delivered: Any, last: Any, ready: Any) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with tries.get_lock():
                tries.value += 1
            refused = bool(down.value)
            if not refused:
                with delivered.get_lock():
                    delivered.value += 1
                last.value = time.time()
            self.send_response(503 if refused else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ready.put(server.server_port)
    server.serve_forever()


def call_events(call_number: int, finals: int) -> list[WebhookEvent]:
    call_sid = f"CA{call_number:032x}"
    data = {"callSid": call_sid, "streamSid": f"MZ{call_number:032x}"}
    text = {"text": "I am calling about my order, it has not arrived yet.", "speaker": "Caller"}
    return [
        WebhookEvent.new("call.started", call_sid, {**data, "tracks": ["inbound", "outbound"]}),
        *(
            WebhookEvent.new("transcript.final", call_sid, {**data, **text, "start": n * 3.0})
            for n in range(finals)
        ),
        WebhookEvent.new("call.ended", call_sid, {**data, "reason": "stop"}),
        WebhookEvent.new("call.completed", call_sid, {**data, "seconds": finals * 3.0}),
    ]


def main() -> None:
    logging.getLogger("callrelay").addHandler(logging.NullHandler())  # retries are expected
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls in the hour")
    parser.add_argument("--finals", type=int, default=60, help="finals per call")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the receiver is down")
    parser.add_argument("--retry-max", type=float, default=5.0, help="longest wait between tries")
    args = parser.parse_args()
    receiver = Receiver()
    folder = Path(tempfile.mkdtemp(prefix="callrelay-outbox-"))
    outbox = SqliteOutbox(folder / OUTBOX_FILE)
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    delivery = WebhookDelivery(
        outbox,
        WebhookPolicy([receiver.url], secret, 5.0, args.retry_max, 86_400.0),
    )
    delivery.start()
    started = time.monotonic()
    writes = []
    for number in range(args.calls):
        for event in call_events(number, args.finals):
            before = time.perf_counter()
            delivery.enqueue(event)
            writes.append(time.perf_counter() - before)
    written = time.monotonic() - started
    time.sleep(max(0.0, args.outage - written))
    backlog = outbox.backlog()
    size = sum(path.stat().st_size for path in folder.iterdir())
    tries_while_down = receiver.tries
    receiver.come_back()
    back = time.time()
    while outbox.backlog().pending:
        time.sleep(0.2)
    drained = receiver.last_delivered_at - back
    writes.sort()
    p50, p99 = statistics.median(writes) * 1e6, writes[int(len(writes) * 0.99)] * 1e6
    print(
        f"{len(writes)} events of {args.calls} calls written in {written:.1f} s; one write: "
        f"p50 {p50:.0f} us, p99 {p99:.0f} us, max {writes[-1] * 1e3:.1f} ms"
    )
    print(
        f"after {args.outage:.0f} s down: {backlog.pending} deliveries waiting, the outbox "
        f"{size / 1e6:.1f} MB on disk ({size / max(1, backlog.pending):.0f} bytes each), "
        f"{tries_while_down} tries refused ({args.calls} chains, waits capped at "
        f"{args.retry_max:g} s)"
    )
    print(
        f"receiver back: every delivery made {drained:.1f} s later "
        f"({receiver.delivered} delivered, {receiver.delivered / max(drained, 0.001):.0f} a second)"
    )
    delivery.stop()
    outbox.close()


if __name__ == "__main__":
    main()
