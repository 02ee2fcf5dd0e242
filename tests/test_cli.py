"""`callrelay`: one tool whose every command explains itself, and a server that says what's next."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from callrelay import __version__
from callrelay.simulator.local_relay import (
    READY_BANNER,
    START_TIMEOUT_SECONDS,
    RunningRelay,
    free_port,
)
from tests.helpers import RELAY_TOKEN, callrelay, wait_for

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["simulate"],
        ["simulate", "call"],
        ["simulate", "rest"],
        ["simulate", "fuzz"],
        ["bench"],
    ],
)
def test_every_command_prints_help_and_exits_0(command: list[str], tmp_path: Path) -> None:
    result = callrelay(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: callrelay")
    assert not list(tmp_path.iterdir())  # nothing started, no token written


def test_simulate_rest_help_names_its_port_and_environment(tmp_path: Path) -> None:
    text = callrelay("simulate", "rest", "--help", cwd=tmp_path).stdout
    assert "--port PORT" in text and "default 6100" in text
    assert "TWILIO_ACCOUNT_SID" in text and "TWILIO_AUTH_TOKEN" in text


def test_version(tmp_path: Path) -> None:
    result = callrelay("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"callrelay {__version__}"


def test_a_port_in_use_is_refused_at_once_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = callrelay("serve", "--host", "127.0.0.1", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "PORT=" in result.stderr


def test_python_app_py_still_runs_the_server(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "ASR_ENGINE": "off"}
    env["RELAY_API_TOKEN"] = RELAY_TOKEN
    with (tmp_path / "out").open("w") as out:
        server = subprocess.Popen(
            [sys.executable, str(REPO / "app.py")], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:

        def ready_or_gone() -> bool:
            return READY_BANNER in (tmp_path / "out").read_text() or server.poll() is not None

        wait_for(ready_or_gone, timeout=START_TIMEOUT_SECONDS)
        assert server.poll() is None, (tmp_path / "out").read_text()
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).ok
        console = (tmp_path / "out").read_text()
        assert f"ready on http://127.0.0.1:{port}" in console
        assert "callrelay simulate call" in console  # the next step
        assert f"http://127.0.0.1:{port}/console" in console
        assert RELAY_TOKEN not in console  # a configured token is never shown
    finally:
        server.terminate()
        server.wait(20)


def test_several_workers_without_redis_refuse_to_start(tmp_path: Path) -> None:
    result = callrelay("serve", cwd=tmp_path, env={"WORKERS": "2", "REDIS_URL": ""})
    assert result.returncode == 2
    assert "WORKERS=2 needs REDIS_URL" in result.stderr


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = callrelay(cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("usage: callrelay")


def test_a_simulated_call_checks_its_audio_and_token_before_the_relay_hears_of_it(
    relay: RunningRelay, tmp_path: Path
) -> None:
    calls_before = relay.get_with_token("/calls").json()["calls"]
    missing = callrelay(
        *("simulate", "call", "--server", relay.url, "--token", relay.api_token),
        *("--caller", str(tmp_path / "nonexistent.wav")),
        cwd=tmp_path,
    )
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr and "nonexistent.wav" in missing.stderr
    assert "Traceback" not in missing.stderr
    wrong = callrelay(
        "simulate", "call", "--server", relay.url, "--token", "not-the-token-0123456789"
    )
    assert wrong.returncode == 1 and "wrong API token" in wrong.stderr, wrong.stderr
    assert relay.get_with_token("/calls").json()["calls"] == calls_before  # no call left behind
