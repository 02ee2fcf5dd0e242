"""The relay's HTTP interface: health and metrics here, with what guards every route (the API
token, Twilio's signature) and how every error is answered; placing calls in
`calling_routes.py`, Twilio's webhooks in `twilio_routes.py`, the history in
`history_routes.py`.

Every error is JSON, `{"error": "..."}` with the status, 404 and 405 included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from callrelay.logs import log_event
from callrelay.metrics import exposition
from callrelay.relay import Relay
from callrelay.web.calling_routes import calling_routes
from callrelay.web.http_errors import Refused, error, token_refused
from callrelay.web.twilio_routes import request_public_base, twilio_routes

logger = logging.getLogger("callrelay.http")

CONTROL_ENDPOINTS = ("/make-call", "/calls/")
PROTECTED_READS = ("/metrics",)
"""Reads that need the token unless METRICS_PUBLIC."""
TOKEN_READS = ("/token",)
TWILIO_ENDPOINTS = {"/voice": "webhook", "/call-status": "webhook", "/stream": "stream"}
"""What only Twilio may reach; `/stream/<CallSid>` is a stream too."""


def add_http_routes(app: Flask, relay: Relay, web_status: Callable[[], dict[str, Any]]) -> None:
    """Health, metrics, calling and Twilio's webhooks; `web_status` adds the web layer's own
    figures to `GET /`."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Refused, lambda refused: refused.response())
    app.register_error_handler(Exception, _server_error)
    app.before_request(lambda: require_api_token(relay))
    app.before_request(lambda: require_twilio_signature(relay))
    routes = Blueprint("callrelay", __name__)
    routes.add_url_rule("/", "health", lambda: jsonify({**relay.status(), **web_status()}))
    routes.add_url_rule("/metrics", "metrics", lambda: metrics(relay))
    app.register_blueprint(routes)
    app.register_blueprint(calling_routes(relay))
    app.register_blueprint(twilio_routes(relay))


def _http_error(problem: HTTPException) -> tuple[Response, int]:
    response, status = error(problem.code or 500, problem.description or problem.name)
    allow = problem.get_response().headers.get("Allow")
    if status == 405 and allow:
        response.headers["Allow"] = allow
    return response, status


def _server_error(problem: Exception) -> tuple[Response, int]:
    logger.exception("request failed: %s %s", request.method, request.path)
    return error(500, "internal server error")


def require_api_token(relay: Relay) -> tuple[Response, int] | None:
    """Placing calls costs money and hangs up people, and the metrics say who calls whom how
    often: the API token or nothing."""
    controls = request.method == "POST" and request.path.startswith(CONTROL_ENDPOINTS)
    reads = request.path in PROTECTED_READS and not relay.settings.metrics_public
    if not (controls or reads or request.path in TOKEN_READS):
        return None
    if relay.api_token.matches_bearer(request.headers.get("Authorization")):
        return None
    return token_refused("control_refused", "missing or wrong API token")


def require_twilio_signature(relay: Relay) -> tuple[Response, int] | None:
    """Only Twilio may ask for TwiML, report call status or open a media stream."""
    path_call_sid = request.path.removeprefix("/stream/")
    on_call_stream = path_call_sid != request.path
    kind = "stream" if on_call_stream else TWILIO_ENDPOINTS.get(request.path)
    signatures = relay.signatures
    if kind is None or signatures is None:
        return None
    base = request_public_base(relay.settings)
    signature = request.headers.get("X-Twilio-Signature")
    if kind == "stream":
        check = signatures.check_stream(base, signature, path_call_sid if on_call_stream else None)
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
    return error(403, "request not signed by Twilio")


def metrics(relay: Relay) -> Response:
    relay.metrics.update()
    body, content_type = exposition()
    return Response(body, content_type=content_type)
