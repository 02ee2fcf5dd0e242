"""The relay on gunicorn's gevent worker: one process, a greenlet per socket.

Every Twilio stream sends 100 messages a second and every listener receives as many: with an
OS thread per socket each message costs a thread wake-up, the largest part of the relay's CPU;
greenlets on one event loop cost a switch. `WORKERS` processes share the port, and each
connection that names a call is served by that call's process (call_routing.py); what they
share otherwise goes through Redis. With `ASR_PROCESSES` below `WORKERS`, the master starts the
recognition processes the workers share.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
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
from callrelay.web.call_routing import CallRoutingWorker, free_index, make_route_folder

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
        self._route_folder: Path | None = None
        """Where the workers' inboxes are, for connections handed between them."""
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
        if s.worker_count > 1:
            options.update(
                # Each connection that names a call is handed to that call's process
                # (call_routing.py), which needs every request on a connection of its own:
                # a kept-alive connection would carry the next request, for another call,
                # to the process the first one chose.
                worker_class=CallRoutingWorker,
                keepalive=0,
            )
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            options["child_exit"] = _forget_worker_metrics
        options.update(
            on_starting=self._starting,
            pre_fork=self._before_fork,
            post_fork=self._after_fork,
            on_exit=self._exiting,
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

    # gunicorn's hooks, in the master (`_starting`, `_before_fork`, `_exiting`) and in a
    # new worker (`_after_fork`).

    def _starting(self, server: Any) -> None:
        if self.settings.worker_count > 1:
            self._route_folder = make_route_folder()
        if self._recognition is not None:
            self._recognition.start()

    def _before_fork(self, server: Any, worker: Any) -> None:
        """What a worker is given before it forks: its place among the workers (the calls it
        takes), and the shared recognition process it uses."""
        running = list(server.WORKERS.values())
        if isinstance(worker, CallRoutingWorker) and self._route_folder is not None:
            worker.route_folder = self._route_folder
            worker.route_index = free_index(
                (w.route_index for w in running), self.settings.worker_count
            )
        if self._recognition is not None:
            worker.recognition_socket = self._recognition.least_used(
                getattr(w, "recognition_socket", None) for w in running
            )

    def _after_fork(self, server: Any, worker: Any) -> None:
        self._recognition_socket = getattr(worker, "recognition_socket", None)

    def _exiting(self, server: Any) -> None:
        if self._recognition is not None:
            self._recognition.stop()
        if self._route_folder is not None:
            shutil.rmtree(self._route_folder, ignore_errors=True)

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
