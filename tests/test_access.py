"""Nobody who is not allowed places calls or listens to them."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import socketio

from callrelay.config import load_settings
from callrelay.simulator.local_relay import RunningRelay, free_port, stop_relay
from callrelay.simulator.observer import RelayObserver
from callrelay.web.app import create_web_relay
from tests.helpers import RELAY_TOKEN, callrelay, start_relay


@pytest.mark.parametrize("token", ["", "wrong-token-wrong-token"])
def test_control_endpoints_need_the_api_token(relay: RunningRelay, token: str) -> None:
    answer = relay.post("/make-call", token=token, json={"to": "+14155550123"})
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    assert "API token" in answer.json()["error"]
    hang_up = relay.post("/calls/CA" + "0" * 32 + "/hangup", token=token)
    assert hang_up.status_code == 401


@pytest.mark.parametrize("auth", [None, {"token": "wrong-token-wrong-token"}, {"callSid": "CA1"}])
def test_socketio_clients_without_the_token_are_refused(relay: RunningRelay, auth) -> None:
    client = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(relay.url, auth=auth, transports=["websocket"], wait_timeout=5)
    client.disconnect()
    assert '"client_refused"' in relay.log_file.read_text()


def relay_app(tmp_path: Path, **settings: object):
    relay = create_web_relay(
        load_settings(captures_dir=tmp_path, relay_api_token=RELAY_TOKEN, **settings),
        speech_engine=None,
    )
    return relay.app.test_client(), {"Authorization": f"Bearer {RELAY_TOKEN}"}


def test_destinations_outside_the_allow_list_are_refused(tmp_path: Path) -> None:
    client, auth = relay_app(tmp_path, allowed_destinations="+1,+4420")
    answer = client.post("/make-call", json={"to": "+447700900123"}, headers=auth)
    assert answer.status_code == 403 and answer.get_json()["allowed"] == ["+1", "+4420"]
    bridged = client.post(
        "/make-call", json={"to": "+14155550123", "bridgeTo": "+33123456789"}, headers=auth
    )
    assert bridged.status_code == 403
    allowed = client.post("/make-call", json={"to": "+442071234567"}, headers=auth)
    assert allowed.status_code == 503  # past the allow-list; Twilio is not configured here


def test_placing_calls_is_rate_limited(tmp_path: Path) -> None:
    client, auth = relay_app(tmp_path, make_call_limit=2)
    statuses = [
        client.post("/make-call", json={"to": "+14155550123"}, headers=auth) for _ in range(3)
    ]
    assert [s.status_code for s in statuses] == [503, 503, 429]
    assert int(statuses[2].headers["Retry-After"]) > 0


def test_without_a_configured_token_one_is_made_and_shown_once_on_the_console(
    tmp_path: Path,
) -> None:
    relay = start_relay(tmp_path, {"RELAY_API_TOKEN": "", "ASR_ENGINE": "off"})
    try:
        console = relay.server_output()
        found = re.search(r"API token +(\S+)", console)
        assert found, console
        token = found.group(1)
        saved = tmp_path / f".callrelay-token-{urlsplit(relay.url).port}"  # one per port
        assert saved.read_text().strip() == token
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert relay.post("/make-call", token="", json={"to": "+14155550123"}).status_code == 401
        assert relay.post("/make-call", token=token, json={"to": "+14155550123"}).status_code == 503
        observer = RelayObserver(relay.url, token=token)
        observer.close()
    finally:
        stop_relay(relay)
    assert token not in relay.log_file.read_text()
    assert console.count(token) == 1


def test_a_relay_that_fails_to_start_leaves_the_running_ones_token_alone(
    tmp_path: Path,
) -> None:
    running = start_relay(tmp_path, {"RELAY_API_TOKEN": "", "ASR_ENGINE": "off"}, port=6000)
    saved = tmp_path / ".callrelay-token"  # the default port's
    try:
        token = saved.read_text()
        (tmp_path / "a-file").write_text("")  # no folder can be made under it, even by root
        failed = callrelay(
            "serve",
            "--port",
            str(free_port()),
            cwd=tmp_path,
            env={"RELAY_API_TOKEN": "", "CAPTURES_DIR": str(tmp_path / "a-file" / "captures")},
        )
        assert failed.returncode == 2
        assert failed.stderr.count("\n") == 1, failed.stderr  # one line, no traceback
        assert "CAPTURES_DIR" in failed.stderr and "cannot write" in failed.stderr
        assert saved.read_text() == token
        assert running.post("/make-call", token=token.strip(), json={"to": "+1"}).status_code == 400
    finally:
        stop_relay(running)


def test_socketio_only_opens_to_the_allowed_web_origins(tmp_path: Path) -> None:
    """What a browser sends: an engine.io handshake with the page's Origin."""
    relay = start_relay(
        tmp_path, {"ASR_ENGINE": "off", "CORS_ALLOWED_ORIGINS": "https://app.example.com"}
    )
    handshake = "/socket.io/?EIO=4&transport=polling"
    try:
        allowed = requests.get(
            relay.url + handshake, headers={"Origin": "https://app.example.com"}, timeout=5
        )
        refused = requests.get(
            relay.url + handshake, headers={"Origin": "https://evil.example"}, timeout=5
        )
    finally:
        stop_relay(relay)
    assert allowed.status_code == 200 and '"sid"' in allowed.text
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert refused.status_code == 400
    assert "Access-Control-Allow-Origin" not in refused.headers
