"""Placing and hanging up calls through the real twilio library and the fake Twilio REST API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from callrelay.config import load_settings
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.local_relay import RunningRelay
from callrelay.web.app import create_web_relay
from tests.helpers import API_KEY, API_SECRET, AUTH_TOKEN, RELAY_TOKEN, TWILIO_NUMBER, wait_for


def test_make_call_places_it_through_twilio_and_its_audio_arrives(
    relay: RunningRelay, fake_twilio: FakeTwilio
) -> None:
    observer = relay.observer()
    try:
        answer = relay.post("/make-call", json={"to": "+14155550123"})
        assert answer.status_code == 200, answer.text
        call_sid = answer.json()["callSid"]
        assert call_sid.startswith("CA") and answer.json()["status"] == "queued"
        call = fake_twilio.wait_for_call(call_sid)
        assert observer.ended.wait(10)
        wait_for(
            lambda: any(
                d.get("callStatus") == "completed" for n, d in observer.events if n == "call_status"
            )
        )
    finally:
        observer.close()
    request = fake_twilio.requests[-1]
    assert request["auth_user"] == API_KEY  # API key auth when a key is configured
    assert request["form"]["To"] == ["+14155550123"]
    assert request["form"]["From"] == [TWILIO_NUMBER]
    assert request["form"]["Url"] == [relay.url + "/voice"]
    assert request["form"]["StatusCallbackEvent"] == [
        "initiated",
        "ringing",
        "answered",
        "completed",
    ]
    assert call.webhook_status == 200 and call.errors == []
    assert call.script is not None and call.script.stream is not None
    # The CallSid in the path, for a load balancer to hash on (Twilio refuses a query string).
    assert call.script.stream.url == f"{relay.ws_url}/{call_sid}"
    started = next(d for n, d in observer.events if n == "call_started")
    assert started["callSid"] == call_sid
    statuses = [d["callStatus"] for n, d in observer.events if n == "call_status"]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]
    # No <Dial>: the outbound track carries only Twilio's silence during the <Pause>.
    assert observer.counts["media_in"] == observer.counts["media_out"] == 300


def test_make_call_with_bridge_dials_the_second_party(
    relay: RunningRelay, fake_twilio: FakeTwilio
) -> None:
    answer = relay.post("/make-call", data={"to": "+14155550123", "bridgeTo": "+14155550124"})
    assert answer.status_code == 200, answer.text
    call = fake_twilio.wait_for_call(answer.json()["callSid"])
    assert call.script is not None and call.script.dial == "+14155550124"


def test_hang_up_ends_the_call_and_its_stream(
    relay: RunningRelay, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callrelay.simulator.media_client import StreamOptions

    monkeypatch.setattr(fake_twilio, "stream_options", StreamOptions(speed=1))
    observer = relay.observer(keep_audio=True)

    def frames_of(call_sid: str) -> int:
        return sum(1 for n, d in observer.audio if n == "media_in" and d["callSid"] == call_sid)

    try:
        call_sid = relay.post("/make-call", json={"to": "+14155550123"}).json()["callSid"]
        wait_for(lambda: frames_of(call_sid) > 10)  # this call is streaming
        answer = relay.post(f"/calls/{call_sid}/hangup")
        assert answer.status_code == 200 and answer.json()["status"] == "completed"
        call = fake_twilio.wait_for_call(call_sid, timeout=10)
        wait_for(
            lambda: any(n == "call_ended" and d["callSid"] == call_sid for n, d in observer.events)
        )
    finally:
        observer.close()
    assert call.report is not None and call.report.hung_up
    assert frames_of(call_sid) < 250  # well short of the 6 s of audio


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"to": "4155550123"}, 400, "E.164"),
        ({}, 400, "E.164"),
        ({"to": "+14155550123", "bridgeTo": "bob"}, 400, "bridgeTo"),
        ({"to": "+15005550001"}, 502, "does not appear to be valid"),
        ({"to": "+15005550002"}, 502, "cannot be reached"),
    ],
)
def test_make_call_errors_are_json_with_a_clear_message(
    relay: RunningRelay, body: dict[str, Any], status: int, says: str
) -> None:
    answer = relay.post("/make-call", json=body)
    assert answer.status_code == status
    assert says in answer.json()["error"]
    if status == 502:
        assert answer.json()["twilioCode"] in (21217, 21214)


def test_a_body_that_is_not_json_is_told_so(relay: RunningRelay) -> None:
    answer = relay.post(
        "/make-call", data='{"to": "+14155550123",', headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("the body is not valid JSON")


def test_a_form_number_whose_plus_arrived_as_a_space_is_repaired_and_logged(
    relay: RunningRelay, fake_twilio: FakeTwilio
) -> None:
    """`curl -d to=+14155550123` sends `to= 14155550123`: a space then digits was a `+`."""
    answer = relay.post(
        "/make-call",
        data="to=+14155550123",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200, answer.text
    call_sid = answer.json()["callSid"]
    wait_for(lambda: fake_twilio.calls.get(call_sid) is not None)
    assert fake_twilio.calls[call_sid].to == "+14155550123"
    assert '"number_repaired"' in relay.log_file.read_text()
    relay.post(f"/calls/{call_sid}/hangup")
    for garbage in ("to=+1415555abcd", "to=++14155550123", "to=%20%2014155550123", "to=%20"):
        refused = relay.post(
            "/make-call",
            data=garbage,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert refused.status_code == 400, garbage
        assert "E.164" in refused.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/make-call", 405),
        ("DELETE", "/", 405),
        ("GET", "/calls/CA" + "0" * 32 + "/hangup", 405),
    ],
)
def test_every_http_error_is_json(relay: RunningRelay, method: str, path: str, status: int) -> None:
    answer = requests.request(method, relay.url + path, timeout=10)
    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/json"
    assert isinstance(answer.json()["error"], str) and answer.json()["error"]
    if status == 405:
        assert "Allow" in answer.headers


def test_hang_up_of_an_unknown_call_is_404(relay: RunningRelay) -> None:
    answer = relay.post("/calls/CA" + "f" * 32 + "/hangup")
    assert answer.status_code == 404 and answer.json()["twilioCode"] == 20404
    assert relay.post("/calls/nonsense/hangup").status_code == 400


def test_without_credentials_calling_is_503_naming_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in (
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_NUMBER",
        "PUBLIC_URL",
        "TWILIO_API_KEY",
        "TWILIO_API_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    relay = create_web_relay(
        load_settings(captures_dir=tmp_path / "c", relay_api_token=RELAY_TOKEN),
        speech_engine=None,
    )
    answer = relay.app.test_client().post(
        "/make-call",
        json={"to": "+14155550123"},
        headers={"Authorization": f"Bearer {RELAY_TOKEN}"},
    )
    assert answer.status_code == 503
    body = answer.get_json()
    assert "TWILIO_ACCOUNT_SID" in body["error"] and "PUBLIC_URL" in body["missing"]
    health = relay.app.test_client().get("/").get_json()
    assert health["status"] == "ok" and health["callingConfigured"] is False


def test_voice_forwards_inbound_calls_when_forward_to_is_set(tmp_path: Path) -> None:
    relay = create_web_relay(
        load_settings(
            captures_dir=tmp_path, forward_to="+14155550999", public_url="https://relay.example.com"
        ),
        speech_engine=None,
    )
    client = relay.app.test_client()
    twiml = client.post("/voice", data={"Direction": "inbound", "CallSid": "CA1"}).get_data(
        as_text=True
    )
    assert 'url="wss://relay.example.com/stream"' in twiml and "+14155550999</Dial>" in twiml
    outbound = client.post("/voice", data={"Direction": "outbound-api"}).get_data(as_text=True)
    assert "<Dial" not in outbound and '<Pause length="600" />' in outbound


def test_secrets_never_reach_the_logs_or_answers(relay: RunningRelay) -> None:
    """Runs after the calls above: everything the server wrote or answered, grepped."""
    relay.post("/make-call", json={"to": "+15005550001"})  # an error path too
    written = relay.log_file.read_text() + relay.server_output() + relay.get("/").text
    assert "call_placed" in written  # the log did see calls being placed
    for secret in (AUTH_TOKEN, API_SECRET, RELAY_TOKEN):
        assert secret not in written


def test_a_call_s_own_keyterms_reach_its_stream(
    relay: RunningRelay, fake_twilio: FakeTwilio
) -> None:
    answer = relay.post(
        "/make-call", json={"to": "+14155550124", "keyterms": ["Okonkwo", "Zendesk"]}
    )
    assert answer.status_code == 200, answer.text
    call_sid = answer.json()["callSid"]
    call = fake_twilio.wait_for_call(call_sid)
    assert call.done.wait(15)
    assert call.script is not None and call.script.stream is not None
    assert call.script.stream.parameters == {"keyterms": "Okonkwo,Zendesk"}
    wait_for(lambda: (relay.captures / call_sid / "call.jsonl").exists())
    started = [
        json.loads(line)
        for line in (relay.captures / call_sid / "call.jsonl").read_text().splitlines()
        if '"stream_started"' in line
    ]
    assert started and started[0]["customParameters"] == {"keyterms": "Okonkwo,Zendesk"}


@pytest.mark.parametrize("keyterms", [["x" * 51], [f"term{n}" for n in range(51)], 7, [1, 2]])
def test_keyterms_that_are_not_words_are_refused(relay: RunningRelay, keyterms: object) -> None:
    answer = relay.post("/make-call", json={"to": "+14155550125", "keyterms": keyterms})
    assert answer.status_code == 400 and "keyterms" in answer.json()["error"]
