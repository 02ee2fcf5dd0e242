"""What only Twilio calls: the voice webhook that answers with TwiML, and the status callback.
Both are signed (checked in `routes.py` with the stream's handshake)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from callrelay.access import destination_allowed
from callrelay.config import Settings, is_e164
from callrelay.keyterms import KEYTERM_PARAMETER, keyterm_list
from callrelay.logs import log_event
from callrelay.relay import Relay
from callrelay.talkback import TALK_PARAMETER
from callrelay.twilio.sids import is_call_sid
from callrelay.twilio.signatures import public_base
from callrelay.twilio.twiml import (
    busy_twiml,
    say_and_hang_up,
    stream_twiml,
    stream_url,
    talk_twiml,
)
from callrelay.web.calling_routes import phone_number

logger = logging.getLogger("callrelay.http")

STATUS_FIELDS = {
    "CallSid": "callSid",
    "CallStatus": "callStatus",
    "CallDuration": "callDuration",
    "Direction": "direction",
    "From": "from",
    "To": "to",
    "SequenceNumber": "sequenceNumber",
    "Timestamp": "timestamp",
    "SipResponseCode": "sipResponseCode",
}


def twilio_routes(relay: Relay) -> Blueprint:
    routes = Blueprint("twilio", __name__)
    routes.add_url_rule("/voice", "voice", lambda: voice(relay), methods=["POST"])
    routes.add_url_rule("/call-status", "call_status", lambda: call_status(relay), methods=["POST"])
    return routes


def request_public_base(settings: Settings) -> str:
    """The public base URL Twilio used for this request (what it signed)."""
    return public_base(
        settings.public_url,
        request.headers.get("X-Forwarded-Proto", ""),
        request.headers.get("X-Forwarded-Host", ""),
        request.host_url,
    )


def voice(relay: Relay) -> Response:
    settings = relay.settings
    form = request.form
    if not relay.live_calls.has_room():
        _log_voice(refused="over_capacity", maxCalls=settings.max_calls)
        return Response(busy_twiml(), mimetype="text/xml")
    call_sid = form.get("CallSid")
    from_browser = form.get("From", "").startswith("client:")
    inbound = form.get("Direction") == "inbound" and not from_browser
    talk = request.args.get("mode") == "talk" or (inbound and settings.voice_mode == "talk")
    url = stream_url(request_public_base(settings), call_sid if is_call_sid(call_sid) else None)
    if call_sid is not None:
        relay.history.webhook(call_sid, form)
    bridge_to: str | None = None
    parameters = _call_keyterms()
    if talk:
        twiml = talk_twiml(url, TALK_PARAMETER, parameters)
    else:
        if from_browser:
            bridge_to, refusal = browser_destination(relay, form.get("To"))
            if refusal is not None:
                return Response(say_and_hang_up(refusal), mimetype="text/xml")
        else:
            bridge_to = request.args.get("bridgeTo") or None
            if bridge_to is not None and not is_e164(bridge_to):
                bridge_to = None
            if bridge_to is None and inbound:
                bridge_to = settings.forward_to
        twiml = stream_twiml(
            url, dial=bridge_to, caller_id=settings.twilio_number, parameters=parameters
        )
    _log_voice(
        mode="talk" if talk else "listen",
        bridged=bridge_to is not None,
        **({"fromBrowser": form.get("From")} if from_browser else {}),
    )
    return Response(twiml, mimetype="text/xml")


def _call_keyterms() -> dict[str, str]:
    """The call's own keyterms, from the voice URL `/make-call` gave Twilio, for its stream."""
    try:
        terms = keyterm_list(request.args.get(KEYTERM_PARAMETER, ""))
    except ValueError:
        return {}  # only /make-call writes this URL, and it checked them
    return {KEYTERM_PARAMETER: ",".join(terms)} if terms else {}


def _log_voice(**fields: object) -> None:
    refused = "refused" in fields
    log_event(
        logger,
        "voice_webhook",
        logging.WARNING if refused else logging.INFO,
        callSid=request.form.get("CallSid"),
        direction=request.form.get("Direction"),
        **fields,
    )


def browser_destination(relay: Relay, to_field: str | None) -> tuple[str | None, str | None]:
    """Where a call from a browser (the Voice SDK's `To` param) may go, or why not: the same
    number rules, allow-list and rate limit as `/make-call`."""
    to, _ = phone_number(to_field)
    if to is None:
        return None, "The number you dialled is not a valid international number."
    if not destination_allowed(to, relay.settings.destination_prefixes):
        log_event(logger, "destination_refused", logging.WARNING, to=to, fromBrowser=True)
        return None, "Calls to that number are not allowed."
    if relay.allow_call():
        log_event(logger, "browser_call_limited", logging.WARNING, to=to)
        return None, "Too many calls were placed just now. Please try again in a minute."
    return to, None


def call_status(relay: Relay) -> tuple[str, int]:
    status = {name: request.form[key] for key, name in STATUS_FIELDS.items() if key in request.form}
    relay.call_status(status)
    return "", 204
