"""The one registry of live calls: the Twilio sockets being served, the streams in flight and
where each call's timeline began."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from callrelay.call import CallInfo
from callrelay.close_codes import CloseCode


class SharedTimelines(Protocol):
    """Call timelines every process sees (Redis). `known` answers from what this process has
    heard, without I/O; the others tell the other processes in the background."""

    def known(self, call_sid: str) -> CallTimeline | None:
        """The call's timeline as every process's streams left it, if any process has one."""

    def stream_started(self, call_sid: str, started_at: float) -> None: ...

    def stream_ended(self, call_sid: str, end_ms: int) -> None: ...


@dataclass
class CallTimeline:
    started_at: float
    """When the call's first stream started; every later stream is placed from here."""
    open_streams: int = 0
    end_ms: int = 0
    """Where the call's ended streams reached: a resumed stream never starts before it."""


REMEMBERED_CALLS = 10_000
"""Calls whose timeline is kept after their streams end, so that a new stream can resume them."""


class StreamRefused(Exception):
    """A socket the relay will not serve; close it with `close_code`."""

    def __init__(self, close_code: int, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.kind = kind


@dataclass(eq=False)
class StreamConnection:
    """One Twilio socket being served, as the registry sees it: how to close it, and why it
    was closed if the relay closed it."""

    close: Callable[[int, str], None]
    closing_reason: str | None = None


class LiveCalls:
    """The one registry of live calls: every Twilio socket being served, every stream in
    flight (for `GET /` and shutdown), and where each call's timeline began (to place a call's
    later streams)."""

    def __init__(
        self,
        max_streams: int | None = None,
        shared: SharedTimelines | None = None,
        remembered_calls: int = REMEMBERED_CALLS,
    ) -> None:
        self.max_streams = max_streams
        """Sockets served at most at once (`MAX_CALLS`); None for no limit."""
        self.shared = shared
        """Where every process's streams of a call are placed, when they share one."""
        self._lock = threading.Lock()
        self._connections: set[StreamConnection] = set()
        self._calls: dict[str, CallInfo] = {}
        self._timelines: OrderedDict[str, CallTimeline] = OrderedDict()
        self._remembered_calls = remembered_calls
        self._emptied = threading.Condition(self._lock)
        self.accepting = True

    def connect(self, close: Callable[[int, str], None]) -> StreamConnection:
        """A socket to serve. Refused once the relay is shutting down, and past `max_streams`:
        a process that takes more calls than it can carry degrades every call at once."""
        with self._lock:
            if not self.accepting:
                raise StreamRefused(CloseCode.GOING_AWAY, "server shutting down", "shutting_down")
            if not self.has_room_locked():
                raise StreamRefused(CloseCode.TRY_AGAIN_LATER, "over capacity", "over_capacity")
            connection = StreamConnection(close)
            self._connections.add(connection)
            return connection

    def has_room(self) -> bool:
        """Another stream would be taken now."""
        with self._lock:
            return self.has_room_locked()

    def has_room_locked(self) -> bool:
        return self.max_streams is None or len(self._connections) < self.max_streams

    @property
    def streams(self) -> int:
        """Sockets being served, in a call or about to start one."""
        return len(self._connections)

    def disconnect(self, connection: StreamConnection) -> None:
        with self._lock:
            self._connections.discard(connection)
            if not self._connections:
                self._emptied.notify_all()

    def close_all(self, reason: str) -> int:
        """Stop taking streams and close the open ones; their handlers then end their calls."""
        with self._lock:
            self.accepting = False
            connections = list(self._connections)
            for connection in connections:
                connection.closing_reason = reason
        for connection in connections:
            connection.close(CloseCode.GOING_AWAY, reason)
        return len(connections)

    def wait_empty(self, timeout: float) -> bool:
        """Wait until every socket's handler has finished; False if `timeout` passed first."""
        with self._lock:
            return self._emptied.wait_for(lambda: not self._connections, timeout)

    def add(self, call: CallInfo) -> CallInfo:
        """Take a stream in; a later stream of a known call comes back placed on its timeline
        (the one `shared` keeps, when processes share one, else this process's)."""
        shared = self.shared.known(call.call_sid) if self.shared else None
        with self._lock:
            timeline = self._timelines.get(call.call_sid)
            if timeline is None:
                timeline = self._timelines[call.call_sid] = CallTimeline(call.started_at)
                self._forget_old_calls()
                known = False
            else:
                self._timelines.move_to_end(call.call_sid)
                known = True
            if shared is not None:
                timeline = _merged(timeline if known else None, shared)
                known = known or shared.open_streams > 0 or shared.started_at < call.started_at
            if known:
                since_first_start = round((call.started_at - timeline.started_at) * 1000)
                call = replace(
                    call,
                    offset_ms=max(0, timeline.end_ms, since_first_start),
                    resumed=timeline.open_streams == 0,
                )
            self._timelines[call.call_sid].open_streams += 1
            self._calls[call.stream_sid] = call
        if self.shared is not None:
            self.shared.stream_started(call.call_sid, call.started_at)
        return call

    def remove(self, stream_sid: str, end_ms: int = 0) -> None:
        """The stream has ended, having reached `end_ms` on its call's timeline."""
        with self._lock:
            call = self._calls.pop(stream_sid, None)
            if call is not None:
                timeline = self._timelines[call.call_sid]
                timeline.open_streams -= 1
                timeline.end_ms = max(timeline.end_ms, end_ms)
        if call is not None and self.shared is not None:
            self.shared.stream_ended(call.call_sid, end_ms)

    def _forget_old_calls(self) -> None:
        excess = len(self._timelines) - self._remembered_calls
        for call_sid in list(self._timelines):
            if excess <= 0:
                return
            if self._timelines[call_sid].open_streams == 0:
                del self._timelines[call_sid]
                excess -= 1

    def active(self) -> list[CallInfo]:
        with self._lock:
            return list(self._calls.values())


def _merged(own: CallTimeline | None, shared: CallTimeline) -> CallTimeline:
    """A call's timeline from this process's own streams and what every process published:
    the earliest start and the furthest end; the open streams this process counts itself when
    it has streamed the call (the published count may not have caught up with its own)."""
    if own is None:
        return shared
    return CallTimeline(
        min(own.started_at, shared.started_at), own.open_streams, max(own.end_ms, shared.end_ms)
    )
