"""The sink that puts a call on Socket.IO: audio, start and end, DTMF, transcripts, talk-back.

python-engineio queues every packet for every client without limit, so one client that reads
slowly or never would make the server's memory grow for as long as it stays. Before audio goes
out, a client with more than `MAX_QUEUED_PACKETS` waiting loses its oldest queued audio (never
transcripts or call events) down to half that; drops are counted (`engineio_queues.py` does the
trimming).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pybase64
from flask_socketio import SocketIO

from callrelay import call_events
from callrelay.asr import Transcript
from callrelay.call import AudioChunk, CallInfo, pcm_bytes
from callrelay.logs import log_event
from callrelay.relay import CallPublisher
from callrelay.tracks import MEDIA_EVENTS, SPEAKER_NAMES
from callrelay.twilio.media_stream import Track
from callrelay.web.engineio_queues import client_queue, drop_oldest_audio
from callrelay.web.rooms import (
    ALL_CALLS,
    AudioRooms,
    audio_room,
    batch_room,
    batch_sizes,
    call_room,
)

logger = logging.getLogger("callrelay.socketio")

MAX_QUEUED_PACKETS = 500
"""About 2.5 s of one call's audio waiting for one client: past it, that client is slow."""


class SocketIORelay(CallPublisher):
    """Runs on the stream's greenlet (the event loop): emitting only queues packets."""

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
        self.published_audio = 0
        """Audio events that crossed to other processes through Redis."""
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
        self._emit("call_started", call, call_events.started(call))

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
        self.published_audio += remote
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
            call_events.ended(call, reason),
        )

    def transcript(self, call: CallInfo, track: Track, transcript: Transcript) -> None:
        payload = call_events.transcribed(call, transcript)
        if transcript.is_final:
            self._emit(SPEAKER_NAMES[track], call, payload)
        else:
            self._emit("partial", call, {**payload, "speaker": SPEAKER_NAMES[track]})

    def transcription_ended(self, call: CallInfo) -> None:
        self._emit("transcription_ended", call, call.ids)

    def call_paused(self, call_sid: str, reason: str, at: float) -> None:
        payload = call_events.paused(call_sid, reason, at)
        self._socketio.emit("call_paused", payload, to=[ALL_CALLS, call_room(call_sid)])

    def call_resumed(self, call_sid: str, reason: str, at: float) -> None:
        payload = call_events.paused(call_sid, reason, at)
        self._socketio.emit("call_resumed", payload, to=[ALL_CALLS, call_room(call_sid)])

    def call_completed(self, call_sid: str, record: dict[str, Any]) -> None:
        """From the completion's (or the upload's) background task: emitting only queues
        packets."""
        self._socketio.emit(
            "call_completed", call_events.completed(record), to=[ALL_CALLS, call_room(call_sid)]
        )

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
