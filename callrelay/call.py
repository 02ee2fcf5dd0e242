"""One live call: its media stream's state machine, its tracks' timelines and its sinks.

This is the pure core of the relay. It never touches a socket or a file: the WebSocket adapter
feeds it text frames, and sinks (Socket.IO relay, recorder, recogniser) receive typed events.

A track's timeline is Twilio's `media.timestamp` (ms since the stream started), not the arrival
rate: Twilio may skip silence or drop frames, so a jump in timestamps is filled with silence and
both tracks stay aligned sample for sample from time 0.

A call can have more than one stream: TwiML that starts a stream again (after `<Stop><Stream>`,
a call update, a redirect) gives a new StreamSid whose timestamps restart at 0. The registry
places such a stream on the call's timeline by when it started, so recordings, transcripts
and timestamps go on where the call is, not from 0.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from callrelay.audio import MULAW_SILENCE, Int16Array, Upsampler2x, mulaw_decode
from callrelay.close_codes import CloseCode
from callrelay.logs import log_event
from callrelay.pauses import CallPauses
from callrelay.twilio.media_stream import (
    Connected,
    Dtmf,
    InvalidMediaMessage,
    Mark,
    Media,
    Start,
    Stop,
    Track,
    UnknownEvent,
    parse_message,
)

logger = logging.getLogger("callrelay.call")

INPUT_RATE = 8000
OUTPUT_RATE = 16000

JITTER_TOLERANCE_SAMPLES = 8
"""Timestamps are whole ms; a mismatch up to 1 ms is rounding, not a gap or an overlap."""

MAX_GAP_SECONDS = 600
"""A longer jump is no silence Twilio skipped (the TwiML pauses 600 s at most) but a bad frame."""

GAP_CHUNK_SAMPLES = INPUT_RATE
"""Silence for a long gap goes out in 1 s pieces, so no sink ever holds a whole gap in memory."""


@dataclass(frozen=True)
class CallInfo:
    call_sid: str
    stream_sid: str
    account_sid: str
    tracks: tuple[Track, ...]
    custom_parameters: Mapping[str, str]
    started_at: float
    offset_ms: int = 0
    """Where this stream's time 0 lies on the call's timeline: 0 for the call's first stream."""
    resumed: bool = False
    """An earlier stream of this call has ended and this one carries the call on."""

    @property
    def ids(self) -> dict[str, str]:
        """The call's and stream's SIDs, as Twilio names them, for events and log lines."""
        return {"callSid": self.call_sid, "streamSid": self.stream_sid}


@dataclass(frozen=True)
class AudioChunk:
    """16 kHz PCM for one track, placed on the call's timeline.

    `timestamp_ms` is the time on the call's timeline of the frame it came from (Twilio's
    timestamp plus the stream's offset; for a gap, the time the gap starts); `start_sample` is
    where it begins on the 16 kHz timeline of the call.
    """

    track: Track
    timestamp_ms: int
    start_sample: int
    pcm: Int16Array
    mulaw: bytes
    """The 8 kHz mu-law it came from (silence for a gap)."""
    is_gap: bool = False

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.pcm)

    def silenced(self) -> AudioChunk:
        """The same stretch of the call as silence, as for a gap (a paused call's audio)."""
        return replace(
            self,
            pcm=np.zeros(len(self.pcm), np.int16),
            mulaw=bytes([MULAW_SILENCE]) * len(self.mulaw),
            is_gap=True,
        )

    @property
    def pcm_8k(self) -> Int16Array:
        """The telephone audio itself, decoded, for consumers that want 8 kHz."""
        return mulaw_decode(self.mulaw)


class CallSink:
    """Where a call's events go; a sink overrides the events it wants (the rest do nothing).

    Called on the stream's greenlet, in the event loop: return quickly, and leave any I/O
    that can wait (a network round trip) to a background task."""

    def call_started(self, call: CallInfo) -> None:
        pass

    def audio(self, call: CallInfo, chunk: AudioChunk) -> None:
        pass

    def dtmf(self, call: CallInfo, digit: str) -> None:
        pass

    def call_ended(self, call: CallInfo, reason: str) -> None:
        pass


class CallRegistry(Protocol):
    """Where a session's stream is counted while it lasts, and placed on its call's timeline
    (a later stream of a known call carries on where the call is). Answers at once: no I/O."""

    def add(self, call: CallInfo) -> CallInfo:
        """The stream taken in, placed on its call's timeline (`offset_ms`, `resumed`)."""

    def remove(self, stream_sid: str, end_ms: int) -> None:
        """The stream has ended, having reached `end_ms` on its call's timeline."""


class LateFrame(Exception):
    """A frame whose whole span lies before the track's current position (a duplicate)."""


