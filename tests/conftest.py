"""Fixtures that run the real relay (`python app.py`) against the Twilio simulator."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from callrelay.simulator.audio_source import default_call_audio, load_telephone_audio
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.media_client import StreamOptions, StreamTarget, handshake_headers
from callrelay.simulator.observer import RelayObserver

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT_SID = "AC" + "5" * 32
AUTH_TOKEN = "test-auth-token-0123456789"
API_KEY = "SK" + "6" * 32
API_SECRET = "test-api-secret-abcdef"
TWILIO_NUMBER = "+15005550006"
RELAY_TOKEN = "test-relay-api-token-0123456789"


@pytest.fixture(autouse=True)
def restore_callrelay_logging() -> Iterator[None]:
    logger = logging.getLogger("callrelay")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers, logger.propagate, logger.level = handlers, propagate, level


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    """Poll until `predicate()` holds; fail the test when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


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

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        """POST with the API token (or another `token`; "" for none)."""
        token = self.api_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return requests.post(self.url + path, timeout=30, headers=headers, **kwargs)

    def server_output(self) -> str:
        return self.output.read_text(errors="replace")


def start_relay(tmp: Path, extra_env: dict[str, str]) -> RunningRelay:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        CAPTURES_DIR=str(tmp / "captures"),
        LOG_FILE=str(tmp / "media.log"),
        PYTHONUNBUFFERED="1",
        RELAY_API_TOKEN=RELAY_TOKEN,
    )
    env.update({name: value.replace("{port}", str(port)) for name, value in extra_env.items()})
    output = tmp / "server.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")],
            cwd=tmp,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
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
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("relay exited at start:\n" + relay.server_output())
        try:
            if relay.get("/").status_code == 200:
                return relay
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("relay did not start:\n" + relay.server_output())


def stop_relay(relay: RunningRelay) -> None:
    relay.process.terminate()
    try:
        relay.process.wait(15)
    except subprocess.TimeoutExpired:
        relay.process.kill()
        relay.process.wait()


@pytest.fixture(scope="module")
def fake_twilio() -> Iterator[FakeTwilio]:
    caller, receiver = default_call_audio()
    fake = FakeTwilio(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        api_key=API_KEY,
        api_secret=API_SECRET,
        caller_audio=load_telephone_audio(caller)[: 8000 * 6],
        receiver_audio=load_telephone_audio(receiver)[: 8000 * 6],
        stream_options=StreamOptions(speed=0),
    ).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, fake_twilio: FakeTwilio
) -> Iterator[RunningRelay]:
    tmp = tmp_path_factory.mktemp("relay")
    running = start_relay(
        tmp,
        {
            "ASR_ENGINE": "off",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_KEY": API_KEY,
            "TWILIO_API_SECRET": API_SECRET,
            "TWILIO_NUMBER": TWILIO_NUMBER,
            "TWILIO_API_BASE": fake_twilio.base_url,
            "PUBLIC_URL": "http://127.0.0.1:{port}",
        },
    )
    yield running
    stop_relay(running)
