"""The relay as its own process (`callrelay serve` on a free loopback port), for the tests,
the benchmarks and demos: what a user runs, started and stopped from Python."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from callrelay.access import generate_token
from callrelay.simulator.media_client import StreamTarget, handshake_headers
from callrelay.simulator.observer import RelayObserver

READY_BANNER = " is ready on "
"""What `callrelay serve` prints once it takes calls (its speech model loaded)."""
START_TIMEOUT_SECONDS = 180.0
"""Only for a relay that hangs: loading the speech model on a busy machine takes a while."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningRelay:
    url: str
    ws_url: str
    captures: Path
    log_file: Path
    process: subprocess.Popen[bytes]
    output: Path
    auth_token: str | None = None
    api_token: str = ""

    def observer(self, *args: Any, **kwargs: Any) -> RelayObserver:
        """A Socket.IO client of this relay, with its API token unless given another."""
        kwargs.setdefault("token", self.api_token)
        return RelayObserver(self.url, *args, **kwargs)

    def stream_target(self) -> StreamTarget:
        """Where a simulated Twilio stream goes, signed as Twilio would sign it."""
        return StreamTarget(self.ws_url, self.ws_url, self.auth_token)

    def stream_headers(self) -> dict[str, str]:
        return handshake_headers(self.stream_target())

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)

    def get_with_token(self, path: str, timeout: float = 10) -> requests.Response:
        return requests.get(
            self.url + path, headers={"Authorization": f"Bearer {self.api_token}"}, timeout=timeout
        )

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        """POST with the API token (or another `token`; "" for none)."""
        token = self.api_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return requests.post(self.url + path, timeout=30, headers=headers, **kwargs)

    def server_output(self) -> str:
        return self.output.read_text(errors="replace")


def start_relay(
    tmp: Path, extra_env: dict[str, str], *, api_token: str | None = None, port: int | None = None
) -> RunningRelay:
    """Start the relay with its files under `tmp`; `api_token` (a new one if not given) is the
    token its clients must present; `port` a free one unless given."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        CAPTURES_DIR=str(tmp / "captures"),
        LOG_FILE=str(tmp / "media.log"),
        PYTHONUNBUFFERED="1",
        RELAY_API_TOKEN=api_token or generate_token(),
    )
    env.update({name: value.replace("{port}", str(port)) for name, value in extra_env.items()})
    output = tmp / "server.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "callrelay", "serve"],
            cwd=tmp,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, as a terminal's: Ctrl-C reaches all
        )
    relay = RunningRelay(
        f"http://127.0.0.1:{port}",
        f"ws://127.0.0.1:{port}/stream",
        tmp / "captures",
        tmp / "media.log",
        process,
        output,
        extra_env.get("TWILIO_AUTH_TOKEN"),
        env["RELAY_API_TOKEN"],
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("relay exited at start:\n" + relay.server_output())
        if READY_BANNER in relay.server_output():
            return relay
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError("relay did not start:\n" + relay.server_output())


def stop_relay(relay: RunningRelay) -> None:
    relay.process.terminate()
    try:
        relay.process.wait(15)
    except subprocess.TimeoutExpired:
        relay.process.kill()
        relay.process.wait()