class TrackPipeline:
    """One track: places frames on the timeline, fills gaps, decodes and upsamples."""

    def __init__(self, track: Track, offset_ms: int = 0) -> None:
        self.track = track
        self.offset_ms = offset_ms
        self.origin = offset_ms * INPUT_RATE // 1000
        self.position = self.origin
        """Next input sample (8 kHz) on the call's timeline."""
        self._upsampler = Upsampler2x()
        self.frames = 0
        self.gap_samples = 0
        self.late_frames = 0

    def accept(self, timestamp_ms: int, payload: bytes) -> Iterator[AudioChunk]:
        target = self.origin + timestamp_ms * INPUT_RATE // 1000
        offset = target - self.position
        if offset > INPUT_RATE * MAX_GAP_SECONDS:
            raise InvalidMediaMessage(
                f"media.timestamp {timestamp_ms} jumps {offset / INPUT_RATE:.0f} s ahead of"
                f" the {self.track} track"
            )
        if offset < -JITTER_TOLERANCE_SAMPLES:
            overlap = -offset
            if overlap >= len(payload):
                self.late_frames += 1
                raise LateFrame(f"{self.track} frame at {timestamp_ms} ms is behind the track")
            payload = payload[overlap:]
        if offset > JITTER_TOLERANCE_SAMPLES:
            yield from self._silence(offset)
        start = self.position
        self.position += len(payload)
        self.frames += 1
        yield AudioChunk(
            track=self.track,
            timestamp_ms=self.offset_ms + timestamp_ms,
            start_sample=2 * start,
            pcm=self._upsampler.process_mulaw(payload),
            mulaw=payload,
        )

    def pad_to(self, position: int) -> Iterator[AudioChunk]:
        """Silence up to `position`, so the call's tracks end together."""
        if position > self.position:
            yield from self._silence(position - self.position)

    def _silence(self, sample_count: int) -> Iterator[AudioChunk]:
        self.gap_samples += sample_count
        while sample_count > 0:
            piece = min(sample_count, GAP_CHUNK_SAMPLES)
            start = self.position
            self.position += piece
            sample_count -= piece
            yield AudioChunk(
                track=self.track,
                timestamp_ms=start * 1000 // INPUT_RATE,
                start_sample=2 * start,
                pcm=self._upsampler.process_silence(piece),
                mulaw=bytes([MULAW_SILENCE]) * piece,
                is_gap=True,
            )


class StreamState(enum.Enum):
    AWAITING_START = "awaiting-start"
    STREAMING = "streaming"
    ENDED = "ended"


