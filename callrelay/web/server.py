"""The relay on gunicorn's threaded worker (one process, a thread per socket).

One worker process because Socket.IO rooms and the call registry live in memory; threads
because every Twilio stream and Socket.IO WebSocket holds one for its whole life.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from callrelay.config import Settings
from callrelay.runtime import settle_heap
from callrelay.web.app import WebRelay, create_web_relay

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
            "workers": 1,
            "worker_class": "gthread",
            "threads": s.threads,
            "timeout": 0,
            "graceful_timeout": int(SHUTDOWN_SECONDS) + 5,
            "post_worker_init": self._worker_ready,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "callrelay",
        }
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
        own graceful exit run (SIGINT and SIGQUIT would otherwise exit at once)."""
        web = self.web
        done = threading.Event()

        def shut_down(signum: int, frame: Any) -> None:
            if web is not None and not done.is_set():
                done.set()
                web.relay.stop(SHUTDOWN_SECONDS)
            worker.handle_exit(signum, frame)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, shut_down)


def run_server(settings: Settings, on_ready: Callable[[WebRelay], None]) -> None:
    """Serve until stopped; `on_ready` runs once the relay takes calls."""
    RelayServer(settings, on_ready).run()
