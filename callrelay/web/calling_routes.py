"""Placing calls, hanging up, and the Voice SDK token for browsers: the routes that cost money
or cut people off, all behind the API token (checked in `routes.py`)."""

from __future__ import annotations

import logging
from functools import partial

from flask import Blueprint, Response, jsonify, request

from callrelay.access import destination_allowed
from callrelay.config import is_e164
from callrelay.keyterms import keyterm_list
from callrelay.logs import log_event
from callrelay.relay import Relay
from callrelay.twilio.calls import CallingNotConfigured, TwilioRefused
from callrelay.twilio.sids import is_call_sid
from callrelay.twilio.voice_token import IDENTITY, voice_token
from callrelay.web.http_errors import Refused, error, fields

logger = logging.getLogger("callrelay.http")


def phone_number(value: object) -> tuple[str | None, bool]:
    """An E.164 number from a request field, and whether it had to be repaired.

    A form body turns an unencoded `+` into a space (`-d to=+14155550100` sends
    `to= 14155550100`), so a space followed by digits and nothing else can only have been a
    `+`: it is taken as one. Anything else that is not E.164 is refused."""
    if not isinstance(value, str):
        return None, False
    if is_e164(value):
        return value, False
    if value.startswith(" ") and is_e164("+" + value[1:]):
        return "+" + value[1:], True
    return None, False


def calling_routes(relay: Relay) -> Blueprint:
    routes = Blueprint("calling", __name__)
    routes.add_url_rule("/make-call", "make_call", lambda: make_call(relay), methods=["POST"])
    routes.add_url_rule(
        "/calls/<call_sid>/hangup",
        "hang_up",
        lambda call_sid: hang_up(relay, call_sid),
        methods=["POST"],
    )
    for action, paused in (("pause", True), ("resume", False)):
        routes.add_url_rule(
            f"/calls/<call_sid>/{action}",
            action,
            partial(set_paused, relay, paused=paused),
            methods=["POST"],
        )
    routes.add_url_rule("/token", "browser_token", lambda: browser_token(relay))
    return routes


def _numbers(form: dict[str, object]) -> tuple[str, str | None]:
    """The call's `to` and `bridgeTo` (`Refused` says what is wrong with them)."""
    to, to_repaired = phone_number(form.get("to"))
    if to is None:
        raise Refused(400, "'to' must be an E.164 phone number such as +14155550100")
    bridge_to, bridge_repaired = None, False
    if form.get("bridgeTo"):
        bridge_to, bridge_repaired = phone_number(form.get("bridgeTo"))
        if bridge_to is None:
            raise Refused(400, "'bridgeTo' must be an E.164 phone number such as +14155550100")
    if to_repaired or bridge_repaired:
        log_event(
            logger,
            "number_repaired",
            logging.WARNING,
            to=to,
            bridgeTo=bridge_to,
            detail="a form field began with a space, which is how an unencoded '+' arrives;"
            " read as '+' (send it as %2B, or JSON)",
        )
    return to, bridge_to


def _check_allowed(relay: Relay, to: str, bridge_to: str | None) -> None:
    """`Refused` when the call may not be placed: the allow-list, the rate."""
    prefixes = relay.settings.destination_prefixes
    for number in (to, bridge_to):
        if number is not None and not destination_allowed(number, prefixes):
            log_event(logger, "destination_refused", logging.WARNING, to=number)
            raise Refused(403, f"{number} is not in ALLOWED_DESTINATIONS", allowed=prefixes)
    wait = relay.allow_call()
    if wait:
        raise Refused(
            429,
            "too many calls placed; try again later",
            headers={"Retry-After": str(int(wait) + 1)},
            retryAfter=round(wait, 1),
        )


def make_call(relay: Relay) -> tuple[Response, int]:
    form = fields()
    to, bridge_to = _numbers(form)
    mode = form.get("mode", "listen")
    if mode not in ("listen", "talk"):
        raise Refused(400, "'mode' must be 'listen' (both sides, default) or 'talk'")
    if mode == "talk" and bridge_to:
        raise Refused(
            400, "a 'talk' call cannot bridge: <Connect><Stream> holds the call until it ends"
        )
    keyterms = _keyterms(form.get("keyterms"))
    _check_allowed(relay, to, bridge_to)
    try:
        placed = relay.calls.place(to, bridge_to, mode, keyterms)
    except CallingNotConfigured as problem:
        return error(503, str(problem), missing=problem.missing)
    except TwilioRefused as refusal:
        log_event(
            logger,
            "call_refused",
            logging.WARNING,
            twilioCode=refusal.code,
            twilioStatus=refusal.status,
            error=refusal.message,
        )
        return error(502, refusal.message, twilioCode=refusal.code, twilioStatus=refusal.status)
    relay.history.placed(placed.call_sid, to, relay.settings.twilio_number, bridge_to)
    return jsonify({"callSid": placed.call_sid, "status": placed.status}), 200


def hang_up(relay: Relay, call_sid: str) -> tuple[Response, int]:
    if not is_call_sid(call_sid):
        return error(400, "call SID must be 'CA' followed by 32 hex digits")
    try:
        result = relay.calls.hang_up(call_sid)
    except CallingNotConfigured as problem:
        return error(503, str(problem), missing=problem.missing)
    except TwilioRefused as refusal:
        status = 404 if refusal.status == 404 else 502
        return error(status, refusal.message, twilioCode=refusal.code, twilioStatus=refusal.status)
    return jsonify({"callSid": result.call_sid, "status": result.status}), 200


def _keyterms(value: object) -> list[str]:
    """A call's own keyterms: a list of words, or one comma-separated string."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(term, str) for term in value):
        value = ",".join(value)
    if not isinstance(value, str):
        raise Refused(400, "'keyterms' must be a list of words or a comma-separated string")
    try:
        return keyterm_list(value)
    except ValueError as problem:
        raise Refused(400, f"'keyterms': {problem}") from None


def set_paused(relay: Relay, call_sid: str, paused: bool) -> tuple[Response, int]:
    """Pause or resume recording, transcription and listening (PCI), on whichever process
    streams the call: `200` with `paused`, or `202` when another process was told."""
    if not is_call_sid(call_sid):
        return error(400, "call SID must be 'CA' followed by 32 hex digits")
    outcome = relay.set_paused(call_sid, paused)
    if outcome == "not_live":
        return error(404, f"{call_sid} is not streaming here or on any process")
    log_event(
        logger,
        "pause_requested" if paused else "resume_requested",
        callSid=call_sid,
        outcome=outcome,
        remote=request.remote_addr,
    )
    status = 202 if outcome == "forwarded" else 200
    return jsonify({"callSid": call_sid, "paused": paused, "forwarded": status == 202}), status


def browser_token(relay: Relay) -> tuple[Response, int]:
    """A Twilio Voice SDK token, so a browser can place calls through the TwiML App."""
    missing = relay.settings.browser_calling_missing()
    if missing:
        return error(
            503, "browser calling is not configured: " + ", ".join(missing), missing=missing
        )
    identity = request.args.get("identity", "console")
    if not IDENTITY.fullmatch(identity):
        return error(400, "'identity' must be 1-121 letters, digits or _ . @ -")
    token = voice_token(relay.settings, identity)
    log_event(logger, "voice_token_issued", identity=identity, remote=request.remote_addr)
    return jsonify(
        {"token": token, "identity": identity, "ttlSeconds": relay.settings.voice_token_ttl_seconds}
    ), 200
