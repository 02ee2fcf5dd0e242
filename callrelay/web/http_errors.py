"""How every HTTP route answers a problem: JSON `{"error": "..."}` with its status."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, jsonify, request

from callrelay.logs import log_event

logger = logging.getLogger("callrelay.http")


class Refused(Exception):
    """A request the relay will not do, raised anywhere in a handler: it becomes the JSON
    error `status` with `message` (and `extra` fields, `headers`)."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra

    def response(self) -> tuple[Response, int]:
        response, status = error(self.status, self.message, **self.extra)
        response.headers.update(self.headers or {})
        return response, status


def error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def fields() -> dict[str, Any]:
    """Form or JSON body, whichever the client sent."""
    if request.is_json:
        body = request.get_json(silent=True)
        if body is None:
            raise Refused(400, "the body is not valid JSON (Content-Type says it is)")
        if not isinstance(body, dict):
            raise Refused(400, 'the body must be a JSON object such as {"to": "+14155550100"}')
        return body
    return request.form.to_dict()


def token_refused(event: str, reason: str) -> tuple[Response, int]:
    """401 for a request without the API token, logged as `event`."""
    log_event(
        logger, event, logging.WARNING, path=request.path, remote=request.remote_addr, reason=reason
    )
    response, status = error(401, "missing or wrong API token: send 'Authorization: Bearer ...'")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, status
