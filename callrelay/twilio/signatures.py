"""Twilio request signatures (`X-Twilio-Signature`), with twilio-python's `RequestValidator`.

For a WebSocket handshake Twilio signs the public `wss://` URL from the TwiML with empty params.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator


def sign(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """The signature Twilio sends for a request to `url` with form `params`."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params or {})))
