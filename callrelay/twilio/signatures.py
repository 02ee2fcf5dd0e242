"""Twilio request signatures (`X-Twilio-Signature`), with twilio-python's `RequestValidator`.

Twilio signs the URL it was given, so the server must rebuild that URL, not the one it sees:
behind ngrok or a proxy the server sees http://localhost:6000/voice while Twilio signed
https://abc.ngrok.app/voice. The public base comes from PUBLIC_URL, else from the
X-Forwarded-Proto/Host headers, else from the request itself. For the `/stream` WebSocket
handshake Twilio signs the `wss://` URL from the TwiML with empty params, and the header
arrives in lower case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twilio.request_validator import RequestValidator

from callrelay.twilio.twiml import stream_url


def sign(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """The signature Twilio sends for a request to `url` with form `params`."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params or {})))


@dataclass(frozen=True)
class SignatureCheck:
    valid: bool
    reason: str = ""


def public_base(
    public_url: str | None, forwarded_proto: str, forwarded_host: str, host_url: str
) -> str:
    """The public http(s) base Twilio used to reach us."""
    if public_url:
        return public_url.rstrip("/")
    proto = forwarded_proto.split(",")[0].strip()
    host = forwarded_host.split(",")[0].strip()
    if proto and host:
        return f"{proto}://{host}"
    return host_url.rstrip("/")


class TwilioSignatures:
    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def check_webhook(
        self, base: str, path_and_query: str, form: Any, signature: str | None
    ) -> SignatureCheck:
        if not signature:
            return SignatureCheck(False, "no X-Twilio-Signature header")
        url = base + path_and_query
        if self._validator.validate(url, form, signature):
            return SignatureCheck(True)
        return SignatureCheck(False, f"signature does not match {url}")

    def check_stream(
        self, base: str, signature: str | None, call_sid: str | None = None
    ) -> SignatureCheck:
        """`call_sid`: the one in the stream's path (`/stream/<CallSid>`), if any."""
        if not signature:
            return SignatureCheck(False, "no x-twilio-signature header on the handshake")
        url = stream_url(base, call_sid)
        if self._validator.validate(url, {}, signature):
            return SignatureCheck(True)
        return SignatureCheck(False, f"signature does not match {url}")