class StreamProtocolError(Exception):
    """The peer broke the Media Streams protocol; the socket must close with `close_code`."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


@dataclass
class FrameProblems:
    """Counts of frames dropped for each reason, logged once each and summed at the end."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str) -> bool:
        """Count one; True the first time this kind is seen (time to log it)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return self.counts[kind] == 1


class MediaStreamSession:
    """One Twilio Media Streams WebSocket: AWAITING_START -> STREAMING -> ENDED.

    Feed it every text frame with `receive`; call `close` when the socket goes away however it
    went. Fatal protocol breaks raise `StreamProtocolError`; a bad media frame is dropped,
    counted and logged once, and the call goes on.
    """

    def __init__(
        self,
        sinks: Sequence[CallSink],
        registry: CallRegistry,
        clock: Callable[[], float] = time.time,
        call_sid: str | None = None,
        mask_dtmf: bool = False,
        pauses: CallPauses | None = None,
    ) -> None:
        """`call_sid`: the call the stream's URL names (`/stream/<CallSid>`), if it names one;
        a `start` for another call is refused. `mask_dtmf`: keypad digits reach the sinks as
        `*` (keypads enter PINs and card numbers). `pauses`: which calls are paused (their
        audio reaches the sinks as silence)."""
        self.state = StreamState.AWAITING_START
        self._mask_dtmf = mask_dtmf
        self._pauses = pauses
        self._expected_call_sid = call_sid
        self.on_mark: Callable[[CallInfo, str], None] | None = None
        """Twilio echoed a mark (bidirectional streams): the audio before it has played."""
        self._sinks = sinks
        self._audio_sinks = [s for s in sinks if type(s).audio is not CallSink.audio]
        """The sinks that take audio: a frame skips those that would do nothing with it."""
        self._registry = registry
        self._clock = clock
        self.call: CallInfo | None = None
        self._tracks: dict[Track, TrackPipeline] = {}
        self.problems = FrameProblems()
        self.unknown_events: set[str] = set()

    def receive(self, text: str | bytes) -> None:
        try:
            message = parse_message(text)
        except InvalidMediaMessage as error:
            self._bad_message(text, error)
            return
        if self.state is StreamState.ENDED:
            raise StreamProtocolError(CloseCode.PROTOCOL_ERROR, "message after stop")
        match message:
            case Media():
                self._media(message)
            case Start():
                self._start(message)
            case Connected():
                if self.state is not StreamState.AWAITING_START:
                    raise StreamProtocolError(CloseCode.PROTOCOL_ERROR, "connected after start")
            case Stop():
                self._require_streaming("stop")
                self.close("stop")
            case Dtmf():
                call = self._require_streaming("dtmf")
                digit = "*" if self._mask_dtmf else message.digit
                if self._pauses is not None:
                    self._pauses.keyed(call.call_sid)
                for sink in self._sinks:
                    sink.dtmf(call, digit)
            case Mark():
                call = self._require_streaming("mark")
                if self.on_mark is not None:
                    self.on_mark(call, message.name)
            case UnknownEvent():
                if message.event not in self.unknown_events and len(self.unknown_events) < 16:
                    self.unknown_events.add(message.event)
                    log_event(
                        logger, "unknown_event", logging.WARNING, event=message.event, **self.ids
                    )

    def close(self, reason: str) -> None:
        """End the call once, whatever ended it; every sink hears of it exactly once."""
        if self.state is StreamState.ENDED:
            return
        was_streaming = self.state is StreamState.STREAMING
        self.state = StreamState.ENDED
        call = self.call
        if not was_streaming or call is None:
            return
        end = max(pipeline.position for pipeline in self._tracks.values())
        for pipeline in self._tracks.values():
            for chunk in pipeline.pad_to(end):
                self._deliver(call, chunk)
        self._registry.remove(call.stream_sid, -(-end * 1000 // INPUT_RATE))
        log_event(
            logger,
            "call_ended",
            reason=reason,
            duration_s=round(end / INPUT_RATE - call.offset_ms / 1000, 3),
            frames={track: p.frames for track, p in self._tracks.items()},
            gap_ms={track: p.gap_samples * 1000 // INPUT_RATE for track, p in self._tracks.items()},
            dropped=dict(self.problems.counts),
            **self.ids,
        )
        if self._pauses is not None:
            self._pauses.forget(call.call_sid)
        for sink in self._sinks:
            sink.call_ended(call, reason)

    @property
    def ids(self) -> dict[str, str]:
        """The SIDs for a log line: none before `start`."""
        return {} if self.call is None else self.call.ids

    def _bad_message(self, text: str | bytes, error: InvalidMediaMessage) -> None:
        if isinstance(text, bytes):
            raise StreamProtocolError(CloseCode.UNSUPPORTED_DATA, str(error))
        if self.state is StreamState.STREAMING and error.event == "media":
            self._drop_frame("invalid_media", str(error))
            return
        raise StreamProtocolError(CloseCode.INVALID_PAYLOAD, str(error))

    def _drop_frame(self, kind: str, detail: str) -> None:
        if self.problems.add(kind):
            log_event(
                logger, "frame_dropped", logging.WARNING, kind=kind, detail=detail, **self.ids
            )

    def _require_streaming(self, event: str) -> CallInfo:
        if self.state is not StreamState.STREAMING or self.call is None:
            raise StreamProtocolError(CloseCode.PROTOCOL_ERROR, f"{event} before start")
        return self.call

    def _start(self, start: Start) -> None:
        if self.state is not StreamState.AWAITING_START:
            raise StreamProtocolError(CloseCode.PROTOCOL_ERROR, "second start on one stream")
        if self._expected_call_sid not in (None, start.call_sid):
            raise StreamProtocolError(
                CloseCode.POLICY_VIOLATION,
                f"start is for {start.call_sid}, the stream URL for {self._expected_call_sid}",
            )
        self.call = self._registry.add(
            CallInfo(
                call_sid=start.call_sid,
                stream_sid=start.stream_sid,
                account_sid=start.account_sid,
                tracks=start.tracks,
                custom_parameters=start.custom_parameters,
                started_at=self._clock(),
            )
        )
        self._tracks = {track: TrackPipeline(track, self.call.offset_ms) for track in start.tracks}
        self.state = StreamState.STREAMING
        log_event(
            logger,
            "call_started",
            tracks=list(start.tracks),
            customParameters=dict(start.custom_parameters),
            **({"offsetMs": self.call.offset_ms} if self.call.offset_ms else {}),
            **({"resumed": True} if self.call.resumed else {}),
            **self.ids,
        )
        for sink in self._sinks:
            sink.call_started(self.call)

    def _media(self, media: Media) -> None:
        call = self._require_streaming("media")
        if media.stream_sid != call.stream_sid:
            self._drop_frame("wrong_stream_sid", f"streamSid {media.stream_sid[:40]!r}")
            return
        pipeline = self._tracks.get(media.track)
        if pipeline is None:
            self._drop_frame("undeclared_track", f"track {media.track!r} not in start.tracks")
            return
        try:
            for chunk in pipeline.accept(media.timestamp_ms, media.payload):
                self._deliver(call, chunk)
        except LateFrame as late:
            self._drop_frame("late_frame", str(late))
        except InvalidMediaMessage as error:
            self._drop_frame("bad_timestamp", str(error))

    def _deliver(self, call: CallInfo, chunk: AudioChunk) -> None:
        if self._pauses is not None and self._pauses.is_paused(call.call_sid):
            chunk = chunk.silenced()
        for sink in self._audio_sinks:
            sink.audio(call, chunk)


def pcm_bytes(pcm: Int16Array) -> bytes:
    """Little-endian PCM16 bytes, whatever the machine's byte order."""
    return pcm.astype("<i2", copy=False).tobytes()
