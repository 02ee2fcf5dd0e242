"""The one place callrelay reaches into python-engineio's internals: each client's packet queue.

python-engineio queues every packet for every client without limit and has no public API to
see or trim that queue, so a client that reads slowly would make the server's memory grow for
as long as it stays. This module reads a client's queue (`Server.sockets`, `Socket.queue`) and
drops its oldest audio packets, recognised by how python-socketio encodes an event
(`2["media_in",...`). `tests/test_engineio_contract.py` checks each of these assumptions against
the installed release; `pyproject.toml` pins python-engineio to the releases it was checked on.
"""

from __future__ import annotations

import contextlib
from typing import Any

from callrelay.tracks import MEDIA_EVENTS

_AUDIO_PACKET_PREFIXES = tuple(f'2["{name}"' for name in MEDIA_EVENTS.values())
"""A Socket.IO EVENT packet (type 2) on the default namespace, as python-socketio encodes it."""


def engineio_clients(eio: Any) -> list[Any]:
    """The server's connected engine.io clients (`engineio.Server.sockets`)."""
    return list(eio.sockets.values())


def client_queue(eio: Any, eio_sid: str) -> Any | None:
    """The packets waiting to be written to one client, or None if it is gone."""
    return getattr(eio.sockets.get(eio_sid), "queue", None)


def queued_packets(client: Any) -> int:
    return int(client.queue.qsize())


def is_audio_packet(packet: Any) -> bool:
    data = getattr(packet, "data", None)
    return isinstance(data, str) and data.startswith(_AUDIO_PACKET_PREFIXES)


def drop_oldest_audio(waiting: Any, keep: int) -> int:
    """Remove audio packets from the front of a client's queue until `keep` packets remain;
    how many went.

    The queue is gevent's (or, in a threaded server, the standard library's); either way its
    items sit in the `queue` deque, and each one taken out is marked done, as a writer would."""
    with getattr(waiting, "mutex", contextlib.nullcontext()):
        packets = waiting.queue
        excess = len(packets) - keep
        kept = []
        dropped = 0
        while packets and dropped < excess:
            packet = packets.popleft()
            if is_audio_packet(packet):
                dropped += 1
            else:
                kept.append(packet)
        packets.extendleft(reversed(kept))
    for _ in range(dropped):
        waiting.task_done()
    return dropped
