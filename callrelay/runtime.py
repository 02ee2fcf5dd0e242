"""Process-wide tuning for the two long-lived processes: the relay and the recognition process."""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 20_000
"""Allocations between two collections of the youngest generation (Python's default: 700).
Every media message allocates a few dozen short-lived objects (JSON, WebSocket events, the
call's records); at 100 messages a second per call the default collected hundreds of times a
second, a large share of the relay's CPU."""


def settle_heap() -> None:
    """Once a process has loaded everything it keeps for its life (modules, app, model): leave
    those objects out of every later garbage collection, and collect less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle * 2, old * 2)
