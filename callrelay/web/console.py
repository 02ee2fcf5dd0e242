"""The operator console: a static page and its assets, served by the relay itself.

Nothing here needs the API token: the page only holds code, and everything it shows comes
from the API and Socket.IO, which do. Every asset is in the package (the browser libraries
vendored), so the page works with no network beyond the relay.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        # Socket.IO to this relay; the Voice SDK to Twilio when the browser places a call.
        "connect-src 'self' ws: wss: https://*.twilio.com wss://*.twilio.com",
        "frame-ancestors 'none'",
    ]
)


def console_routes() -> Blueprint:
    routes = Blueprint("console", __name__, static_folder=STATIC, static_url_path="/console/static")

    @routes.get("/console")
    def console() -> Response:
        response = send_from_directory(STATIC, "console.html", max_age=0)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return routes
