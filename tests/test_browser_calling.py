"""Browser calling through the Twilio Voice SDK: the access token the console gets, and the
TwiML `/voice` answers a call that comes from a browser through the TwiML App."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import jwt
import pytest
import requests

from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import new_sid
from callrelay.simulator.twiml_reader import read_twiml
from callrelay.twilio.signatures import sign
from tests.helpers import (
    ACCOUNT_SID,
    API_KEY,
    API_SECRET,
    APP_SID,
    AUTH_TOKEN,
    TWILIO_NUMBER,
    callrelay,
    start_relay,
)


def test_the_token_is_a_voice_sdk_jwt_signed_with_the_api_key(relay: RunningRelay) -> None:
    answer = relay.get_with_token("/token?identity=alice")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["identity"] == "alice" and body["ttlSeconds"] == 3600
    claims = jwt.decode(body["token"], API_SECRET, algorithms=["HS256"])  # checks the signature
    assert claims["iss"] == API_KEY and claims["sub"] == ACCOUNT_SID
    assert time.time() + 3500 < claims["exp"] <= time.time() + 3600
    assert claims["grants"]["identity"] == "alice"
    assert claims["grants"]["voice"]["outgoing"]["application_sid"] == APP_SID
    header = jwt.get_unverified_header(body["token"])
    assert header["cty"] == "twilio-fpa;v=1"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(body["token"], "another-secret-of-32-characters!", algorithms=["HS256"])


def test_the_token_needs_the_api_token_and_a_plain_identity(relay: RunningRelay) -> None:
    assert relay.get("/token").status_code == 401
    assert relay.get_with_token("/token").json()["identity"] == "console"
    for identity in ("client:alice", "a b", "x" * 122, "<script>"):
        answer = relay.get_with_token(f"/token?identity={quote(identity)}")
        assert answer.status_code == 400, identity


def test_without_the_app_and_api_key_the_token_says_what_is_missing(tmp_path: Path) -> None:
    bare = start_relay(tmp_path, {"ASR_ENGINE": "off"})
    try:
        answer = bare.get_with_token("/token")
        assert answer.status_code == 503
        assert answer.json()["missing"] == [
            "TWILIO_ACCOUNT_SID",
            "TWILIO_API_KEY",
            "TWILIO_API_SECRET",
            "TWILIO_APP_SID",
            "TWILIO_NUMBER",
        ]
    finally:
        stop_relay(bare)


def browser_webhook(relay: RunningRelay, to: str) -> tuple[str, str]:
    """What Twilio posts to the TwiML App's voice URL when a browser calls `to`; the CallSid
    and the TwiML answered."""
    call_sid = new_sid("CA")
    params = {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "ApplicationSid": APP_SID,
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": "",
        "Caller": "client:alice",
        "Direction": "inbound",
        "From": "client:alice",
        "To": to,
    }
    signature = sign(AUTH_TOKEN, relay.url + "/voice", params)
    answer = requests.post(
        relay.url + "/voice", data=params, headers={"X-Twilio-Signature": signature}, timeout=5
    )
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/xml")
    return call_sid, answer.text


def test_a_browser_call_streams_both_tracks_and_dials_the_number_from_ours(
    relay: RunningRelay,
) -> None:
    call_sid, twiml = browser_webhook(relay, "+14155550177")
    script = read_twiml(twiml)
    assert script.stream is not None and script.stream.url == f"{relay.ws_url}/{call_sid}"
    assert script.stream.tracks == ("inbound", "outbound")  # the browser is the Caller
    assert script.dial == "+14155550177" and script.caller_id == TWILIO_NUMBER
    history = relay.get_with_token(f"/calls/{call_sid}").json()
    assert history["from"] == "client:alice" and history["to"] == "+14155550177"


@pytest.mark.parametrize(
    ("to", "says"),
    [("not-a-number", "not a valid"), ("4155550177", "not a valid"), ("", "not a valid")],
)
def test_a_browser_call_to_a_bad_number_is_told_so_and_hung_up(
    relay: RunningRelay, to: str, says: str
) -> None:
    _, twiml = browser_webhook(relay, to)
    script = read_twiml(twiml)
    assert script.stream is None and script.dial is None
    assert says in " ".join(script.said) and "<Hangup" in twiml


def test_a_browser_call_outside_the_allowed_destinations_is_refused(tmp_path: Path) -> None:
    strict = start_relay(
        tmp_path,
        {"ASR_ENGINE": "off", "ALLOWED_DESTINATIONS": "+44", "TWILIO_AUTH_TOKEN": AUTH_TOKEN},
    )
    try:
        _, twiml = browser_webhook(strict, "+14155550177")
        assert "not allowed" in " ".join(read_twiml(twiml).said)
        _, allowed = browser_webhook(strict, "+442071234567")
        assert read_twiml(allowed).dial == "+442071234567"
        logged = [json.loads(line) for line in strict.log_file.read_text().splitlines()]
        assert any(
            line["evt"] == "destination_refused" and line.get("fromBrowser") for line in logged
        )
    finally:
        stop_relay(strict)


def test_the_simulator_plays_a_browser_call(tmp_path: Path) -> None:
    served = start_relay(tmp_path / "relay", {"ASR_ENGINE": "off"})
    try:
        result = callrelay(
            "simulate",
            "call",
            "--server",
            served.url,
            "--client",
            "alice",
            "--to",
            "+14155550178",
            "--token",
            served.api_token,
            "--speed",
            "0",
            "--caller",
            str(Path(__file__).parent / "data" / "call" / "caller.flac"),
            "--receiver",
            str(Path(__file__).parent / "data" / "call" / "receiver.flac"),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "from client:alice" in result.stdout and "TwiML dials +14155550178" in result.stdout
        listed = served.get_with_token("/calls").json()["calls"]
        assert listed[0]["from"] == "client:alice" and listed[0]["to"] == "+14155550178"
    finally:
        stop_relay(served)
