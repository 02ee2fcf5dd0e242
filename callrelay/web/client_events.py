"""What Socket.IO clients send: connecting with the API token, following a call, and on a
talk call, `play` and `clear`.

A client connects with its API token, `auth={"token": "..."}`; without it the connection is
refused. Every client receives every call unless it picks one: `"callSid": "CA..."` in that
`auth` or in the URL's query (`?callSid=CA...`, where several processes route the client to
the call's own: call_routing.py), or the `subscribe` event, puts it in that call's room only;
`unsubscribe` returns it to all calls. `"audio": false` in either leaves out
`media_in`/`media_out` (50 events a second per track) for clients that only want transcripts
and call events.

Handlers run in the event loop, one greenlet per client message.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from flask import request
from flask_socketio import ConnectionRefusedError, SocketIO, emit

from callrelay.access import ApiToken
from callrelay.logs import log_event
from callrelay.talkback import ClipError, clip_from_pcm, clip_from_text, clip_from_wav
from callrelay.web.rooms import AudioRooms, follow, requested_call_sid
from callrelay.web.talkback import NotTalkable, TalkBackCalls

logger = logging.getLogger("callrelay.socketio")

MAX_CLIP_NAME = 64
Forward = Callable[[str, dict[str, Any]], bool]
"""Hand a `play` or `clear` for a call this process does not hold to the one that does
(False if none does)."""


@dataclass(frozen=True)
class ClientEvents:
    api_token: ApiToken
    audio_rooms: AudioRooms
    talkback: TalkBackCalls | None = None
    forward: Forward | None = None
    set_paused: Callable[[str, bool], str] | None = None
    """Pause or resume a call wherever it streams (`Relay.set_paused`)."""

    def register(self, socketio: SocketIO) -> None:
        for name, handler in (
            ("connect", self.connect),
            ("subscribe", self.subscribe),
            ("unsubscribe", self.unsubscribe),
            ("disconnect", self.disconnect),
            ("play", self.play),
            ("clear", self.clear),
            ("pause", partial(self.pause, paused=True)),
            ("resume", partial(self.pause, paused=False)),
        ):
            socketio.on_event(name, handler)

    # Who follows what.

    def connect(self, auth: object = None) -> None:
        if not (isinstance(auth, dict) and self.api_token.matches(auth.get("token"))):
            log_event(
                logger,
                "client_refused",
                logging.WARNING,
                remote=request.remote_addr,
                reason="missing or wrong token",
            )
            raise ConnectionRefusedError(
                "unauthorized: missing or wrong API token (send it as 'token' in the auth "
                "object of the Socket.IO connection)"
            )
        call_sid = requested_call_sid(auth) or requested_call_sid(request.args)
        follow(call_sid, auth, self.audio_rooms)
        log_event(logger, "client_connected", logging.DEBUG, sid=_sid(), callSid=call_sid)

    def subscribe(self, data: object) -> dict[str, Any]:
        call_sid = requested_call_sid(data)
        if call_sid is None:
            return {"ok": False, "error": "subscribe needs {'callSid': 'CA...'}"}
        follow(call_sid, data, self.audio_rooms)
        return {"ok": True, "callSid": call_sid}

    def unsubscribe(self, data: object = None) -> dict[str, Any]:
        follow(None, data, self.audio_rooms)
        return {"ok": True}

    def disconnect(self, reason: object = None) -> None:
        own = _sid()
        if own is not None:
            self.audio_rooms.leave(own)

    # Pausing (PCI).

    def pause(self, data: object = None, *, paused: bool) -> dict[str, Any]:
        """`pause` / `resume` `{"callSid"}`: what the HTTP routes do, from a client."""
        event = "pause" if paused else "resume"
        call_sid = requested_call_sid(data)
        if call_sid is None or self.set_paused is None:
            return _refused(event, call_sid, f"{event} needs {{'callSid': 'CA...'}}")
        outcome = self.set_paused(call_sid, paused)
        if outcome == "not_live":
            return _refused(event, call_sid, f"{call_sid} is not streaming")
        log_event(logger, f"{event}_requested", callSid=call_sid, outcome=outcome, sid=_sid())
        return {
            "ok": True,
            "callSid": call_sid,
            "paused": paused,
            "forwarded": outcome == "forwarded",
        }

    # Talking back.

    def play(self, data: object = None) -> dict[str, Any]:
        call_sid = requested_call_sid(data)
        if call_sid is None or not isinstance(data, dict):
            return _refused("play", call_sid, "play needs {'callSid', 'audio', 'wav' or 'text'}")
        if self.talkback is None:
            return _refused("play", call_sid, "this server does not talk back")
        name = data.get("name") or "clip"
        if not isinstance(name, str) or len(name) > MAX_CLIP_NAME:
            return _refused("play", call_sid, f"'name' must be text of at most {MAX_CLIP_NAME}")
        reply: dict[str, Any] = {"callSid": call_sid, "name": name}
        try:
            clip = _clip(data)
            reply["seconds"] = round(len(clip) / 8000, 3)
            reply["aheadSeconds"] = round(self.talkback.play(call_sid, clip, name), 3)
        except NotTalkable as error:
            clip_text = base64.b64encode(clip).decode()
            return self._elsewhere("play", reply, error, {"clip": clip_text, "name": name})
        except ClipError as error:
            return _refused("play", call_sid, str(error))
        return {"ok": True, **reply}

    def clear(self, data: object = None) -> dict[str, Any]:
        call_sid = requested_call_sid(data)
        if call_sid is None:
            return _refused("clear", None, "clear needs {'callSid'}")
        if self.talkback is None:
            return _refused("clear", call_sid, "this server does not talk back")
        try:
            dropped = self.talkback.clear(call_sid)
        except NotTalkable as error:
            return self._elsewhere("clear", {"callSid": call_sid}, error, {})
        except ClipError as error:
            return _refused("clear", call_sid, str(error))
        return {"ok": True, "callSid": call_sid, "dropped": dropped}

    def _elsewhere(
        self, action: str, reply: dict[str, Any], error: NotTalkable, details: dict[str, Any]
    ) -> dict[str, Any]:
        """A call this process does not talk into: handed to the one that holds it, if any."""
        call_sid = reply["callSid"]
        command = {"action": action, "callSid": call_sid, "replyTo": _sid(), **details}
        if self.forward is None or not self.forward(call_sid, command):
            return _refused(action, call_sid, str(error))
        return {"ok": True, **reply, "forwarded": True}


def _clip(data: dict[str, Any]) -> bytes:
    """The 8 kHz mu-law a `play` asks for: words, a WAV, or 16 kHz PCM."""
    if "text" in data:
        return clip_from_text(data["text"])
    if "wav" in data:
        return clip_from_wav(data["wav"])
    return clip_from_pcm(data.get("audio"))


def _refused(event: str, call_sid: str | None, error: str) -> dict[str, Any]:
    """Said twice: in the acknowledgement, and as an `error` event for clients that send
    without asking for one."""
    emit("error", {"event": event, "callSid": call_sid, "error": error})
    return {"ok": False, "error": error}


def _sid() -> str | None:
    return getattr(request, "sid", None)
