"""The call history over HTTP: `GET /calls`, one call, its transcript and recordings, `DELETE`.

Everything here needs the API token, except a recording or a transcript fetched through the
signed URL that `GET /calls/<CallSid>` hands out: an `<audio>` or `<track>` element cannot send
a header, and a URL that names one file for an hour leaks less than the token would in a query
string.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from functools import partial
from typing import Any, BinaryIO, cast

from flask import Blueprint, Response, jsonify, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wsgi import wrap_file

from callrelay.exports import CAPTION_FORMATS, render
from callrelay.history import STEREO_FILE, HistoryUnavailable
from callrelay.logs import log_event
from callrelay.recording_formats import ENCODED_NAMES
from callrelay.relay import Relay
from callrelay.storage.index import MAX_PAGE, CallQuery
from callrelay.storage.shared_files import StoreUnavailable
from callrelay.twilio.sids import is_call_sid
from callrelay.web.http_errors import Refused, token_refused

logger = logging.getLogger("callrelay.http")

RECORDING_URL_SECONDS = 3600
"""How long a recording URL handed out by `GET /calls/<CallSid>` works."""


def history_routes(relay: Relay) -> Blueprint:
    routes = Blueprint("history", __name__)
    signer = relay.api_token.signer("recording")
    routes.before_request(lambda: _require_token_or_signed_url(relay, signer))
    routes.url_value_preprocessor(_check_call_sid)
    routes.register_error_handler(Refused, lambda refused: refused.response())
    routes.register_error_handler(HistoryUnavailable, _history_unavailable)
    routes.register_error_handler(StoreUnavailable, _store_unavailable)
    for path, view, methods in (
        ("/calls", list_calls, ["GET"]),
        ("/calls/<call_sid>", one_call, ["GET"]),
        ("/calls/<call_sid>/transcript", transcript, ["GET"]),
        ("/calls/<call_sid>/<stem>.<any(wav, flac, opus):extension>", recording, ["GET"]),
        ("/calls/<call_sid>", delete_call, ["DELETE"]),
    ):
        routes.add_url_rule(path, view.__name__, partial(view, relay), methods=methods)
    return routes


def _history_unavailable(error: HistoryUnavailable) -> tuple[Response, int]:
    log_event(
        logger,
        "history_unavailable",
        logging.WARNING,
        path=request.path,
        error=type(error.__cause__).__name__,
    )
    return Refused(
        503,
        "the call history's index is unreachable; calls are still recorded, and it "
        "catches up when it is back",
    ).response()


def _store_unavailable(error: StoreUnavailable) -> tuple[Response, int]:
    log_event(logger, "recordings_store_unreadable", logging.WARNING, path=request.path)
    return Refused(503, "the recordings' object store is unreachable; try again").response()


def _require_token_or_signed_url(
    relay: Relay, signer: URLSafeTimedSerializer
) -> tuple[Response, int] | None:
    if relay.api_token.matches_bearer(request.headers.get("Authorization")):
        return None
    signature = request.args.get("sig")
    if signature and request.method == "GET":  # a path `one_call` signed: a recording, captions
        try:
            if signer.loads(signature, max_age=RECORDING_URL_SECONDS) == request.path:
                return None
        except BadSignature:
            pass
    return token_refused("history_refused", "missing or wrong API token or recording signature")


def _check_call_sid(endpoint: str | None, values: dict[str, Any] | None) -> None:
    if values and "call_sid" in values and not is_call_sid(values["call_sid"]):
        raise Refused(400, "call SID must be 'CA' followed by 32 hex digits")


def list_calls(relay: Relay) -> Response:
    query = CallQuery(
        limit=_integer("limit", 50, 1, MAX_PAGE),
        before=_time("before"),
        number=request.args.get("number") or None,
        since=_time("since"),
        until=_time("until"),
        text=request.args.get("q") or None,
    )
    live = relay.live_call_sids()
    calls = [_with_liveness(call, live) for call in relay.history.calls(query)]
    more = len(calls) == query.limit
    return jsonify(
        {
            "calls": [{**call, "url": f"/calls/{call['callSid']}"} for call in calls],
            "next": calls[-1]["startedAt"] if more else None,
        }
    )


def one_call(relay: Relay, call_sid: str) -> tuple[Response, int]:
    call = relay.history.call(call_sid)
    if call is None:
        raise Refused(404, f"no call {call_sid} here")
    call = _with_liveness(call, relay.live_call_sids())
    signer = relay.api_token.signer("recording")
    for stored in [*call["recordings"], *([call["stereo"]] if "stereo" in call else [])]:
        path = f"/calls/{call_sid}/{stored['name']}"
        stored["url"] = f"{path}?sig={signer.dumps(path)}"
    path = f"/calls/{call_sid}/transcript"
    call["transcriptUrl"] = f"{path}?sig={signer.dumps(path)}"
    return jsonify(call), 200


def transcript(relay: Relay, call_sid: str) -> tuple[Response, int]:
    """JSON by default; `format=txt`, `vtt` or `srt` renders it; `download` as a file."""
    if not relay.history.has(call_sid):
        raise Refused(404, f"no call {call_sid} here")
    lines = relay.history.transcript_lines(call_sid)
    format_name = request.args.get("format", "json")
    if format_name == "json":
        response = jsonify({"callSid": call_sid, "transcript": lines})
    elif format_name in CAPTION_FORMATS:
        response = Response(render(format_name, lines), content_type=CAPTION_FORMATS[format_name])
    else:
        raise Refused(400, "'format' must be one of: json, " + ", ".join(CAPTION_FORMATS))
    if request.args.get("download") is not None:
        name = f"{call_sid}-transcript.{format_name}"
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response, 200


def recording(relay: Relay, call_sid: str, stem: str, extension: str) -> Response:
    file_name = f"{stem}.{extension}"
    opened: BinaryIO | None
    if file_name == STEREO_FILE:
        opened = cast(BinaryIO | None, relay.history.stereo(call_sid))
    elif relay.history.is_recording(call_sid, file_name):
        opened = relay.history.files.open(call_sid, file_name)
    else:
        opened = None
    if opened is None:
        raise Refused(404, f"no recording {file_name} of {call_sid}")
    codec = ENCODED_NAMES.get(file_name)
    return _file_response(
        opened,
        codec.content_type if codec else "audio/wav",
        f"{call_sid}-{file_name}",
        request.args.get("download"),
    )


def delete_call(relay: Relay, call_sid: str) -> tuple[str, int]:
    if call_sid in relay.live_call_sids():
        raise Refused(409, f"{call_sid} is live; hang it up first")
    if not relay.history.delete(call_sid):
        raise Refused(404, f"no call {call_sid} here")
    log_event(logger, "call_deleted", callSid=call_sid, remote=request.remote_addr)
    return "", 204


def _file_response(
    file: BinaryIO, content_type: str, download_name: str, download: str | None
) -> Response:
    """A stored file with byte ranges (`206` with the part asked for), so that an `<audio>`
    element can seek; `?download` makes it an attachment."""
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    response = Response(
        wrap_file(request.environ, file), content_type=content_type, direct_passthrough=True
    )
    response.content_length = size
    response.cache_control.no_cache = True
    if download is not None:
        response.headers["Content-Disposition"] = f'attachment; filename="{download_name}"'
    response.make_conditional(request.environ, accept_ranges=True, complete_length=size)
    return response


def _with_liveness(call: dict[str, Any], live: set[str]) -> dict[str, Any]:
    """Live now, and a call that says it is in progress but is live nowhere was cut off (the
    server stopped under it)."""
    is_live = call["callSid"] in live
    status = call.get("status")
    if status == "in-progress" and not is_live:
        status = "interrupted"
    return {**call, "live": is_live, "status": status}


def _integer(name: str, default: int, low: int, high: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise Refused(400, f"'{name}' must be a whole number from {low} to {high}")
    return int(value)


def _time(name: str) -> float | None:
    """A time from the query: seconds since 1970, or an ISO 8601 date or time (UTC if it
    names no zone)."""
    value = request.args.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(
            400, f"'{name}' must be a time: seconds since 1970, or ISO 8601 like 2026-11-30"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
