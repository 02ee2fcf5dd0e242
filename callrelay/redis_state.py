"""What the relay's processes share through Redis: the calls each one carries, where each
call's timeline began, and the rate at which calls are placed. (Socket.IO's own traffic goes
through Redis in `web/message_queue.py`.)

Nothing here makes a stream wait on Redis. A stream's start and end are queued and written by a
background task; where a call's timeline lies is read from a mirror this process keeps of every
process's updates (published on a channel as each is written); the list of every process's calls
is refreshed once a second. Every process writes its live calls to a hash of its own that
expires unless the process keeps it alive, so a process that dies takes its calls out of `GET /`
within `PROCESS_TTL_SECONDS`. Redis going away never holds a call up: each operation has a short
timeout, a failure marks Redis down for a second (logged once, `shared_state_down`), and
meanwhile the process answers from what it knows itself.

Threads: `start` runs three background tasks (the writer, the heartbeat and the channel
listener). Under `callrelay serve` they are greenlets of the server's event loop (gevent
patches `threading`), so their Redis I/O yields to the streams instead of blocking them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from callrelay.background import start_task
from callrelay.call import CallInfo, CallSink
from callrelay.live_calls import REMEMBERED_CALLS, CallTimeline
from callrelay.outage import Outage

logger = logging.getLogger("callrelay.shared")

PREFIX = "callrelay"
COMMANDS_CHANNEL = f"{PREFIX}:commands"
TIMELINES_CHANNEL = f"{PREFIX}:timelines"
ROOMS_CHANNEL = f"{PREFIX}:audio_rooms"
PROCESS_TTL_SECONDS = 15
TIMELINE_TTL_SECONDS = 24 * 3600
"""How long a call's timeline is kept after its last stream, for a stream that resumes it."""
_STREAM_STARTED = """
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1])
local open = redis.call('HINCRBY', KEYS[1], 'open', 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
local known = redis.call('HMGET', KEYS[1], 'started_at', 'end_ms')
redis.call('PUBLISH', ARGV[3], cjson.encode({ARGV[4], known[1], open, known[2] or '0'}))
"""
_STREAM_ENDED = """
local open = redis.call('HINCRBY', KEYS[1], 'open', -1)
local reached = tonumber(redis.call('HGET', KEYS[1], 'end_ms') or '0')
if tonumber(ARGV[1]) > reached then redis.call('HSET', KEYS[1], 'end_ms', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local known = redis.call('HMGET', KEYS[1], 'started_at', 'end_ms')
redis.call('PUBLISH', ARGV[3], cjson.encode({ARGV[4], known[1] or '0', open, known[2] or '0'}))
"""
HEARTBEAT_SECONDS = 5.0
REFRESH_SECONDS = 1.0
"""How often a process reads which calls other processes carry and which calls their clients
listen to."""
TIMEOUT_SECONDS = 0.5
MAX_QUEUED_WRITES = 10_000
"""Writes waiting for Redis at most; past it (Redis slow for long) the oldest are let go: the
heartbeat tells Redis this process's calls again anyway."""


def redis_client(url: str) -> Any:
    """A client that gives up quickly: a relay waits on Redis for half a second at most."""
    import redis

    return redis.Redis.from_url(
        url,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        retry=None,
        decode_responses=True,
    )


