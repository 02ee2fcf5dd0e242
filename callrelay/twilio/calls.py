"""Placing and hanging up calls with the official twilio client.

`TWILIO_API_BASE` points the client somewhere other than https://api.twilio.com (the simulator's
fake REST API); it is done with a custom `http_client`, the hook twilio-python supports for this.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from callrelay.config import Settings
from callrelay.keyterms import KEYTERM_PARAMETER
from callrelay.logs import log_event

logger = logging.getLogger("callrelay.twilio")

STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


class CallingNotConfigured(Exception):
    def __init__(self, missing: list[str]) -> None:
        super().__init__("calling is not configured; set " + ", ".join(missing))
        self.missing = missing


class TwilioRefused(Exception):
    """Twilio answered with an error; `code` and `message` are Twilio's own."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RedirectedHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """A `TwilioHttpClient` that sends *.twilio.com requests to another base URL."""

    def __init__(self, api_base: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base = urlsplit(api_base)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith("twilio.com"):
            url = urlunsplit((self._base.scheme, self._base.netloc, parts.path, parts.query, ""))
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class PlacedCall:
    call_sid: str
    status: str


class TwilioCalls:
    """The few REST calls the relay makes."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Client | None = None
        self.errors = 0
        """Requests Twilio refused or that never reached it."""

    def _rest(self) -> Client:
        missing = self._settings.calling_missing()
        if missing:
            raise CallingNotConfigured(missing)
        if self._client is None:
            s = self._settings
            http_client = (
                RedirectedHttpClient(s.twilio_api_base, timeout=15)
                if s.twilio_api_base != "https://api.twilio.com"
                else TwilioHttpClient(timeout=15)
            )
            username: str | None
            if s.twilio_api_key and s.twilio_api_secret:
                username, password = s.twilio_api_key, s.twilio_api_secret.get_secret_value()
            else:
                assert s.twilio_auth_token is not None
                username, password = s.twilio_account_sid, s.twilio_auth_token.get_secret_value()
            # A non-empty environment mapping: an empty one falls back to os.environ, and a
            # stray TWILIO_EDGE or TWILIO_REGION would rewrite the host.
            self._client = Client(
                username,
                password,
                s.twilio_account_sid,
                http_client=http_client,
                environment={"CALLRELAY": "1"},
            )
        return self._client

    def place(
        self,
        to: str,
        bridge_to: str | None = None,
        mode: str = "listen",
        keyterms: Sequence[str] = (),
    ) -> PlacedCall:
        """`mode` "talk": the call streams bidirectionally, so clients can play audio into it.
        `keyterms`: words the call's recognition favours (carried by the voice URL to the
        stream's `<Parameter>`)."""
        client = self._rest()
        base = self._settings.public_url
        voice_url = f"{base}/voice"
        query = {"bridgeTo": bridge_to} if bridge_to else {"mode": mode} if mode == "talk" else {}
        if keyterms:
            query[KEYTERM_PARAMETER] = ",".join(keyterms)
        if query:
            voice_url += "?" + urlencode(query)
        try:
            call = client.calls.create(
                to=to,
                from_=self._settings.twilio_number,
                url=voice_url,
                method="POST",
                status_callback=f"{base}/call-status",
                status_callback_event=STATUS_EVENTS,
                status_callback_method="POST",
            )
        except TwilioRestException as error:
            self.errors += 1
            raise TwilioRefused(error.status, error.code, _message(error)) from None
        except TwilioException as error:
            self.errors += 1
            raise TwilioRefused(502, None, f"Twilio could not be reached: {error}") from None
        except OSError as error:
            self.errors += 1
            raise TwilioRefused(502, None, f"Twilio could not be reached: {error}") from None
        log_event(logger, "call_placed", callSid=call.sid, status=call.status)
        return PlacedCall(call_sid=call.sid, status=call.status)

    def hang_up(self, call_sid: str) -> PlacedCall:
        client = self._rest()
        try:
            call = client.calls(call_sid).update(status="completed")
        except TwilioRestException as error:
            self.errors += 1
            raise TwilioRefused(error.status, error.code, _message(error)) from None
        except (TwilioException, OSError) as error:
            self.errors += 1
            raise TwilioRefused(502, None, f"Twilio could not be reached: {error}") from None
        log_event(logger, "call_hung_up", callSid=call.sid, status=call.status)
        return PlacedCall(call_sid=call.sid, status=call.status)


def _message(error: TwilioRestException) -> str:
    return str(error.msg).strip() or f"HTTP {error.status}"
