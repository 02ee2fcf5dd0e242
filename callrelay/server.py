"""`python app.py`: the relay on gunicorn's threaded worker (one process, a thread per socket).

One worker process because Socket.IO rooms and the call registry live in memory; threads
because every Twilio stream and Socket.IO WebSocket holds one for its whole life.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from gunicorn.app.base import BaseApplication
from pydantic import SecretStr

from callrelay import __version__
from callrelay.access import TOKEN_FILE, generate_token, write_token_file
from callrelay.config import ConfigError, Settings, load_settings
from callrelay.logs import configure_logging, log_event
from callrelay.runtime import settle_heap
from callrelay.web.app import Relay, create_relay

logger = logging.getLogger("callrelay.server")


SHUTDOWN_SECONDS = 20.0
"""SIGTERM or Ctrl-C: this long to end every call, transcribe what is pending and flush."""


class RelayServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.relay: Relay | None = None
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
        self.relay = create_relay(self.settings)
        return self.relay.app

    def _worker_ready(self, worker: Any) -> None:
        settle_heap()
        self._install_shutdown(worker)

    def _install_shutdown(self, worker: Any) -> None:
        """In the worker: on SIGTERM, SIGINT or SIGQUIT, end calls cleanly, then let gunicorn's
        own graceful exit run (SIGINT and SIGQUIT would otherwise exit at once)."""
        relay = self.relay
        done = threading.Event()

        def shut_down(signum: int, frame: Any) -> None:
            if relay is not None and not done.is_set():
                done.set()
                relay.shutdown(SHUTDOWN_SECONDS)
            worker.handle_exit(signum, frame)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, shut_down)


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"callrelay: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.relay_api_token is None:
        token = generate_token()
        settings = settings.model_copy(update={"relay_api_token": SecretStr(token)})
        saved = ""
        try:
            write_token_file(token)
            saved = f" (saved to {TOKEN_FILE}, readable by you only)"
        except OSError:
            pass
        # Console only, once: the log file never sees it (and redacts it if it ever would).
        print(
            f"callrelay: API token{saved}:\n    {token}\n"
            "  send it as 'Authorization: Bearer <token>' to /make-call and as "
            "auth={'token': <token>} when connecting to Socket.IO; set RELAY_API_TOKEN to choose "
            "your own",
            file=sys.stderr,
            flush=True,
        )
    configure_logging(settings.log_file, settings.log_level, settings.secrets())
    log_event(
        logger,
        "server_starting",
        version=__version__,
        host=settings.host,
        port=settings.port,
        captures=str(settings.captures_dir),
        callingConfigured=not settings.calling_missing(),
    )
    RelayServer(settings).run()
