"""Who hears which call: Socket.IO rooms for every call, one call, and their audio.

Every client is in the room of every call (`calls:*`) or of the one it follows (`call:CA...`);
a client that takes audio is also in that room's audio room (`...:audio`, or
`...:audio:batchN` for N frames an event).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from flask import request
from flask_socketio import join_room, leave_room, rooms

ALL_CALLS = "calls:*"


def call_room(call_sid: str) -> str:
    return f"call:{call_sid}"


def audio_room(room: str) -> str:
    return f"{room}:audio"


def requested_call_sid(data: object) -> str | None:
    if isinstance(data, dict):
        value = data.get("callSid")
        if isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return None


def wants_audio(data: object) -> bool:
    return not (isinstance(data, dict) and data.get("audio") is False)


FRAME_MS = 20
MAX_BATCH_MS = 1000


def batch_frames(data: object) -> int:
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


def follow(call_sid: str | None, data: object, audio_rooms: AudioRooms) -> None:
    """Leave whatever the client followed; join one call's rooms or all calls'."""
    own = getattr(request, "sid", None)
    for room in rooms():
        if room != own:
            leave_room(room)
    room = call_room(call_sid) if call_sid else ALL_CALLS
    join_room(room)
    listening = batch_room(room, batch_frames(data)) if wants_audio(data) else None
    if listening is not None:
        join_room(listening)
    if own is not None:
        audio_rooms.enter(own, listening)
