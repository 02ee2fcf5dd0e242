"""Socket.IO: who receives which call, and the sink that relays a call's events to them.

A client connects with its API token, `auth={"token": "..."}`; without it the connection is
refused. Every client receives every call unless it picks one: `"callSid": "CA..."` in that
`auth`, or the `subscribe` event, puts it in that call's room only; `unsubscribe` returns it to
all calls.
`"audio": false` in either leaves out `media_in`/`media_out` (50 events a second per track) for
clients that only want transcripts and call events.

On a call placed in talk mode, `play` sends audio into the call and `clear` stops it; each clip
ends with a `played` event to the call's clients.
"""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pybase64
from flask import request
from flask_socketio import ConnectionRefusedError, SocketIO, emit, join_room, leave_room, rooms

from callrelay.access import ApiToken
from callrelay.asr import Transcript
from callrelay.call import AudioChunk, CallInfo, pcm_bytes
from callrelay.logs import log_event
from callrelay.relay import CallPublisher
from callrelay.talkback import ClipError, clip_from_pcm, clip_from_text, clip_from_wav
from callrelay.tracks import MEDIA_EVENTS, SPEAKER_NAMES
from callrelay.twilio.media_stream import Track
from callrelay.web.engineio_queues import client_queue, drop_oldest_audio
from callrelay.web.talkback import NotTalkable, TalkBackCalls

logger = logging.getLogger("callrelay.socketio")

ALL_CALLS = "calls:*"
MAX_CLIP_NAME = 64


def call_room(call_sid: str) -> str:
    return f"call:{call_sid}"


def audio_room(room: str) -> str:
    return f"{room}:audio"


def _call_sid(data: object) -> str | None:
    if isinstance(data, dict):
        value = data.get("callSid")
        if isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return None


def _wants_audio(data: object) -> bool:
    return not (isinstance(data, dict) and data.get("audio") is False)


FRAME_MS = 20
MAX_BATCH_MS = 1000


def _batch_frames(data: object) -> int:
    """Frames per audio event the client asked for with `audioBatchMs` (1: one per frame)."""
    wanted = data.get("audioBatchMs") if isinstance(data, dict) else None
    if isinstance(wanted, bool) or not isinstance(wanted, int | float):
        return 1
    return max(1, round(min(float(wanted), MAX_BATCH_MS) / FRAME_MS))


def batch_room(room: str, frames: int) -> str:
    """The audio room of clients that take `frames` frames an event."""
    return audio_room(room) if frames == 1 else f"{audio_room(room)}:batch{frames}"


def batch_sizes(rooms: Iterable[str]) -> set[int]:
    """The batch sizes (above one frame) that audio rooms named in `rooms` ask for."""
    return {int(room.rsplit(":batch", 1)[1]) for room in rooms if ":batch" in room}


class AudioRooms:
    """Which audio rooms have a listener in this process, so that other processes send a
    call's audio through Redis only when someone here listens to it."""

    def __init__(self, on_change: Callable[[str, bool], None] | None = None) -> None:
        self.batch_sizes: set[int] = set()
        """Batch sizes this process's clients ask for."""
        self._members: Counter[str] = Counter()
        self._room_of: dict[str, str] = {}
        self._on_change = on_change

    def enter(self, sid: str, room: str | None) -> None:
        self.leave(sid)
        if room is None:
            return
        self._room_of[sid] = room
        self._members[room] += 1
        if self._members[room] == 1:
            self.batch_sizes = batch_sizes(self._members)
            if self._on_change is not None:
                self._on_change(room, True)

    def leave(self, sid: str) -> None:
        room = self._room_of.pop(sid, None)
        if room is None:
            return
        self._members[room] -= 1
        if self._members[room] <= 0:
            del self._members[room]
            self.batch_sizes = batch_sizes(self._members)
            if self._on_change is not None:
                self._on_change(room, False)


def _follow(call_sid: str | None, data: object, audio_rooms: AudioRooms) -> None:
    """Leave whatever the client followed; join one call's rooms or all calls'."""
    own = getattr(request, "sid", None)
    for room in rooms():
        if room != own:
            leave_room(room)
    room = call_room(call_sid) if call_sid else ALL_CALLS
    join_room(room)
    listening = batch_room(room, _batch_frames(data)) if _wants_audio(data) else None
    if listening is not None:
        join_room(listening)
    if own is not None:
        audio_rooms.enter(own, listening)