class RedisState(CallSink):
    """This process's view of the shared state; every method answers at once, even when Redis
    is gone (with None, for the caller to fall back on its own figures)."""

    def __init__(self, url: str, process_id: str | None = None) -> None:
        self.process_id = process_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._redis = redis_client(url)
        self._outage = Outage(
            logger,
            "shared_state_down",
            "shared_state_up",
            "calls go on; GET / and the call rate limit count this process only until Redis "
            "is back",
        )
        self._calls_key = f"{PREFIX}:process:{self.process_id}:calls"
        self._rooms_key = f"{PREFIX}:process:{self.process_id}:audio_rooms"
        self._remote_rooms: frozenset[str] = frozenset()
        self._rooms_of: dict[str, frozenset[str]] = {}
        """Each other process's listeners' audio rooms."""
        self._room_changes = 0
        self._rooms_lock = threading.Lock()
        self._remote_calls: list[dict[str, Any]] | None = None
        """Other processes' live streams, as of the last refresh; None until one worked."""
        self._own_calls: dict[str, str] = {}
        self._own_rooms: set[str] = set()
        """What this process has told Redis, told again with every heartbeat: a Redis that
        restarted empty, or missed a change while it was away, learns it again."""
        self._timelines: OrderedDict[str, CallTimeline] = OrderedDict()
        """Every process's calls' timelines as published; read when a stream starts."""
        self._timelines_lock = threading.Lock()
        self._writes: queue.Queue[Callable[[Any], object] | None] = queue.Queue()
        self._on_command: Callable[[dict[str, Any]], None] | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        """Start the background tasks: the writer, the heartbeat, the channel listener."""
        for task, name in (
            (self._write_queued, "redis-writer"),
            (self._heartbeat, "redis-heartbeat"),
            (self._listen, "redis-listener"),
        ):
            start_task(name, task)

    @property
    def available(self) -> bool:
        return self._outage.up

    def _run(self, operation: Any) -> Any:
        """`operation(redis)`, or None while Redis is down (tried again after a second)."""
        if not self._outage.worth_trying():
            return None
        try:
            result = operation(self._redis)
        except Exception as error:
            self._outage.failed(error)
            return None
        self._outage.succeeded()
        return result

    def _later(self, operation: Callable[[Any], object]) -> None:
        """Run `operation(redis)` in the writer, in the order asked, never in the caller."""
        if self._writes.qsize() >= MAX_QUEUED_WRITES:
            with contextlib.suppress(queue.Empty):
                self._writes.get_nowait()
        self._writes.put(operation)

    def _write_queued(self) -> None:
        while (operation := self._writes.get()) is not None:
            self._run(operation)

    # The calls each process carries.

    def call_started(self, call: CallInfo) -> None:
        entry = json.dumps(
            {
                "callSid": call.call_sid,
                "streamSid": call.stream_sid,
                "tracks": list(call.tracks),
                "startedAt": call.started_at,
                "process": self.process_id,
            }
        )
        self._own_calls[call.stream_sid] = entry

        def announce(redis: Any) -> None:
            with redis.pipeline() as pipe:
                pipe.hset(self._calls_key, call.stream_sid, entry)
                pipe.expire(self._calls_key, PROCESS_TTL_SECONDS)
                pipe.sadd(f"{PREFIX}:processes", self.process_id)
                pipe.execute()

        self._later(announce)

    def call_ended(self, call: CallInfo, reason: str) -> None:
        self._own_calls.pop(call.stream_sid, None)
        self._later(lambda redis: redis.hdel(self._calls_key, call.stream_sid))

    def live_calls(self) -> list[dict[str, Any]] | None:
        """Every process's live streams (this one's as they are, the others' as of the last
        second); None while Redis is down."""
        remote = self._remote_calls
        if remote is None or not self._outage.up:
            return None
        own = [json.loads(entry) for entry in list(self._own_calls.values())]
        return sorted(own + remote, key=lambda call: call["startedAt"])

    def holds_elsewhere(self, call_sid: str) -> bool:
        """Another process streams the call now (asked of Redis: for a command, not a frame)."""
        found = self._run(self._collect_calls)
        return found is not None and any(call["callSid"] == call_sid for call in found)

    def _collect_calls(self, redis: Any) -> list[dict[str, Any]]:
        """Other processes' live streams, forgetting processes that are gone."""
        found: list[dict[str, Any]] = []
        for process in redis.smembers(f"{PREFIX}:processes"):
            if process == self.process_id:
                continue
            calls = redis.hgetall(f"{PREFIX}:process:{process}:calls")
            if not calls and not redis.exists(f"{PREFIX}:process:{process}:alive"):
                redis.srem(f"{PREFIX}:processes", process)  # gone: its hash expired
            found += [json.loads(entry) for entry in calls.values()]
        return found

    # Where each call's streams go on its timeline, whichever process takes them.

    def known(self, call_sid: str) -> CallTimeline | None:
        """The call's timeline as the processes last published it; None if none has."""
        with self._timelines_lock:
            timeline = self._timelines.get(call_sid)
            return None if timeline is None else CallTimeline(**vars(timeline))

    def stream_started(self, call_sid: str, started_at: float) -> None:
        self._later(
            lambda redis: redis.eval(
                _STREAM_STARTED,
                1,
                f"{PREFIX}:timeline:{call_sid}",
                repr(started_at),
                TIMELINE_TTL_SECONDS,
                TIMELINES_CHANNEL,
                call_sid,
            )
        )

    def stream_ended(self, call_sid: str, end_ms: int) -> None:
        self._later(
            lambda redis: redis.eval(
                _STREAM_ENDED,
                1,
                f"{PREFIX}:timeline:{call_sid}",
                end_ms,
                TIMELINE_TTL_SECONDS,
                TIMELINES_CHANNEL,
                call_sid,
            )
        )

    def _timeline_published(self, data: str) -> None:
        call_sid, started_at, open_streams, end_ms = json.loads(data)
        if float(started_at) <= 0:
            return  # the call's timeline had expired: nothing to place a stream by
        with self._timelines_lock:
            self._timelines[call_sid] = CallTimeline(
                float(started_at), max(0, int(open_streams)), int(end_ms)
            )
            self._timelines.move_to_end(call_sid)
            while len(self._timelines) > REMEMBERED_CALLS:
                self._timelines.popitem(last=False)

    # Who listens to what, so that audio crosses between processes only when it has to.

    def audio_room_changed(self, room: str, listened: bool) -> None:
        """This process has its first listener in `room`, or no longer any."""
        if listened:
            self._own_rooms.add(room)
        else:
            self._own_rooms.discard(room)

        change = json.dumps([self.process_id, room, listened])

        def tell(redis: Any) -> None:
            with redis.pipeline() as pipe:
                (pipe.sadd if listened else pipe.srem)(self._rooms_key, room)
                pipe.expire(self._rooms_key, PROCESS_TTL_SECONDS)
                pipe.publish(ROOMS_CHANNEL, change)
                pipe.execute()

        self._later(tell)

    def remote_audio_rooms(self) -> frozenset[str]:
        """The audio rooms other processes have listeners in: told on a channel as they
        change (a listener that comes before its call hears all of it), and read again each
        second. A new set each time it changes, the same one otherwise."""
        return self._remote_rooms

    def _room_published(self, data: str) -> None:
        process, room, listened = json.loads(data)
        if process == self.process_id:
            return
        with self._rooms_lock:
            rooms = set(self._rooms_of.get(process, ()))
            (rooms.add if listened else rooms.discard)(room)
            self._rooms_of[process] = frozenset(rooms)
            self._room_changes += 1
            self._remote_rooms = frozenset().union(*self._rooms_of.values())

    def _refresh(self, redis: Any) -> None:
        """Read other processes' calls and their listeners' audio rooms."""
        changes = self._room_changes
        others = [p for p in redis.smembers(f"{PREFIX}:processes") if p != self.process_id]
        read = {p: frozenset(redis.smembers(f"{PREFIX}:process:{p}:audio_rooms")) for p in others}
        with self._rooms_lock:
            if self._room_changes != changes:
                # A change arrived while reading, perhaps after what was read: keep both (a
                # room left meanwhile is let go at the next refresh).
                read = {p: rooms | self._rooms_of.get(p, frozenset()) for p, rooms in read.items()}
            self._rooms_of = read
            rooms = frozenset().union(*read.values())
            if rooms != self._remote_rooms:
                self._remote_rooms = rooms
        self._remote_calls = self._collect_calls(redis)

    def _heartbeat(self) -> None:
        """Keep this process's calls alive in Redis; also how it sees Redis come back."""

        def beat(redis: Any) -> None:
            calls, rooms = dict(self._own_calls), list(self._own_rooms)
            with redis.pipeline() as pipe:
                pipe.sadd(f"{PREFIX}:processes", self.process_id)
                pipe.delete(self._calls_key, self._rooms_key)
                if calls:
                    pipe.hset(self._calls_key, mapping=calls)
                if rooms:
                    pipe.sadd(self._rooms_key, *rooms)
                pipe.set(f"{PREFIX}:process:{self.process_id}:alive", 1, ex=PROCESS_TTL_SECONDS)
                pipe.expire(self._calls_key, PROCESS_TTL_SECONDS)
                pipe.expire(self._rooms_key, PROCESS_TTL_SECONDS)
                pipe.execute()

        beats = 0
        while True:
            if beats % int(HEARTBEAT_SECONDS / REFRESH_SECONDS) == 0:
                self._outage.try_now()
                self._run(beat)
            self._run(self._refresh)
            beats += 1
            if self._stopped.wait(REFRESH_SECONDS):
                return

    # Commands for whichever process holds a call (talking back into it).

    def send_command(self, command: dict[str, Any]) -> bool:
        """Tell every process; the one that holds the call acts. False while Redis is down."""
        sent = self._run(lambda redis: redis.publish(COMMANDS_CHANNEL, json.dumps(command)))
        return sent is not None

    def receive_commands(self, handler: Callable[[dict[str, Any]], None]) -> None:
        """Run `handler` (in the listener task) for every command any process sends."""
        self._on_command = handler

    def _listen(self) -> None:
        """Read the channels: commands for this process's calls, timelines, audio rooms."""
        while not self._stopped.is_set():
            try:
                subscription = self._redis.pubsub(ignore_subscribe_messages=True)
                subscription.subscribe(COMMANDS_CHANNEL, TIMELINES_CHANNEL, ROOMS_CHANNEL)
                while not self._stopped.is_set():
                    message = subscription.get_message(timeout=TIMEOUT_SECONDS * 0.8)
                    if message is None:
                        continue
                    if message["channel"] == ROOMS_CHANNEL:
                        self._room_published(message["data"])
                    elif message["channel"] == TIMELINES_CHANNEL:
                        self._timeline_published(message["data"])
                    elif self._on_command is not None:
                        self._on_command(json.loads(message["data"]))
            except Exception:  # Redis went away: the heartbeat logs it; listen again later
                self._stopped.wait(1.0)

    def stop(self) -> None:
        self._stopped.set()
        self._writes.put(None)

        def leave(redis: Any) -> None:
            with redis.pipeline() as pipe:
                pipe.delete(
                    self._calls_key, self._rooms_key, f"{PREFIX}:process:{self.process_id}:alive"
                )
                pipe.srem(f"{PREFIX}:processes", self.process_id)
                pipe.execute()

        self._run(leave)

    # The call rate, across processes.

    def take_call_slot(self, limit: int, window: float) -> float | None:
        """Count one call placed: 0 if it is within `limit` per `window` seconds across every
        process, else the seconds until one is; None while Redis is down."""
        key = f"{PREFIX}:placed"
        now = time.time()
        member = f"{now:.6f}-{uuid.uuid4().hex[:8]}"

        def take(redis: Any) -> float:
            with redis.pipeline() as pipe:
                pipe.zremrangebyscore(key, 0, now - window)
                pipe.zadd(key, {member: now})
                pipe.zcard(key)
                pipe.expire(key, int(window) + 1)
                _, _, count, _ = pipe.execute()
            if count <= limit:
                return 0.0
            redis.zrem(key, member)
            oldest = redis.zrange(key, 0, 0, withscores=True)
            return max(0.0, (oldest[0][1] + window - now) if oldest else window)

        result: float | None = self._run(take)
        return result
