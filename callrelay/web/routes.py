"""HTTP routes: health, placing and hanging up calls, and Twilio's webhooks.

Every error is JSON, `{"error": "..."}` with the status, 404 and 405 included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from callrelay.access import destination_allowed
from callrelay.config import Settings, is_e164
from callrelay.logs import log_event
from callrelay.metrics import exposition
from callrelay.relay import Relay
from callrelay.talkback import TALK_PARAMETER
from callrelay.twilio.calls import CallingNotConfigured, TwilioRefused
from callrelay.twilio.sids import is_call_sid
from callrelay.twilio.signatures import public_base
from callrelay.twilio.twiml import (
    busy_twiml,
    say_and_hang_up,
    stream_twiml,
    stream_url,
    talk_twiml,
)
from callrelay.twilio.voice_token import IDENTITY, voice_token

logger = logging.getLogger("callrelay.http")

CONTROL_ENDPOINTS = ("/make-call", "/calls/")
PROTECTED_READS = ("/metrics",)
"""Reads that need the token unless METRICS_PUBLIC."""
TOKEN_READS = ("/token",)
TWILIO_ENDPOINTS = {"/voice": "webhook", "/call-status": "webhook", "/stream": "stream"}
"""What only Twilio may reach; `/stream/<CallSid>` is a stream too."""
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


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


class BadBody(ValueError):
    """A request body that cannot be read; the message says why."""


def _fields() -> dict[str, Any]:
    """Form or JSON body, whichever the client sent."""
    if request.is_json:
        body = request.get_json(silent=True)
        if body is None:
            raise BadBody("the body is not valid JSON (Content-Type says it is)")
        if not isinstance(body, dict):
            raise BadBody('the body must be a JSON object such as {"to": "+14155550100"}')
        return body
    return request.form.to_dict()


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


def token_refused(event: str, reason: str) -> tuple[Response, int]:
    """401 for a request without the API token, logged as `event`."""
    log_event(
        logger, event, logging.WARNING, path=request.path, remote=request.remote_addr, reason=reason
    )
    response, status = _error(401, "missing or wrong API token: send 'Authorization: Bearer ...'")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, status


def _public_base(settings: Settings) -> str:
    return public_base(
        settings.public_url,
        request.headers.get("X-Forwarded-Proto", ""),
        request.headers.get("X-Forwarded-Host", ""),
        request.host_url,
    )


def http_routes(relay: Relay, web_status: Callable[[], dict[str, Any]]) -> Blueprint:
    """The relay's HTTP interface; `web_status` adds the web layer's own figures to `GET /`."""
    routes = Blueprint("callrelay", __name__)

    @routes.app_errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        response, status = _error(status, error.description or error.name)
        if status == 405 and error.get_response().headers.get("Allow"):
            response.headers["Allow"] = error.get_response().headers["Allow"]
        return response, status

    @routes.app_errorhandler(BadBody)
    def bad_body(error: BadBody) -> tuple[Response, int]:
        return _error(400, str(error))

    @routes.app_errorhandler(Exception)
    def server_error(error: Exception) -> tuple[Response, int]:
        logger.exception("request failed: %s %s", request.method, request.path)
        return _error(500, "internal server error")

    @routes.get("/")
    def health() -> Response:
        return jsonify({**relay.status(), **web_status()})

    @routes.before_app_request
    def require_api_token() -> tuple[Response, int] | None:
        """Placing calls costs money and hangs up people, and the metrics say who calls whom
        how often: the API token or nothing."""
        controls = request.method == "POST" and request.path.startswith(CONTROL_ENDPOINTS)
        reads = request.path in PROTECTED_READS and not relay.settings.metrics_public
        if not (controls or reads or request.path in TOKEN_READS):
            return None
        if relay.api_token.matches_bearer(request.headers.get("Authorization")):
            return None
        return token_refused("control_refused", "missing or wrong API token")

    @routes.get("/metrics")
    def metrics() -> Response:
        relay.metrics.update()
        body, content_type = exposition()
        return Response(body, content_type=content_type)

    @routes.get("/token")
    def browser_token() -> tuple[Response, int]:
        """A Twilio Voice SDK token, so a browser can place calls through the TwiML App."""
        missing = relay.settings.browser_calling_missing()
        if missing:
            return _error(
                503, "browser calling is not configured: " + ", ".join(missing), missing=missing
            )
        identity = request.args.get("identity", "console")
        if not IDENTITY.fullmatch(identity):
            return _error(400, "'identity' must be 1-121 letters, digits or _ . @ -")
        token = voice_token(relay.settings, identity)
        log_event(logger, "voice_token_issued", identity=identity, remote=request.remote_addr)
        return jsonify(
            {
                "token": token,
                "identity": identity,
                "ttlSeconds": relay.settings.voice_token_ttl_seconds,
            }
        ), 200

    @routes.post("/make-call")
    def make_call() -> tuple[Response, int]:
        fields = _fields()
        to, to_repaired = phone_number(fields.get("to"))
        if to is None:
            return _error(400, "'to' must be an E.164 phone number such as +14155550100")
        mode = fields.get("mode", "listen")
        if mode not in ("listen", "talk"):
            return _error(400, "'mode' must be 'listen' (both sides, default) or 'talk'")
        if mode == "talk" and fields.get("bridgeTo"):
            return _error(
                400, "a 'talk' call cannot bridge: <Connect><Stream> holds the call until it ends"
            )
        bridge_to, bridge_repaired = None, False
        if fields.get("bridgeTo"):
            bridge_to, bridge_repaired = phone_number(fields.get("bridgeTo"))
            if bridge_to is None:
                return _error(400, "'bridgeTo' must be an E.164 phone number such as +14155550100")
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
        prefixes = relay.settings.destination_prefixes
        for number in (to, bridge_to):
            if number is not None and not destination_allowed(number, prefixes):
                log_event(logger, "destination_refused", logging.WARNING, to=number)
                return _error(403, f"{number} is not in ALLOWED_DESTINATIONS", allowed=prefixes)
        wait = relay.allow_call()
        if wait:
            response, status = _error(
                429, "too many calls placed; try again later", retryAfter=round(wait, 1)
            )
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response, status
        try:
            placed = relay.calls.place(to, bridge_to, mode)
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
        relay.history.placed(placed.call_sid, to, relay.settings.twilio_number, bridge_to)
        return jsonify({"callSid": placed.call_sid, "status": placed.status}), 200

    @routes.post("/calls/<call_sid>/hangup")
    def hang_up(call_sid: str) -> tuple[Response, int]:
        if not is_call_sid(call_sid):
            return _error(400, "call SID must be 'CA' followed by 32 hex digits")
        try:
            result = relay.calls.hang_up(call_sid)
        except CallingNotConfigured as error:
            return _error(503, str(error), missing=error.missing)
        except TwilioRefused as error:
            status = 404 if error.status == 404 else 502
            return _error(status, error.message, twilioCode=error.code, twilioStatus=error.status)
        return jsonify({"callSid": result.call_sid, "status": result.status}), 200

    @routes.before_app_request
    def require_twilio_signature() -> tuple[Response, int] | None:
        """Only Twilio may ask for TwiML, report call status or open a media stream."""
        path_call_sid = request.path.removeprefix("/stream/")
        on_call_stream = path_call_sid != request.path
        kind = "stream" if on_call_stream else TWILIO_ENDPOINTS.get(request.path)
        signatures = relay.signatures
        if kind is None or signatures is None:
            return None
        base = _public_base(relay.settings)
        signature = request.headers.get("X-Twilio-Signature")
        if kind == "stream":
            check = signatures.check_stream(
                base, signature, path_call_sid if on_call_stream else None
            )
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
        settings = relay.settings
        if not relay.live_calls.has_room():
            log_event(
                logger,
                "voice_webhook",
                logging.WARNING,
                callSid=request.form.get("CallSid"),
                direction=request.form.get("Direction"),
                refused="over_capacity",
                maxCalls=settings.max_calls,
            )
            return Response(busy_twiml(), mimetype="text/xml")
        call_sid = request.form.get("CallSid")
        from_browser = request.form.get("From", "").startswith("client:")
        inbound = request.form.get("Direction") == "inbound" and not from_browser
        talk = request.args.get("mode") == "talk" or (inbound and settings.voice_mode == "talk")
        url = stream_url(_public_base(settings), call_sid if is_call_sid(call_sid) else None)
        if call_sid is not None:
            relay.history.webhook(call_sid, request.form)
        bridge_to: str | None = None
        if talk:
            twiml = talk_twiml(url, TALK_PARAMETER)
        elif from_browser:
            bridge_to, refusal = browser_destination(request.form.get("To"))
            if refusal is not None:
                return Response(say_and_hang_up(refusal), mimetype="text/xml")
        else:
            bridge_to = request.args.get("bridgeTo") or None
            if bridge_to is not None and not is_e164(bridge_to):
                bridge_to = None
            if bridge_to is None and inbound:
                bridge_to = settings.forward_to
        if not talk:
            twiml = stream_twiml(url, dial=bridge_to, caller_id=settings.twilio_number)
        log_event(
            logger,
            "voice_webhook",
            callSid=call_sid,
            direction=request.form.get("Direction"),
            mode="talk" if talk else "listen",
            bridged=bridge_to is not None,
            **({"fromBrowser": request.form.get("From")} if from_browser else {}),
        )
        return Response(twiml, mimetype="text/xml")

    def browser_destination(to_field: str | None) -> tuple[str | None, str | None]:
        """Where a call from a browser (the Voice SDK's `To` param) may go, or why not: the
        same number rules, allow-list and rate limit as `/make-call`."""
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

    @routes.post("/call-status")
    def call_status() -> tuple[str, int]:
        status = {
            name: request.form[key] for key, name in STATUS_FIELDS.items() if key in request.form
        }
        relay.call_status(status)
        return "", 204

    return routes
