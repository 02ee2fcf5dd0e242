"""Where the relay's background work runs, said in one place.

`callrelay serve` patches the standard library with gevent before anything else is imported
(`cli.main`): in the server process, `threading.Thread`, locks, `time.sleep`, sockets and
`select` are gevent's, so every task started here is a greenlet of the one event loop, and a
task that blocks on I/O yields to the others. A task that computes for long holds the loop:
recognition therefore runs in a process of its own (`asr/process/`), where nothing is patched
and threads are OS threads. The same classes also run unpatched in tests and benchmarks, where
these are OS threads; they are written to be right either way (each guards its state with a
lock).

The relay's long-lived tasks are started with `start_task`, so a reader finds them all with
one search.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


def start_task(name: str, target: Callable[..., object], *args: Any) -> threading.Thread:
    """Start `target(*args)` in the background: a greenlet of the event loop under
    `callrelay serve`, else an OS thread. Daemonic: it never holds the process open."""
    task = threading.Thread(target=target, args=args, name=name, daemon=True)
    task.start()
    return task


def run_in_os_thread(target: Callable[..., T], *args: Any) -> T:
    """`target(*args)` in an OS thread, for work that holds the CPU inside a C library that
    releases the GIL (encoding audio): under `callrelay serve`, in gevent's pool of real threads
    while the calling greenlet waits and the loop runs on; elsewhere, in the calling thread."""
    if _gevent_patched():
        import gevent

        return cast(T, gevent.get_hub().threadpool.apply(target, args))
    return target(*args)


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))
