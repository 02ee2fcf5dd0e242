"""Only Twilio gets in: X-Twilio-Signature on /voice, /call-status and the /stream handshake."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from callrelay.config import load_settings
from callrelay.simulator.local_relay import RunningRelay
from callrelay.twilio.signatures import TwilioSignatures, public_base, sign
from callrelay.web.app import create_web_relay
from tests.helpers import AUTH_TOKEN

DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675310",
    "Digits": "1234",
    "From": "+14158675310",
    "To": "+18005551212",
}


def test_twilios_documented_example_validates() -> None:
    check = TwilioSignatures("12345").check_webhook(
        "https://example.com", "/myapp.php?foo=1&bar=2", DOC_PARAMS, "L/OH5YylLD5NRKLltdqwSvS0BnU="
    )
    assert check.valid
    tampered = {**DOC_PARAMS, "To": "+18005551213"}
    assert (
        not TwilioSignatures("12345")
        .check_webhook(
            "https://example.com",
            "/myapp.php?foo=1&bar=2",
            tampered,
            "L/OH5YylLD5NRKLltdqwSvS0BnU=",
        )
        .valid
    )


def test_stream_handshake_is_signed_over_the_public_wss_url() -> None:
    signatures = TwilioSignatures("tok")
    good = sign("tok", "wss://abc123.ngrok.app/stream")
    assert signatures.check_stream("https://abc123.ngrok.app", good).valid
    https_signed = sign("tok", "https://abc123.ngrok.app/stream")
    assert not signatures.check_stream("https://abc123.ngrok.app", https_signed).valid
    assert "no x-twilio-signature" in signatures.check_stream("https://a.b", None).reason


def test_a_stream_url_naming_its_call_is_signed_with_that_path() -> None:
    signatures = TwilioSignatures("tok")
    call_sid, other = "CA" + "1" * 32, "CA" + "2" * 32
    good = sign("tok", f"wss://abc123.ngrok.app/stream/{call_sid}")
    assert signatures.check_stream("https://abc123.ngrok.app", good, call_sid).valid
    assert not signatures.check_stream("https://abc123.ngrok.app", good, other).valid
    assert not signatures.check_stream("https://abc123.ngrok.app", good).valid


def test_public_base_prefers_public_url_then_forwarded_headers() -> None:
    assert public_base("https://abc.ngrok.app/", "http", "x", "http://localhost:6000/") == (
        "https://abc.ngrok.app"
    )
    assert public_base(None, "https", "abc.ngrok.app", "http://localhost:6000/") == (
        "https://abc.ngrok.app"
    )
    assert public_base(None, "", "", "http://localhost:6000/") == "http://localhost:6000"


def test_behind_a_proxy_the_public_url_is_what_is_checked(tmp_path: Path) -> None:
    relay = create_web_relay(
        load_settings(
            captures_dir=tmp_path, twilio_auth_token="tok", public_url="https://abc123.ngrok.app"
        ),
        speech_engine=None,
    )
    client = relay.app.test_client()
    params = {"CallSid": "CA1", "Direction": "inbound"}
    url = "https://abc123.ngrok.app/voice?bridgeTo=%2B14155550111"
    answer = client.post(
        "/voice?bridgeTo=%2B14155550111",
        data=params,
        headers={"X-Twilio-Signature": sign("tok", url, params)},
        base_url="http://localhost:6000",
    )
    assert answer.status_code == 200
    assert "+14155550111</Dial>" in answer.get_data(as_text=True)
    local = sign("tok", "http://localhost:6000/voice?bridgeTo=%2B14155550111", params)
    assert (
        client.post(
            "/voice?bridgeTo=%2B14155550111",
            data=params,
            headers={"X-Twilio-Signature": local},
            base_url="http://localhost:6000",
        ).status_code
        == 403
    )


VOICE_PARAMS = {"CallSid": "CA" + "a" * 32, "From": "+14155550100", "Direction": "inbound"}


@pytest.mark.parametrize("path", ["/voice", "/call-status"])
def test_unsigned_or_wrongly_signed_webhooks_are_refused(relay: RunningRelay, path: str) -> None:
    unsigned = relay.post(path, data=VOICE_PARAMS)
    assert unsigned.status_code == 403
    wrong = relay.post(
        path,
        data=VOICE_PARAMS,
        headers={"X-Twilio-Signature": sign("not-the-token", relay.url + path, VOICE_PARAMS)},
    )
    assert wrong.status_code == 403
    signed = relay.post(
        path,
        data=VOICE_PARAMS,
        headers={"X-Twilio-Signature": sign(AUTH_TOKEN, relay.url + path, VOICE_PARAMS)},
    )
    assert signed.status_code in (200, 204)
    rejected = [
        json.loads(line)
        for line in relay.log_file.read_text().splitlines()
        if '"signature_rejected"' in line
    ]
    assert any(
        line["path"] == path and "signature does not match" in line["reason"] for line in rejected
    )


def handshake_status(relay: RunningRelay, headers: dict[str, str], path: str = "/stream") -> int:
    """The status line the server answers a WebSocket upgrade with (101 or a refusal)."""
    port = int(relay.url.rsplit(":", 1)[1])
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = connection.recv(1024).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def test_unsigned_or_forged_stream_handshake_is_refused(relay: RunningRelay) -> None:
    assert handshake_status(relay, {"User-Agent": "Twilio.TmeWs/1.0"}) == 403
    assert handshake_status(relay, {"X-Twilio-Signature": sign("guess", relay.ws_url)}) == 403
    assert handshake_status(relay, relay.stream_headers()) == 101
    rejected = [
        json.loads(line)
        for line in relay.log_file.read_text().splitlines()
        if '"signature_rejected"' in line
    ]
    assert any(line["path"] == "/stream" for line in rejected)


def test_a_stream_handshake_to_a_calls_path_is_signed_over_that_path(
    relay: RunningRelay,
) -> None:
    call_sid = "CA" + "3" * 32
    path = f"/stream/{call_sid}"
    assert handshake_status(relay, relay.stream_headers(), path) == 403  # signed for /stream
    signed = {"X-Twilio-Signature": sign(AUTH_TOKEN, f"{relay.ws_url}/{call_sid}")}
    assert handshake_status(relay, signed, path) == 101
    assert handshake_status(relay, signed, f"/stream/{'CA' + '4' * 32}") == 403