def register_client_events(
    socketio: SocketIO,
    api_token: ApiToken,
    audio_rooms: AudioRooms | None = None,
    talkback: TalkBackCalls | None = None,
    forward: Callable[[str, dict[str, Any]], bool] | None = None,
) -> None:
    """`forward(call_sid, command)`: hand a `play` or `clear` for a call this process does
    not hold to the process that does (False if none does)."""
    audio_rooms = audio_rooms or AudioRooms()

    def refused(event: str, call_sid: str | None, error: str) -> dict[str, Any]:
        """Said twice: in the acknowledgement, and as an `error` event for clients that
        send without asking for one."""
        emit("error", {"event": event, "callSid": call_sid, "error": error})
        return {"ok": False, "error": error}

    def elsewhere(
        action: str, reply: dict[str, Any], error: NotTalkable, details: dict[str, Any]
    ) -> dict[str, Any]:
        """A call this process does not talk into: handed to the one that holds it, if any."""
        call_sid = reply["callSid"]
        command = {
            "action": action,
            "callSid": call_sid,
            "replyTo": getattr(request, "sid", None),
            **details,
        }
        if forward is None or not forward(call_sid, command):
            return refused(action, call_sid, str(error))
        return {"ok": True, **reply, "forwarded": True}

    @socketio.on("play")  # type: ignore[untyped-decorator]
    def play(data: object = None) -> dict[str, Any]:
        call_sid = _call_sid(data)
        if call_sid is None or not isinstance(data, dict):
            return refused("play", call_sid, "play needs {'callSid', 'audio', 'wav' or 'text'}")
        if talkback is None:
            return refused("play", call_sid, "this server does not talk back")
        name = data.get("name") or "clip"
        if not isinstance(name, str) or len(name) > MAX_CLIP_NAME:
            return refused("play", call_sid, f"'name' must be text of at most {MAX_CLIP_NAME}")
        reply: dict[str, Any] = {"callSid": call_sid, "name": name}
        try:
            if "text" in data:
                clip = clip_from_text(data["text"])
            elif "wav" in data:
                clip = clip_from_wav(data["wav"])
            else:
                clip = clip_from_pcm(data.get("audio"))
            reply["seconds"] = round(len(clip) / 8000, 3)
            reply["aheadSeconds"] = round(talkback.play(call_sid, clip, name), 3)
        except NotTalkable as error:
            clip_text = base64.b64encode(clip).decode()
            return elsewhere("play", reply, error, {"clip": clip_text, "name": name})
        except ClipError as error:
            return refused("play", call_sid, str(error))
        return {"ok": True, **reply}

    @socketio.on("clear")  # type: ignore[untyped-decorator]
    def clear(data: object = None) -> dict[str, Any]:
        call_sid = _call_sid(data)
        if call_sid is None:
            return refused("clear", None, "clear needs {'callSid'}")
        if talkback is None:
            return refused("clear", call_sid, "this server does not talk back")
        try:
            dropped = talkback.clear(call_sid)
        except NotTalkable as error:
            return elsewhere("clear", {"callSid": call_sid}, error, {})
        except ClipError as error:
            return refused("clear", call_sid, str(error))
        return {"ok": True, "callSid": call_sid, "dropped": dropped}

    @socketio.on("connect")  # type: ignore[untyped-decorator]
    def connect(auth: object = None) -> None:
        if not (isinstance(auth, dict) and api_token.matches(auth.get("token"))):
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
        call_sid = _call_sid(auth)
        _follow(call_sid, auth, audio_rooms)
        log_event(
            logger,
            "client_connected",
            logging.DEBUG,
            sid=getattr(request, "sid", None),
            callSid=call_sid,
        )

    @socketio.on("subscribe")  # type: ignore[untyped-decorator]
    def subscribe(data: object) -> dict[str, Any]:
        call_sid = _call_sid(data)
        if call_sid is None:
            return {"ok": False, "error": "subscribe needs {'callSid': 'CA...'}"}
        _follow(call_sid, data, audio_rooms)
        return {"ok": True, "callSid": call_sid}

    @socketio.on("unsubscribe")  # type: ignore[untyped-decorator]
    def unsubscribe(data: object = None) -> dict[str, Any]:
        _follow(None, data, audio_rooms)
        return {"ok": True}

    @socketio.on("disconnect")  # type: ignore[untyped-decorator]
    def disconnect(reason: object = None) -> None:
        own = getattr(request, "sid", None)
        if own is not None:
            audio_rooms.leave(own)


