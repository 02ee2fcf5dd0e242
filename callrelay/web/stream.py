"""The `/stream` WebSocket Twilio connects to: frames in, `MediaStreamSession` does the rest."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial

from simple_websocket import ConnectionClosed

from callrelay.call import CallInfo, MediaStreamSession, StreamProtocolError, StreamState
from callrelay.close_codes import CloseCode
from callrelay.live_calls import StreamConnection, StreamRefused
from callrelay.logs import log_event
from callrelay.metrics import RelayMetrics
from callrelay.relay import Relay
from callrelay.talkback import TALK_PARAMETER
from callrelay.web.talkback import TalkBackCalls
from callrelay.web.websocket_route import AcceptedSocket

logger = logging.getLogger("callrelay.stream")

MAX_MESSAGE_BYTES = 64 * 1024
"""A Twilio media message is ~400 bytes; anything near this is not Twilio."""


CONNECTION_CHECK_SECONDS = 1.0

YIELD_EVERY_MESSAGES = 8
"""A stream read from its buffer (a burst, a flood) gives the event loop a turn this often, so
that what it emits reaches the listeners as it goes instead of piling up in their queues."""

THROTTLE_STEP_SECONDS = 0.05
"""A throttled connection is paused in steps this long, not after every message."""


class MessageThrottle:
    """A token bucket: `rate` messages a second on average, `rate` (one second's worth) at once.

    Going over loses nothing: the handler stops reading for a moment, TCP pushes back on the
    sender, and one flooding connection cannot take the CPU (and the GIL) from the other calls.
    Twilio sends 100 messages a second for a two-track stream.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._last = clock()
        self.pauses = 0

    def take(self) -> float:
        """Count one message; the seconds to pause before reading more (0 most of the time)."""
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate) - 1
        self._last = now
        pause = -self._tokens / self.rate
        if pause < THROTTLE_STEP_SECONDS:
            return 0.0
        self.pauses += 1
        return pause


def serve_stream(
    ws: AcceptedSocket,
    relay: Relay,
    remote: str,
    call_sid: str | None = None,
    talkback: TalkBackCalls | None = None,
) -> None:
    """Run one Twilio stream to its end; the call is always closed, however the socket ends.
    `call_sid`: the one in the stream's path, which its `start` must match. `talkback`: where
    a bidirectional stream's playback is run."""
    try:
        connection = relay.live_calls.connect(partial(_close_quietly, ws))
    except StreamRefused as refused:
        relay.metrics.streams_refused[refused.kind] += 1
        log_event(
            logger,
            "stream_refused",
            logging.WARNING,
            remote=remote,
            reason=refused.kind,
            closeCode=refused.close_code,
            error=refused.reason,
            maxCalls=relay.live_calls.max_streams,
        )
        _close_quietly(ws, refused.close_code, refused.reason)
        return
    settings = relay.settings
    session = relay.new_stream(call_sid)

    def started(call: CallInfo) -> None:
        if talkback is None:
            return
        if call.custom_parameters.get(TALK_PARAMETER):
            talkback.open(call.call_sid, call.stream_sid, ws.send)
            session.on_mark = lambda call, name: talkback.mark(call.call_sid, name)
        else:
            talkback.one_way.add(call.call_sid)

    try:
        _serve(
            ws,
            session,
            remote,
            connection,
            MessageThrottle(settings.stream_max_messages_per_second),
            settings.stream_idle_timeout_seconds,
            relay.metrics,
            started,
        )
    finally:
        if talkback is not None and session.call is not None:
            talkback.close(session.call.call_sid)
            talkback.one_way.discard(session.call.call_sid)
        relay.metrics.frames_dropped.update(session.problems.counts)
        relay.live_calls.disconnect(connection)


def _serve(
    ws: AcceptedSocket,
    session: MediaStreamSession,
    remote: str,
    connection: StreamConnection,
    throttle: MessageThrottle,
    idle_timeout: float,
    metrics: RelayMetrics,
    started: Callable[[CallInfo], None],
) -> None:
    """Read the stream until it ends, then close the call with why it ended."""
    log_event(logger, "stream_connected", remote=remote)
    reason = "disconnected"
    try:
        reason = _read(ws, session, remote, throttle, idle_timeout, metrics, started)
    except StreamProtocolError as error:
        reason = "protocol_error"
        _refused(session, remote, error.close_code, error.reason)
        _close_quietly(ws, error.close_code, error.reason[:120])
    except ConnectionClosed:
        reason = connection.closing_reason or reason
        if ws.close_code == CloseCode.MESSAGE_TOO_BIG:
            reason = "protocol_error"
            too_big = f"message larger than {MAX_MESSAGE_BYTES} bytes"
            _refused(session, remote, CloseCode.MESSAGE_TOO_BIG, too_big)
    except Exception:
        reason = "server_error"
        logger.exception("stream handler failed")
        _close_quietly(ws, CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        session.close(reason)


def _read(
    ws: AcceptedSocket,
    session: MediaStreamSession,
    remote: str,
    throttle: MessageThrottle,
    idle_timeout: float,
    metrics: RelayMetrics,
    started: Callable[[CallInfo], None],
) -> str:
    """Hand each message to the session until `stop` (or the peer goes quiet); why it ended.
    Runs on the stream's greenlet."""
    last_message = time.monotonic()
    handled = 0
    while session.state is not StreamState.ENDED:
        message = ws.receive(timeout=min(idle_timeout, CONNECTION_CHECK_SECONDS))
        if message is None and ws.lost:
            # The socket died in a way that did not wake `receive` (seen when a close
            # handshake crosses an oversized frame): end the call now, not at idle time.
            raise ConnectionClosed(ws.close_code or CloseCode.ABNORMAL, "connection lost")
        if message is None:
            if time.monotonic() - last_message < idle_timeout:
                continue
            log_event(
                logger,
                "stream_idle",
                logging.WARNING,
                remote=remote,
                seconds=idle_timeout,
                **session.ids,
            )
            ws.close(CloseCode.NORMAL, "idle timeout")
            return "idle_timeout"
        last_message = arrived = time.monotonic()
        waiting = session.call is None
        session.receive(message)
        if waiting and session.call is not None:
            started(session.call)
        metrics.message_handled(time.monotonic() - arrived)
        handled += 1
        if handled % YIELD_EVERY_MESSAGES == 0:
            time.sleep(0)  # under gevent: let the listeners' writers run during a burst
        _keep_to_rate(throttle, session, remote)
    ws.close(CloseCode.NORMAL, "stream stopped")
    return "disconnected"


def _keep_to_rate(throttle: MessageThrottle, session: MediaStreamSession, remote: str) -> None:
    """Pause the reading when the peer sends faster than the throttle's rate."""
    pause = throttle.take()
    if not pause:
        return
    if throttle.pauses == 1:
        log_event(
            logger,
            "stream_throttled",
            logging.WARNING,
            remote=remote,
            maxMessagesPerSecond=throttle.rate,
            **session.ids,
        )
    time.sleep(pause)


def _refused(session: MediaStreamSession, remote: str, code: int, error: str) -> None:
    log_event(
        logger,
        "stream_refused",
        logging.WARNING,
        remote=remote,
        closeCode=code,
        error=error,
        **session.ids,
    )


def _close_quietly(ws: AcceptedSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        ws.close(code, reason)
