"""HTTP routes: health, placing and hanging up calls, and Twilio's webhooks."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from callrelay import __version__
from callrelay.access import destination_allowed
from callrelay.config import Settings, is_e164
from callrelay.logs import log_event
from callrelay.twilio.calls import CallingNotConfigured, TwilioCalls, TwilioRefused
from callrelay.twilio.signatures import TwilioSignatures, public_base
from callrelay.twilio.twiml import stream_twiml, stream_url

logger = logging.getLogger("callrelay.http")

routes = Blueprint("callrelay", __name__)

CALL_SID_CHARS = frozenset("0123456789abcdefABCDEF")


def _relay() -> Any:
    return current_app.extensions["callrelay"]


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def _fields() -> dict[str, Any]:
    """Form or JSON body, whichever the client sent."""
    if request.is_json:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}
    return request.form.to_dict()


@routes.get("/")
def health() -> Response:
    relay = _relay()
    return jsonify(
        {
            "status": "ok",
            "service": "callrelay",
            "version": __version__,
            "activeCalls": len(relay.registry.active()),
            "callingConfigured": not relay.settings.calling_missing(),
            "asr": relay.transcription.status() if relay.transcription else {"engine": "off"},
            "socketio": {"droppedAudio": relay.socketio_relay.dropped_audio},
        }
    )


CONTROL_ENDPOINTS = ("/make-call", "/calls/")


@routes.before_app_request
def require_api_token() -> tuple[Response, int] | None:
    """Placing calls costs money and hangs up people: the API token or nothing."""
    if request.method != "POST" or not request.path.startswith(CONTROL_ENDPOINTS):
        return None
    if _relay().api_token.matches_bearer(request.headers.get("Authorization")):
        return None
    log_event(
        logger,
        "control_refused",
        logging.WARNING,
        path=request.path,
        remote=request.remote_addr,
        reason="missing or wrong API token",
    )
    response, status = _error(401, "missing or wrong API token: send 'Authorization: Bearer ...'")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, status


@routes.post("/make-call")
def make_call() -> tuple[Response, int]:
    fields = _fields()
    to = fields.get("to")
    bridge_to = fields.get("bridgeTo") or None
    if not isinstance(to, str) or not is_e164(to):
        return _error(400, "'to' must be an E.164 phone number such as +14155550100")
    if bridge_to is not None and (not isinstance(bridge_to, str) or not is_e164(bridge_to)):
        return _error(400, "'bridgeTo' must be an E.164 phone number such as +14155550100")
    relay = _relay()
    prefixes = relay.settings.destination_prefixes
    for number in (to, bridge_to):
        if number is not None and not destination_allowed(number, prefixes):
            log_event(logger, "destination_refused", logging.WARNING, to=number)
            return _error(403, f"{number} is not in ALLOWED_DESTINATIONS", allowed=prefixes)
    wait = relay.call_rate.allow()
    if wait:
        response, status = _error(
            429, "too many calls placed; try again later", retryAfter=round(wait, 1)
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response, status
    calls: TwilioCalls = relay.calls
    try:
        placed = calls.place(to, bridge_to)
    except CallingNotConfigured as error:
        return _error(503, str(error), missing=error.missing)
    except TwilioRefused as error:
        log_event(
            logger,
            "call_refused",
            logging.WARNING,
            twilioCode=error.code,
            twilioStatus=error.status,
            error=error.message,
        )
        return _error(502, error.message, twilioCode=error.code, twilioStatus=error.status)
    return jsonify({"callSid": placed.call_sid, "status": placed.status}), 200


@routes.post("/calls/<call_sid>/hangup")
def hang_up(call_sid: str) -> tuple[Response, int]:
    if not (
        call_sid.startswith("CA") and len(call_sid) == 34 and set(call_sid[2:]) <= CALL_SID_CHARS
    ):
        return _error(400, "call SID must be 'CA' followed by 32 hex digits")
    calls: TwilioCalls = _relay().calls
    try:
        result = calls.hang_up(call_sid)
    except CallingNotConfigured as error:
        return _error(503, str(error), missing=error.missing)
    except TwilioRefused as error:
        status = 404 if error.status == 404 else 502
        return _error(status, error.message, twilioCode=error.code, twilioStatus=error.status)
    return jsonify({"callSid": result.call_sid, "status": result.status}), 200


def _public_base(settings: Settings) -> str:
    return public_base(
        settings.public_url,
        request.headers.get("X-Forwarded-Proto", ""),
        request.headers.get("X-Forwarded-Host", ""),
        request.host_url,
    )


TWILIO_ENDPOINTS = {"/voice": "webhook", "/call-status": "webhook", "/stream": "stream"}


@routes.before_app_request
def require_twilio_signature() -> tuple[Response, int] | None:
    """Only Twilio may ask for TwiML, report call status or open a media stream."""
    kind = TWILIO_ENDPOINTS.get(request.path)
    signatures: TwilioSignatures | None = _relay().signatures
    if kind is None or signatures is None:
        return None
    base = _public_base(_relay().settings)
    signature = request.headers.get("X-Twilio-Signature")
    if kind == "stream":
        check = signatures.check_stream(base, signature)
    else:
        path = request.full_path if request.query_string else request.path
        check = signatures.check_webhook(base, path, request.form, signature)
    if check.valid:
        return None
    log_event(
        logger,
        "signature_rejected",
        logging.WARNING,
        path=request.path,
        remote=request.remote_addr,
        reason=check.reason,
    )
    return _error(403, "request not signed by Twilio")


@routes.post("/voice")
def voice() -> Response:
    settings: Settings = _relay().settings
    bridge_to = request.args.get("bridgeTo") or None
    if bridge_to is not None and not is_e164(bridge_to):
        bridge_to = None
    if bridge_to is None and request.form.get("Direction") == "inbound":
        bridge_to = settings.forward_to
    twiml = stream_twiml(
        stream_url(_public_base(settings)),
        dial=bridge_to,
        caller_id=settings.twilio_number,
    )
    log_event(
        logger,
        "voice_webhook",
        callSid=request.form.get("CallSid"),
        direction=request.form.get("Direction"),
        bridged=bridge_to is not None,
    )
    return Response(twiml, mimetype="text/xml")


STATUS_FIELDS = {
    "CallSid": "callSid",
    "CallStatus": "callStatus",
    "CallDuration": "callDuration",
    "Direction": "direction",
    "SequenceNumber": "sequenceNumber",
    "Timestamp": "timestamp",
    "SipResponseCode": "sipResponseCode",
}


@routes.post("/call-status")
def call_status() -> tuple[str, int]:
    status = {name: request.form[key] for key, name in STATUS_FIELDS.items() if key in request.form}
    log_event(logger, "call_status", **status)
    _relay().socketio_relay.call_status(status)
    return "", 204