MAX_QUEUED_PACKETS = 500
"""About 2.5 s of one call's audio waiting for one client: past it, that client is slow."""


class SocketIORelay(CallPublisher):
    """The sink that puts a call on Socket.IO: audio, start and end, DTMF.

    python-engineio queues every packet for every client without limit, so one client that
    reads slowly or never would make the server's memory grow for as long as it stays. Before
    audio goes out, a client with more than `MAX_QUEUED_PACKETS` waiting loses its oldest
    queued audio (never transcripts or call events) down to half that; drops are counted.
    """

    def __init__(
        self,
        socketio: SocketIO,
        audio_rooms: AudioRooms,
        remote_audio_rooms: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        """`audio_rooms`: this process's listeners' audio rooms (batch sizes among them);
        `remote_audio_rooms`, with other processes: the audio rooms they have listeners in."""
        self._socketio = socketio
        self.audio_rooms = audio_rooms
        self.remote_audio_rooms = remote_audio_rooms
        self._batches: dict[tuple[str, Track, int], list[AudioChunk]] = {}
        self._remote_seen: frozenset[str] = frozenset()
        self._remote_sizes: set[int] = set()
        self.dropped_audio = 0
        self.relayed: Counter[str] = Counter()
        """Audio events emitted, by track."""
        self._slow_clients: set[str] = set()

    def _audio_listeners(self, rooms: list[str]) -> int:
        """How many clients are in `rooms`; a slow one first loses its oldest queued audio."""
        server = self._socketio.server
        listeners = list(server.manager.get_participants("/", rooms))
        for sid, eio_sid in listeners:
            waiting = client_queue(server.eio, eio_sid)
            if waiting is None or waiting.qsize() <= MAX_QUEUED_PACKETS:
                continue
            dropped = drop_oldest_audio(waiting, MAX_QUEUED_PACKETS // 2)
            self.dropped_audio += dropped
            if sid not in self._slow_clients:
                self._slow_clients.add(sid)
                log_event(
                    logger,
                    "client_slow",
                    logging.WARNING,
                    sid=sid,
                    droppedAudio=dropped,
                    detail="a Socket.IO client is not keeping up; its oldest audio is "
                    "dropped, transcripts and call events are kept",
                )
        return len(listeners)

    def _emit(self, event: str, call: CallInfo, payload: dict[str, Any]) -> None:
        self._socketio.emit(event, payload, to=[ALL_CALLS, call_room(call.call_sid)])

    def call_started(self, call: CallInfo) -> None:
        self._emit(
            "call_started",
            call,
            {
                **call.ids,
                "tracks": list(call.tracks),
                "customParameters": dict(call.custom_parameters),
                "resumed": call.resumed,
                "offsetMs": call.offset_ms,
            },
        )

    def _remote_rooms(self) -> tuple[frozenset[str], set[int]]:
        """Other processes' audio rooms and the batch sizes among them; the sizes are read
        off the room names once per new set of rooms, not once per frame."""
        remote_rooms = self.remote_audio_rooms() if self.remote_audio_rooms else frozenset()
        if remote_rooms is not self._remote_seen:
            self._remote_seen, self._remote_sizes = remote_rooms, batch_sizes(remote_rooms)
        return remote_rooms, self._remote_sizes

    def audio(self, call: CallInfo, chunk: AudioChunk) -> None:
        remote_rooms, remote_sizes = self._remote_rooms()
        sizes = (
            self.audio_rooms.batch_sizes | remote_sizes
            if remote_sizes
            else self.audio_rooms.batch_sizes
        )
        if sizes:
            self._batch(call, chunk, sizes, remote_rooms)
        if chunk.is_gap:
            return
        rooms = [audio_room(ALL_CALLS), audio_room(call_room(call.call_sid))]
        remote = not remote_rooms.isdisjoint(rooms)
        if not self._audio_listeners(rooms) and not remote:
            return  # most calls have no one listening to their audio: nothing to encode
        self._send_audio(call, [chunk], rooms, remote)
        self.relayed[chunk.track] += 1

    def _send_audio(
        self, call: CallInfo, chunks: list[AudioChunk], rooms: list[str], remote: bool
    ) -> None:
        payload: dict[str, Any] = {
            **call.ids,
            "timestamp": chunks[0].timestamp_ms,
            "audio": pybase64.b64encode_as_string(b"".join(pcm_bytes(c.pcm) for c in chunks)),
        }
        if len(chunks) > 1:
            payload["frames"] = len(chunks)
        self._socketio.emit(
            MEDIA_EVENTS[chunks[0].track],
            payload,
            to=rooms,
            # Audio crosses to other processes only when one of them listens to it: a
            # hundred publishes a second per call that every process must decode otherwise.
            ignore_queue=not remote,
        )

    def _batch(
        self, call: CallInfo, chunk: AudioChunk, sizes: set[int], remote_rooms: frozenset[str]
    ) -> None:
        """Gather consecutive frames for the clients that take several an event; a gap (or a
        frame that does not follow on) sends what was gathered."""
        for frames in sizes:
            key = (call.stream_sid, chunk.track, frames)
            gathered = self._batches.setdefault(key, [])
            if gathered and (chunk.is_gap or chunk.start_sample != gathered[-1].end_sample):
                self._flush_batch(call, key, remote_rooms)
                gathered = self._batches.setdefault(key, [])
            if chunk.is_gap:
                continue
            gathered.append(chunk)
            if len(gathered) >= frames:
                self._flush_batch(call, key, remote_rooms)

    def _flush_batch(
        self, call: CallInfo, key: tuple[str, Track, int], remote_rooms: frozenset[str]
    ) -> None:
        gathered = self._batches.pop(key, [])
        if not gathered:
            return
        rooms = [batch_room(ALL_CALLS, key[2]), batch_room(call_room(call.call_sid), key[2])]
        remote = not remote_rooms.isdisjoint(rooms)
        if self._audio_listeners(rooms) or remote:
            self._send_audio(call, gathered, rooms, remote)

    def dtmf(self, call: CallInfo, digit: str) -> None:
        self._emit("dtmf", call, {**call.ids, "digit": digit})

    def call_ended(self, call: CallInfo, reason: str) -> None:
        remote_rooms, _ = self._remote_rooms()
        for key in [key for key in self._batches if key[0] == call.stream_sid]:
            self._flush_batch(call, key, remote_rooms)
        self._emit(
            "call_ended",
            call,
            {
                **call.ids,
                "tracks": list(call.tracks),
                "reason": reason,
                "customParameters": dict(call.custom_parameters),
            },
        )

    def transcript(self, call: CallInfo, track: Track, transcript: Transcript) -> None:
        payload: dict[str, Any] = {
            **call.ids,
            "text": transcript.text,
            "start": round(transcript.start, 3),
            "end": round(transcript.end, 3),
        }
        if transcript.confidence is not None:
            payload["confidence"] = transcript.confidence
        if transcript.is_final:
            self._emit(SPEAKER_NAMES[track], call, payload)
        else:
            self._emit("partial", call, {**payload, "speaker": SPEAKER_NAMES[track]})

    def transcription_ended(self, call: CallInfo) -> None:
        self._emit("transcription_ended", call, call.ids)

    def lagging(self, call: CallInfo, track: Track, lag: float, skipped: float) -> None:
        self._emit(
            "transcription_lag",
            call,
            {
                **call.ids,
                "speaker": SPEAKER_NAMES[track],
                "lagSeconds": round(lag, 2),
                "skippedSeconds": round(skipped, 2),
            },
        )

    def call_status(self, status: dict[str, Any]) -> None:
        call_sid = str(status.get("callSid", ""))
        self._socketio.emit("call_status", status, to=[ALL_CALLS, call_room(call_sid)])

    def played(self, call_sid: str, name: str, interrupted: bool) -> None:
        """A talk-back clip is over: played to its end, or cut off by `clear`."""
        payload = {"callSid": call_sid, "name": name, "interrupted": interrupted}
        self._socketio.emit("played", payload, to=[ALL_CALLS, call_room(call_sid)])
