"""The relay on gunicorn's gevent worker: one process, a greenlet per socket.

Every Twilio stream sends 100 messages a second and every listener receives as many: with an
OS thread per socket each message costs a thread wake-up, the largest part of the relay's CPU;
greenlets on one event loop cost a switch. One worker process because Socket.IO rooms and the
call registry live in memory.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import gevent
from gunicorn.app.base import BaseApplication

from callrelay.config import Settings
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
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}",
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
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "callrelay",
        }
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            options["child_exit"] = _forget_worker_metrics
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        self.web = create_web_relay(self.settings)
        return self.web.app

    def _worker_ready(self, worker: Any) -> None:
        settle_heap()
        self._install_shutdown(worker)
        if self.web is not None:
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


def _forget_worker_metrics(server: Any, worker: Any) -> None:
    """A worker that exits takes its live gauges with it (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def run_server(settings: Settings, on_ready: Callable[[WebRelay], None]) -> None:
    """Serve until stopped; `on_ready` runs once the relay takes calls."""
    RelayServer(settings, on_ready).run()
