"""A relay's connection to a recognition process: started here (over a pipe) or shared (over
a Unix socket), and waited on until its engine has loaded. These functions block the calling
thread; under gevent `select` is cooperative, so the wait never stalls the event loop."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection
from typing import Any, cast

from callrelay.asr import EngineUnavailable
from callrelay.asr.process.child import EngineFactory, relay_log_line, serve_engine
from callrelay.asr.process.messages import Loaded, LoadFailed, LogLine, NoEngine

START_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 5.0
CONNECT_RETRY_SECONDS = 0.2


class RecognitionLink:
    """A connection to a recognition process, and what this relay may do to that process."""

    def __init__(self, connection: Connection, loaded: Loaded, process: Any = None) -> None:
        self.connection = connection
        self.name = loaded.name
        self.sample_rate = loaded.sample_rate
        self.pid = loaded.pid
        self.process = process
        """The process, when this relay started it (and so stops it); None when shared."""

    def stop(self) -> None:
        """After `Stop` was sent: a process of our own is waited for (killed if it lingers);
        a shared one is only left."""
        if self.process is None:
            with contextlib.suppress(OSError):
                self.connection.close()
            return
        self.process.join(STOP_TIMEOUT_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(STOP_TIMEOUT_SECONDS)

    def exit_code(self) -> int | None:
        """Once the connection has closed: how the process ended, if it was ours."""
        if self.process is None:
            return None
        self.process.join(STOP_TIMEOUT_SECONDS)
        return cast(int | None, self.process.exitcode)


def spawn_link(factory: EngineFactory) -> RecognitionLink | None:
    """Start a recognition process and wait until its engine is loaded."""
    context = multiprocessing.get_context("spawn")
    relay_end, child_end = context.Pipe()
    for end in (relay_end, child_end):
        # A pipe made under gevent is non-blocking, and the child would inherit that; both
        # ends read whole messages, and the relay's only once `select` says one is there.
        os.set_blocking(end.fileno(), True)
    process = context.Process(
        target=serve_engine, args=(child_end, factory), name="callrelay-asr", daemon=True
    )
    process.start()
    child_end.close()

    def how_it_ended() -> str:
        process.join(STOP_TIMEOUT_SECONDS)
        return f"code {process.exitcode}"

    try:
        loaded = _await_loaded(relay_end, how_it_ended)
    except BaseException:
        process.kill()
        process.join(STOP_TIMEOUT_SECONDS)
        raise
    if loaded is None:
        process.join(STOP_TIMEOUT_SECONDS)
        return None
    return RecognitionLink(relay_end, loaded, process)


def connect_link(path: str) -> RecognitionLink | None:
    """Connect to a shared recognition process and wait until its engine is loaded."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            connection = Client(path, family="AF_UNIX")
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"no recognition process at {path}") from None
            time.sleep(CONNECT_RETRY_SECONDS)  # it is starting, or being restarted
    os.set_blocking(connection.fileno(), True)
    loaded = _await_loaded(connection, lambda: "shared")
    if loaded is None:
        connection.close()
        return None
    return RecognitionLink(connection, loaded)


def _await_loaded(connection: Connection, how_it_ended: Callable[[], str]) -> Loaded | None:
    """The process's answer to loading: its engine, None for no engine, or raise."""
    while True:
        if not readable(connection, START_TIMEOUT_SECONDS):
            raise EngineUnavailable("the speech engine did not load in time")
        try:
            message = connection.recv()
        except (EOFError, OSError):
            raise EngineUnavailable(
                f"the speech engine process exited while loading ({how_it_ended()})"
            ) from None
        match message:
            case LogLine():
                relay_log_line(message)
            case LoadFailed(error_type, text):
                if error_type == "EngineUnavailable":
                    raise EngineUnavailable(text)
                raise RuntimeError(f"speech engine failed to load: {error_type}: {text}")
            case NoEngine():
                return None
            case Loaded():
                return message


def readable(connection: Connection, timeout: float | None) -> bool:
    """Wait until `connection` has something to read (or has closed); False on timeout."""
    readable, _, _ = select.select([connection], [], [], timeout)
    return bool(readable)
