"""A fake Twilio REST API on loopback that the real `twilio` client can be pointed at.

`POST .../Calls.json` answers 201 with a Call resource like Twilio's, then plays the call in a
thread: status callbacks, a signed webhook to the call's `Url`, the TwiML's `<Stream>` opened and
fed with the configured audio, `stop` and the `completed` callback. `POST .../Calls/{Sid}.json`
with `Status=completed` hangs up. Errors carry Twilio's codes and JSON shape, and Twilio's magic
test numbers fail as they do on a test account (+15005550001 invalid, +15005550002 unreachable,
+15005550003 not permitted, +15005550004 blocked).
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask, Response, jsonify, request
from werkzeug.serving import BaseWSGIServer, make_server

from callrelay.config import is_e164
from callrelay.simulator.media_client import (
    StreamOptions,
    StreamReport,
    StreamTarget,
    new_sid,
    play_stream,
)
from callrelay.simulator.twiml_reader import CallScript, TwimlError, read_twiml
from callrelay.twilio.media_stream import Track
from callrelay.twilio.signatures import sign

logger = logging.getLogger("callrelay.simulator")

API_VERSION = "2010-04-01"
MAGIC_NUMBERS = {
    # The calls table of Twilio's test credentials: what each magic 'To' number answers.
    "+15005550001": (400, 21217, "Phone number +15005550001 does not appear to be valid."),
    "+15005550002": (400, 21214, "'To' phone number +15005550002 cannot be reached."),
    "+15005550003": (
        400,
        21215,
        "Account not authorized to call +15005550003. Perhaps you need to enable some "
        "international permissions.",
    ),
    "+15005550004": (400, 21216, "Call blocked by Twilio blocklist: +15005550004."),
}


@dataclass
class SimulatedCall:
    sid: str
    account_sid: str
    to: str
    from_: str
    url: str
    method: str
    status_callback: str | None
    status_events: list[str]
    status: str = "queued"
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: datetime | None = None
    ended: datetime | None = None
    hang_up: threading.Event = field(default_factory=threading.Event)
    script: CallScript | None = None
    report: StreamReport | None = None
    webhook_status: int | None = None
    errors: list[str] = field(default_factory=list)
    callback_sequence: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def resource(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json"
        duration = (
            str(int((self.ended - self.started).total_seconds()))
            if self.ended and self.started
            else None
        )
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": format_datetime(self.created),
            "date_updated": format_datetime(datetime.now(UTC)),
            "direction": "outbound-api",
            "duration": duration,
            "end_time": format_datetime(self.ended) if self.ended else None,
            "forwarded_from": None,
            "from": self.from_,
            "from_formatted": self.from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": "PN" + "0" * 32,
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "start_time": format_datetime(self.started) if self.started else None,
            "status": self.status,
            "subresource_uris": {
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
                "streams": uri.replace(".json", "/Streams.json"),
            },
            "to": self.to,
            "to_formatted": self.to,
            "trunk_sid": None,
            "uri": uri,
            "queue_time": "0",
        }


class FakeTwilio:
    """The REST API plus the calls it is playing. Start with `start()`, stop with `stop()`."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        caller_audio: bytes,
        receiver_audio: bytes,
        api_key: str | None = None,
        api_secret: str | None = None,
        stream_options: StreamOptions | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._credentials = {(account_sid, auth_token)}
        if api_key and api_secret:
            self._credentials.add((api_key, api_secret))
        self.caller_audio = caller_audio
        self.receiver_audio = receiver_audio
        self.stream_options = stream_options or StreamOptions(speed=0)
        self.calls: dict[str, SimulatedCall] = {}
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: BaseWSGIServer = make_server(host, port, self._app(), threaded=True)
        self.base_url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakeTwilio:
        self._thread.start()
        return self

    def stop(self) -> None:
        for call in list(self.calls.values()):
            call.hang_up.set()
        self._server.shutdown()

    def wait_for_call(self, sid: str, timeout: float = 60) -> SimulatedCall:
        call = self.calls[sid]
        if not call.done.wait(timeout):
            raise TimeoutError(f"call {sid} still running after {timeout} s")
        return call

    # REST API

    def _app(self) -> Flask:
        app = Flask("fake-twilio")
        base = f"/{API_VERSION}/Accounts/<account_sid>"
        app.add_url_rule(f"{base}/Calls.json", view_func=self._create_call, methods=["POST"])
        app.add_url_rule(
            f"{base}/Calls/<call_sid>.json", view_func=self._call, methods=["GET", "POST"]
        )
        return app

    def _refuse(self, status: int, code: int, message: str) -> tuple[Response, int]:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return jsonify(body), status

    def _authenticate(self, account_sid: str) -> tuple[Response, int] | None:
        header = request.headers.get("Authorization", "")
        try:
            user, _, password = (
                base64.b64decode(header.removeprefix("Basic "), validate=True)
                .decode()
                .partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
        if not header.startswith("Basic ") or (user, password) not in self._credentials:
            return self._refuse(401, 20003, "Authenticate")
        if account_sid != self.account_sid:
            return self._refuse(
                404,
                20404,
                f"The requested resource /{API_VERSION}/Accounts/{account_sid} was not found",
            )
        return None

    def _create_call(self, account_sid: str) -> tuple[Response, int]:
        self.requests.append(
            {
                "path": request.path,
                "form": request.form.to_dict(flat=False),
                "auth_user": request.authorization.username if request.authorization else None,
            }
        )
        refused = self._authenticate(account_sid)
        if refused:
            return refused
        form = request.form
        to, from_ = form.get("To", ""), form.get("From", "")
        if not to:
            return self._refuse(400, 21201, "No 'To' number is specified")
        if to in MAGIC_NUMBERS:
            return self._refuse(*MAGIC_NUMBERS[to])
        if not is_e164(to):
            return self._refuse(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_:
            return self._refuse(400, 21213, "No 'From' number is specified")
        if not is_e164(from_):
            return self._refuse(
                400,
                21212,
                f"The 'From' number {from_} is not a valid phone "
                "number, shortcode, or alphanumeric sender ID.",
            )
        url = form.get("Url")
        if not url:
            return self._refuse(400, 21205, "Url parameter is required.")
        if urlsplit(url).scheme not in ("http", "https"):
            return self._refuse(400, 21205, f"Url is not a valid URL: {url}")
        call = SimulatedCall(
            sid=new_sid("CA"),
            account_sid=account_sid,
            to=to,
            from_=from_,
            url=url,
            method=form.get("Method", "POST").upper(),
            status_callback=form.get("StatusCallback"),
            status_events=form.getlist("StatusCallbackEvent") or ["completed"],
        )
        with self._lock:
            self.calls[call.sid] = call
        threading.Thread(target=self._run_call, args=(call,), daemon=True).start()
        return jsonify(call.resource()), 201

    def _call(self, account_sid: str, call_sid: str) -> tuple[Response, int]:
        refused = self._authenticate(account_sid)
        if refused:
            return refused
        call = self.calls.get(call_sid)
        if call is None:
            return self._refuse(404, 20404, f"The requested resource {request.path} was not found")
        if request.method == "POST":
            status = request.form.get("Status")
            if status not in (None, "completed", "canceled"):
                return self._refuse(400, 21220, f"Invalid call state: {status}")
            if status:
                call.hang_up.set()
                if call.status in ("queued", "ringing", "in-progress"):
                    call.status = status
        return jsonify(call.resource()), 200

    # Playing a call

    def _run_call(self, call: SimulatedCall) -> None:
        try:
            self._status_callback(call, "initiated", "initiated")
            call.status = "ringing"
            self._status_callback(call, "ringing", "ringing")
            if call.hang_up.is_set():
                return
            call.status = "in-progress"
            call.started = datetime.now(UTC)
            self._status_callback(call, "answered", "in-progress")
            call.script = self._fetch_twiml(call)
            if call.script.stream is not None:
                call.report = self._stream(call, call.script)
            elif call.script.pause_seconds:
                call.hang_up.wait(min(call.script.pause_seconds, 5))
        except (TwimlError, requests.RequestException, OSError) as error:
            call.errors.append(str(error))
            logger.warning("simulated call %s failed: %s", call.sid, error)
        finally:
            call.ended = datetime.now(UTC)
            if call.status in ("queued", "ringing", "in-progress"):
                call.status = "completed"
            self._status_callback(call, "completed", call.status)
            call.done.set()

    def _webhook_params(self, call: SimulatedCall, status: str) -> dict[str, str]:
        return {
            "AccountSid": call.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
        }

    def _signed_post(self, url: str, params: dict[str, str]) -> requests.Response:
        headers = {
            "X-Twilio-Signature": sign(self.auth_token, url, params),
            "User-Agent": "TwilioProxy/1.1",
        }
        return requests.post(url, data=params, headers=headers, timeout=10)

    def _fetch_twiml(self, call: SimulatedCall) -> CallScript:
        response = self._signed_post(call.url, self._webhook_params(call, "in-progress"))
        call.webhook_status = response.status_code
        if response.status_code != 200:
            raise TwimlError(
                f"11200 HTTP retrieval failure: {call.url} answered {response.status_code}"
            )
        return read_twiml(response.text)

    def _stream(self, call: SimulatedCall, script: CallScript) -> StreamReport:
        assert script.stream is not None
        # With a <Dial>, outbound carries the dialled party; otherwise only Twilio's own
        # (silent) audio during the <Pause>.
        outbound = self.receiver_audio if script.dial else b"\xff" * len(self.caller_audio)
        audio: dict[Track, bytes] = {"inbound": self.caller_audio, "outbound": outbound}
        return play_stream(
            StreamTarget(script.stream.url, script.stream.url, self.auth_token),
            {track: audio[track] for track in script.stream.tracks},
            call_sid=call.sid,
            account_sid=call.account_sid,
            custom_parameters=script.stream.parameters,
            options=self.stream_options,
            hang_up=call.hang_up,
            bidirectional=script.stream.bidirectional,
        )

    def _status_callback(self, call: SimulatedCall, event: str, status: str) -> None:
        if not call.status_callback or event not in call.status_events:
            return
        params = self._webhook_params(call, status)
        params |= {
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.callback_sequence),
            "Timestamp": format_datetime(datetime.now(UTC)),
        }
        if status in ("completed", "busy", "failed", "no-answer", "canceled"):
            seconds = (
                (call.ended - call.started).total_seconds() if call.ended and call.started else 0
            )
            params |= {"CallDuration": str(int(seconds)), "Duration": str(int(-(-seconds // 60)))}
        call.callback_sequence += 1
        try:
            self._signed_post(call.status_callback, params)
        except requests.RequestException as error:
            call.errors.append(f"status callback failed: {error}")
