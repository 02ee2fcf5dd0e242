"""The relay on gunicorn's gevent worker: one process, a greenlet per socket.

Every Twilio stream sends 100 messages a second and every listener receives as many: with an
OS thread per socket each message costs a thread wake-up, the largest part of the relay's CPU;
greenlets on one event loop cost a switch. `WORKERS` processes share the port; what they
share otherwise goes through Redis. With `ASR_PROCESSES` below `WORKERS`, the master starts the
recognition processes the workers share.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import gevent
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from callrelay.asr import SpeechEngine, load_engine
from callrelay.asr.process import connect_engine_process
from callrelay.asr.process.shared import SharedRecognition
from callrelay.config import Settings
from callrelay.relay import LOAD_FROM_SETTINGS
from callrelay.runtime import settle_heap
from callrelay.web.app import WebRelay, create_web_relay

WORKER_CONNECTIONS = 10_000
"""Sockets one process serves at once (Twilio streams, Socket.IO clients, HTTP requests)."""
SHUTDOWN_SECONDS = 20.0
"""SIGTERM or Ctrl-C: this long to end every call, transcribe what is pending and flush."""


class RelayServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, on_ready: Callable[[WebRelay], None]) -> None:
        self.settings = settings
        self.web: WebRelay | None = None
        self._on_ready = on_ready
        shared = settings.shared_recognition_processes
        self._recognition = (
            SharedRecognition(partial(load_engine, settings), shared) if shared else None
        )
        """Recognition processes the workers share (ASR_PROCESSES below WORKERS)."""
        self._recognition_socket: str | None = None
        self._announced = multiprocessing.Value("b", False)
        """Whether a worker has said it is ready: the first one does, for all of them."""
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        ports = [s.port] + ([s.browser_port] if s.browser_port else [])
        options: dict[str, Any] = {
            # The same app on each: PORT for Twilio and API clients, and the console's port
            # when browsers refuse PORT.
            "bind": [f"[{s.host}]:{p}" if ":" in s.host else f"{s.host}:{p}" for p in ports],
            "workers": s.worker_count,
            # Each worker listens on the port itself and the kernel spreads connections over
            # them; a WebSocket stays on the process it reached.
            "reuse_port": s.worker_count > 1,
            "worker_class": "gevent",
            "worker_connections": WORKER_CONNECTIONS,
            "timeout": 0,
            "graceful_timeout": int(SHUTDOWN_SECONDS) + 5,
            "post_worker_init": self._worker_ready,
            "keepalive": 5,
            "accesslog": None,
            # gunicorn's own messages go through callrelay's log handlers (logs.py), once.
            "errorlog": "/dev/null",
            "loglevel": "warning",
            "proc_name": "callrelay",
        }
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            options["child_exit"] = _forget_worker_metrics
        if self._recognition is not None:
            options.update(
                on_starting=lambda server: self._recognition.start(),
                pre_fork=self._give_recognition_socket,
                post_fork=self._take_recognition_socket,
                on_exit=lambda server: self._recognition.stop(),
            )
        for key, value in options.items():
            self.cfg.set(key, value)

    def run(self) -> None:
        """gunicorn's `run`, with a master that also keeps the shared recognition processes."""
        try:
            RelayArbiter(self).run()
        except RuntimeError as error:
            sys.exit(f"\nError: {error}\n")

    def check_recognition(self) -> None:
        if self._recognition is not None:
            self._recognition.check()

    def load(self) -> Any:
        """In a worker: build and start its relay. A relay that cannot start says why in one
        line and stops the server (gunicorn's worker boot error), with no traceback."""
        engine: SpeechEngine | Literal["load"] | None = LOAD_FROM_SETTINGS
        try:
            if self._recognition_socket is not None:
                engine = connect_engine_process(self._recognition_socket)
            self.web = create_web_relay(self.settings, engine)
        except Exception as error:
            print(f"callrelay: cannot start: {error}", file=sys.stderr, flush=True)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        return self.web.app

    def _give_recognition_socket(self, server: Any, worker: Any) -> None:
        """In the master, before a worker forks: the shared recognition process it uses."""
        assert self._recognition is not None
        worker.recognition_socket = self._recognition.least_used(
            getattr(running, "recognition_socket", None) for running in server.WORKERS.values()
        )

    def _take_recognition_socket(self, server: Any, worker: Any) -> None:
        self._recognition_socket = worker.recognition_socket

    def _worker_ready(self, worker: Any) -> None:
        settle_heap()
        self._install_shutdown(worker)
        with self._announced.get_lock():
            first, self._announced.value = not self._announced.value, True
        if self.web is not None and first:
            self._on_ready(self.web)

    def _install_shutdown(self, worker: Any) -> None:
        """In the worker: on SIGTERM, SIGINT or SIGQUIT, end calls cleanly, then let gunicorn's
        own graceful exit run (SIGINT and SIGQUIT would otherwise exit at once). The handler
        only starts the work: under gevent it runs in the event loop, which must go on
        serving the sockets being closed."""
        web = self.web
        started = threading.Event()

        def stop_then_exit(signum: int) -> None:
            if web is not None:
                web.relay.stop(SHUTDOWN_SECONDS)
            worker.handle_exit(signum, None)

        def shut_down(signum: int, frame: Any) -> None:
            if not started.is_set():
                started.set()
                gevent.spawn(stop_then_exit, signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, shut_down)


class RelayArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, which also keeps the shared recognition processes running. gunicorn
    has no hook that runs in the master's loop; `manage_workers` is the one this extends (the
    only use of gunicorn beyond its public API here, checked by tests/test_library_contracts.py).
    """

    def manage_workers(self) -> None:
        """Runs at least once a second in the master's loop."""
        super().manage_workers()
        self.app.check_recognition()


def _forget_worker_metrics(server: Any, worker: Any) -> None:
    """A worker that exits takes its live gauges with it (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def run_server(settings: Settings, on_ready: Callable[[WebRelay], None]) -> None:
    """Serve until stopped; `on_ready` runs once the relay takes calls."""
    RelayServer(settings, on_ready).run()
