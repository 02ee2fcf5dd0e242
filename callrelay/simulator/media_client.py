"""The Media Streams client: what Twilio does once TwiML says `<Start><Stream>`.

It opens the WebSocket with Twilio's headers and signature, sends `connected`, `start`, one
`media` message per track every 20 ms (timestamps from 5 ms, as in Twilio's docs), `dtmf` where
asked, and `stop`, then closes. Knobs reproduce what real calls do: skipped silence, dropped
frames, bursty delivery, faster than real time.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from simple_websocket import Client, ConnectionClosed

from callrelay.close_codes import CloseCode
from callrelay.simulator.audio_source import FRAME_MS, frames, is_silent
from callrelay.twilio import media_stream as msg
from callrelay.twilio import outbound
from callrelay.twilio.media_stream import Track
from callrelay.twilio.signatures import sign

TWILIO_USER_AGENT = "Twilio.TmeWs/1.0"


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True)
class StreamOptions:
    """How the stream is delivered.

    speed: 1.0 is real time, 10.0 ten times faster, 0 as fast as the socket takes it.
    silence: "continuous" sends every frame (Twilio's usual); "skip" leaves out silent frames,
        as some calls do, so timestamps jump.
    drop_rate: share of frames lost (Twilio's warning 31930, audio discarded under congestion).
    jitter_ms: frames are held back up to this long and then sent in a burst, order kept.
    dtmf: (digit, seconds into the call) pairs, sent on the inbound track.
    """

    speed: float = 1.0
    silence: Literal["continuous", "skip"] = "continuous"
    drop_rate: float = 0.0
    jitter_ms: float = 0.0
    dtmf: Sequence[tuple[str, float]] = ()
    first_timestamp_ms: int = 5
    seed: int = 1


@dataclass
class StreamReport:
    call_sid: str
    stream_sid: str
    frames_sent: dict[str, int] = field(default_factory=dict)
    frames_dropped: int = 0
    frames_skipped_silent: int = 0
    messages_sent: int = 0
    seconds: float = 0.0
    started_at: float = 0.0
    """time.monotonic() when frame 0 was due: media at call time T was due at started_at + T."""
    hung_up: bool = False
    server_closed: tuple[int, str] | None = None
    warnings: list[str] = field(default_factory=list)
    talkback: TalkBackHeard | None = None
    """On a bidirectional stream: what the server sent back, as Twilio heard and played it."""


@dataclass
class TalkBackHeard:
    audio: bytearray = field(default_factory=bytearray)
    """Every media payload the server sent, in order (8 kHz mu-law)."""
    payload_sizes: list[int] = field(default_factory=list)
    marks_echoed: list[str] = field(default_factory=list)
    clears: int = 0
    dropped_by_clear: int = 0
    """Bytes received but not yet played when a `clear` came."""


class TalkBackPlayer:
    """Twilio's side of a bidirectional stream: it takes `media`, `mark` and `clear` from the
    server, checks each as Twilio does, plays the audio in order at 8 kHz on the call's
    timeline (one 20 ms frame of it per 20 ms of the call) and echoes each mark once the audio
    before it has played; `clear` drops what is unplayed and echoes the pending marks at once."""

    def __init__(self, stream_sid: str, report: StreamReport) -> None:
        self.stream_sid = stream_sid
        self.heard = TalkBackHeard()
        report.talkback = self.heard
        self._report = report
        self._played = 0
        self._pending: list[tuple[int, str]] = []
        """(position in `heard.audio` the mark follows, its name)."""

    def receive(self, text: str | bytes) -> list[str]:
        """One message from the server; the marks to echo now."""
        try:
            message = outbound.parse_outbound(text)
        except msg.InvalidMediaMessage as error:
            self._report.warnings.append(str(error))
            return []
        if message.stream_sid != self.stream_sid:
            self._report.warnings.append(f"31951 streamSid {message.stream_sid} is not ours")
            return []
        if message.event == "media":
            self.heard.audio += message.payload
            self.heard.payload_sizes.append(len(message.payload))
            return []
        if message.event == "mark":
            self._pending.append((len(self.heard.audio), message.name))
            return self._due()
        self.heard.clears += 1
        self.heard.dropped_by_clear += len(self.heard.audio) - self._played
        self._played = len(self.heard.audio)
        return self._due()

    def advance(self, frames: int = 1) -> list[str]:
        """`frames` of 20 ms of the call went by; the marks reached."""
        self._played = min(len(self.heard.audio), self._played + frames * 160)
        return self._due()

    def _due(self) -> list[str]:
        due = [name for position, name in self._pending if position <= self._played]
        self._pending = [(p, n) for p, n in self._pending if p > self._played]
        self.heard.marks_echoed += due
        return due


@dataclass(frozen=True)
class StreamTarget:
    """Where to connect, and the public URL Twilio signs (they differ behind a proxy)."""

    connect_url: str
    signed_url: str
    auth_token: str | None = None


def handshake_headers(target: StreamTarget) -> dict[str, str]:
    headers = {"User-Agent": TWILIO_USER_AGENT}
    if target.auth_token:
        headers["X-Twilio-Signature"] = sign(target.auth_token, target.signed_url)
    return headers


def play_stream(
    target: StreamTarget,
    tracks: Mapping[Track, bytes],
    *,
    call_sid: str | None = None,
    account_sid: str = "AC" + "0" * 32,
    custom_parameters: Mapping[str, str] | None = None,
    options: StreamOptions | None = None,
    hang_up: threading.Event | None = None,
    progress: Callable[[float, float], None] | None = None,
    bidirectional: bool = False,
) -> StreamReport:
    """Stream mu-law audio per track (all tracks as long as the longest) and end the stream.
    `bidirectional` (`<Connect><Stream>`): also play what the server sends back."""
    stream = _Stream(
        Client.connect(target.connect_url, headers=handshake_headers(target)),
        tracks,
        call_sid=call_sid or new_sid("CA"),
        account_sid=account_sid,
        options=options or StreamOptions(),
        bidirectional=bidirectional,
    )
    return stream.play(custom_parameters or {}, hang_up or threading.Event(), progress)


class _Stream:
    """One stream as Twilio sends it, on the calling thread: the messages in order with their
    sequence numbers, paced on the call's clock, with what the server sends back heard between
    frames."""

    def __init__(
        self,
        ws: Client,
        tracks: Mapping[Track, bytes],
        *,
        call_sid: str,
        account_sid: str,
        options: StreamOptions,
        bidirectional: bool,
    ) -> None:
        self._ws = ws
        self._options = options
        self._rng = random.Random(options.seed)
        self._account_sid = account_sid
        self._track_names = tuple(tracks)
        self._frame_count = max(-(-len(audio) // 160) for audio in tracks.values())
        self._framed = {track: frames(audio, self._frame_count) for track, audio in tracks.items()}
        self._chunks = {track: 0 for track in self._track_names}
        self._dtmf_due = sorted(options.dtmf, key=lambda item: item[1])
        self._sequence = 0
        self._stop_sent = False
        self._held_until = 0.0
        self.report = StreamReport(call_sid=call_sid, stream_sid=new_sid("MZ"))
        self.report.frames_sent = {track: 0 for track in self._track_names}
        self._player = (
            TalkBackPlayer(self.report.stream_sid, self.report) if bidirectional else None
        )

    def play(
        self,
        custom_parameters: Mapping[str, str],
        hang_up: threading.Event,
        progress: Callable[[float, float], None] | None,
    ) -> StreamReport:
        report = self.report
        started = time.monotonic()
        report.started_at = started - self._options.first_timestamp_ms / 1000
        try:
            self._start(custom_parameters)
            for index in range(self._frame_count):
                if hang_up.is_set():
                    report.hung_up = True
                    break
                self._frame(index, started)
                if progress and index % 250 == 0:
                    progress(index * FRAME_MS / 1000, self._frame_count * FRAME_MS / 1000)
            self._stop()
        except ConnectionClosed as closed:
            self._closed(closed)
        except OSError as error:
            # A write can meet the socket the reader has just closed on the server's close
            # frame: that close is what happened. With none, the server vanished mid-write.
            heard = self._close_heard()
            if heard is not None:
                self._closed(heard)
            else:
                report.server_closed = (CloseCode.ABNORMAL, f"{type(error).__name__}: {error}")
        finally:
            report.seconds = time.monotonic() - started
            with contextlib.suppress(ConnectionClosed, OSError):  # already closed by the server
                self._ws.close()
        return report

    def _closed(self, closed: ConnectionClosed) -> None:
        if not (self._stop_sent and closed.reason == CloseCode.NORMAL):  # the normal end
            self.report.server_closed = (int(closed.reason), str(closed.message or ""))

    def _close_heard(self) -> ConnectionClosed | None:
        """The close frame the server sent, if one came (what is left unread is dropped)."""
        try:
            while self._ws.receive(timeout=0) is not None:
                pass
        except ConnectionClosed as closed:
            return None if closed.reason == CloseCode.NO_STATUS else closed
        except OSError:
            pass
        return None

    def _start(self, custom_parameters: Mapping[str, str]) -> None:
        self._send(msg.connected_message())
        self._send(
            msg.start_message(
                stream_sid=self.report.stream_sid,
                account_sid=self._account_sid,
                call_sid=self.report.call_sid,
                tracks=self._track_names,
                custom_parameters=custom_parameters,
                sequence_number=self._next(),
            )
        )

    def _frame(self, index: int, started: float) -> None:
        """Frame `index` of every track, when it is due, and the DTMF due before it."""
        timestamp = self._options.first_timestamp_ms + index * FRAME_MS
        self._wait_until_due(index, started)
        while self._dtmf_due and self._dtmf_due[0][1] * 1000 <= timestamp:
            digit, _ = self._dtmf_due.pop(0)
            self._send(
                msg.dtmf_message(
                    stream_sid=self.report.stream_sid, digit=digit, sequence_number=self._next()
                )
            )
        for track in self._track_names:
            self._media(track, self._framed[track][index], timestamp)
        self._hear_server()
        if self._player is not None:
            self._echo(self._player.advance())

    def _wait_until_due(self, index: int, started: float) -> None:
        speed = self._options.speed
        if speed <= 0:
            return
        due = started + index * FRAME_MS / 1000 / speed
        if self._options.jitter_ms and due >= self._held_until:
            self._held_until = due + self._rng.uniform(0, self._options.jitter_ms) / 1000 / speed
        wait = max(due, self._held_until) - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _media(self, track: Track, frame: bytes, timestamp: int) -> None:
        if self._options.drop_rate and self._rng.random() < self._options.drop_rate:
            self.report.frames_dropped += 1
            return
        if self._options.silence == "skip" and is_silent(frame):
            self.report.frames_skipped_silent += 1
            return
        self._chunks[track] += 1
        self._send(
            msg.media_message(
                stream_sid=self.report.stream_sid,
                track=track,
                chunk=self._chunks[track],
                timestamp_ms=timestamp,
                payload=frame,
                sequence_number=self._next(),
            )
        )
        self.report.frames_sent[track] += 1

    def _stop(self) -> None:
        sequence = self._next()
        self._stop_sent = True  # set first: the server may close the moment `stop` reaches it
        self._send(
            msg.stop_message(
                stream_sid=self.report.stream_sid,
                account_sid=self._account_sid,
                call_sid=self.report.call_sid,
                sequence_number=sequence,
            )
        )
        self._hear_server()

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    def _send(self, text: str) -> None:
        self._ws.send(text)
        self.report.messages_sent += 1

    def _echo(self, marks: list[str]) -> None:
        if self._stop_sent:
            return  # Twilio says nothing after `stop`
        for name in marks:
            self._send(
                msg.mark_message(
                    stream_sid=self.report.stream_sid, name=name, sequence_number=self._next()
                )
            )

    def _hear_server(self) -> None:
        while (text := self._ws.receive(timeout=0)) is not None:
            if self._player is None:
                self.report.warnings.append(
                    "31924 Protocol Error: server sent a message on a <Start> stream"
                )
            else:
                self._echo(self._player.receive(text))
