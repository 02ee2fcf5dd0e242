"""A hostile Media Streams peer: many connections sending what Twilio never would.

Each connection is signed (so it reaches the protocol, not just the signature check) and sends
a short script of bad input: garbage text, binary frames, media before start, a second start,
bad base64, unknown tracks, odd payloads, absurd timestamps, oversized frames, floods. It
counts what it sent and how the server closed each connection.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

from simple_websocket import Client, ConnectionClosed

from callrelay.close_codes import CloseCode
from callrelay.simulator.media_client import (
    StreamTarget,
    handshake_headers,
    new_sid,
)
from callrelay.twilio import media_stream as msg

MAX_REFUSED_HANDSHAKES = 20
"""A server that refuses the handshake (a wrong signature, say) is not being fuzzed at all."""


@dataclass
class FuzzReport:
    messages: int = 0
    connections: int = 0
    close_codes: Counter[int] = field(default_factory=Counter)
    refused_handshakes: int = 0


def _start(stream_sid: str, call_sid: str) -> str:
    return msg.start_message(
        stream_sid=stream_sid,
        account_sid="AC" + "0" * 32,
        call_sid=call_sid,
        tracks=("inbound", "outbound"),
        custom_parameters={},
        sequence_number=1,
    )


def _media(stream_sid: str, rng: random.Random, **changes: object) -> str:
    message = json.loads(
        msg.media_message(
            stream_sid=stream_sid,
            track=rng.choice(["inbound", "outbound"]),
            chunk=1,
            timestamp_ms=rng.randrange(0, 100_000),
            payload=bytes(rng.randrange(256) for _ in range(160)),
            sequence_number=rng.randrange(1, 1000),
        )
    )
    message["media"].update(changes)
    return json.dumps(message)


def bad_script(rng: random.Random) -> list[str | bytes]:
    """One connection's worth of bad input; some scripts start a call first, some do not."""
    stream_sid = new_sid("MZ")
    kind = rng.randrange(10)
    call_sid = new_sid("CA")
    prefix: list[str | bytes] = [msg.connected_message(), _start(stream_sid, call_sid)]
    # Bad frames in a live call are dropped and the call goes on; Twilio's stop ends it.
    stop = msg.stop_message(
        stream_sid=stream_sid, account_sid="AC" + "0" * 32, call_sid=call_sid, sequence_number=999
    )
    if kind == 0:
        return [rng.randbytes(rng.randrange(1, 200)).decode("latin-1") for _ in range(5)]
    if kind == 1:
        return [rng.randbytes(rng.randrange(1, 500))]
    if kind == 2:
        return [_media(stream_sid, rng)]  # media before start
    if kind == 3:
        return [*prefix, _start(stream_sid, call_sid)]  # a second start
    if kind == 4:
        return [
            *prefix,
            *(_media(stream_sid, rng, payload="*not base64*") for _ in range(20)),
            stop,
        ]
    if kind == 5:
        return [
            *prefix,
            *(
                _media(stream_sid, rng, track=rng.choice(["inbound_track", "both", 7, None]))
                for _ in range(20)
            ),
            stop,
        ]
    if kind == 6:
        odd = base64.b64encode(rng.randbytes(rng.randrange(1, 7))).decode()
        return [*prefix, *(_media(stream_sid, rng, payload=odd) for _ in range(20)), stop]
    if kind == 7:
        return [
            *prefix,
            *(_media(stream_sid, rng, timestamp=str(10**12 + i)) for i in range(20)),
            stop,
        ]
    if kind == 8:
        return [*prefix, "x" * rng.randrange(65_537, 100_000)]
    return [*prefix, *(_media(stream_sid, rng) for _ in range(60)), "{", "[]"]  # flood, then junk


def fuzz_streams(
    target: StreamTarget, messages: int, *, threads: int = 4, seed: int = 1
) -> FuzzReport:
    report = FuzzReport()
    lock = threading.Lock()

    def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        while True:
            with lock:
                if report.messages >= messages:
                    return
            script = bad_script(rng)
            try:
                ws = Client.connect(target.connect_url, headers=handshake_headers(target))
            except Exception:
                with lock:
                    report.refused_handshakes += 1
                    if report.refused_handshakes >= MAX_REFUSED_HANDSHAKES:
                        return
                continue
            sent = 0
            code = 1000
            try:
                for item in script:
                    ws.send(item)
                    sent += 1
                while ws.receive(timeout=2) is not None:
                    pass
                code = -1  # the server kept it open: its idle timeout will end it
            except ConnectionClosed as closed:
                code = int(closed.reason)
            except OSError:
                code = CloseCode.ABNORMAL
            finally:
                with contextlib.suppress(ConnectionClosed, OSError):
                    ws.close()
            with lock:
                report.messages += sent
                report.connections += 1
                report.close_codes[code] += 1

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return report
