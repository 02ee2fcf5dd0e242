"""What the relay's processes share through Redis: the calls each one carries and the rate at
which calls are placed. (Socket.IO's own traffic goes through Redis in `web/message_queue.py`.)

Every process writes its live calls to a hash of its own that expires unless the process keeps
it alive, so a process that dies takes its calls out of `GET /` within `PROCESS_TTL_SECONDS`.
Redis going away never holds a call up: each operation has a short timeout, a failure marks
Redis down for a second (logged once, `shared_state_down`), and meanwhile the process answers
from what it knows itself.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from callrelay.call import CallInfo, CallSink
from callrelay.live_calls import CallTimeline
from callrelay.outage import Outage

logger = logging.getLogger("callrelay.shared")

PREFIX = "callrelay"
COMMANDS_CHANNEL = f"{PREFIX}:commands"
PROCESS_TTL_SECONDS = 15
TIMELINE_TTL_SECONDS = 24 * 3600
"""How long a call's timeline is kept after its last stream, for a stream that resumes it."""
_STREAM_ENDED = """
redis.call('HINCRBY', KEYS[1], 'open', -1)
local reached = tonumber(redis.call('HGET', KEYS[1], 'end_ms') or '0')
if tonumber(ARGV[1]) > reached then redis.call('HSET', KEYS[1], 'end_ms', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""
HEARTBEAT_SECONDS = 5.0
ROOMS_SECONDS = 1.0
"""How often a process looks at which calls other processes' clients listen to."""
TIMEOUT_SECONDS = 0.5


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
    """This process's view of the shared state; every method answers even when Redis is gone
    (with None, for the caller to fall back on its own figures)."""

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
        self._own_calls: dict[str, str] = {}
        self._own_rooms: set[str] = set()
        """What this process has told Redis, told again with every heartbeat: a Redis that
        restarted empty, or missed a change while it was away, learns it again."""
        self._stopped = threading.Event()
        threading.Thread(target=self._heartbeat, name="redis-heartbeat", daemon=True).start()

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

        self._run(announce)
        self.refresh_remote_audio_rooms()  # a listener that came before the call hears it all

    def call_ended(self, call: CallInfo, reason: str) -> None:
        self._own_calls.pop(call.stream_sid, None)
        self._run(lambda redis: redis.hdel(self._calls_key, call.stream_sid))

    def live_calls(self) -> list[dict[str, Any]] | None:
        """Every process's live streams; None while Redis is down."""

        def collect(redis: Any) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for process in redis.smembers(f"{PREFIX}:processes"):
                calls = redis.hgetall(f"{PREFIX}:process:{process}:calls")
                if not calls and not redis.exists(f"{PREFIX}:process:{process}:alive"):
                    redis.srem(f"{PREFIX}:processes", process)  # gone: its hash expired
                found += [json.loads(entry) for entry in calls.values()]
            return sorted(found, key=lambda call: call["startedAt"])

        result: list[dict[str, Any]] | None = self._run(collect)
        return result

    # Where each call's streams go on its timeline, whichever process takes them.

    def place(self, call_sid: str, started_at: float) -> CallTimeline | None:
        key = f"{PREFIX}:timeline:{call_sid}"

        def place(redis: Any) -> CallTimeline:
            with redis.pipeline() as pipe:
                pipe.hsetnx(key, "started_at", repr(started_at))
                pipe.hincrby(key, "open", 1)
                pipe.hget(key, "started_at")
                pipe.hget(key, "end_ms")
                pipe.expire(key, TIMELINE_TTL_SECONDS)
                _, opened, first, end_ms, _ = pipe.execute()
            return CallTimeline(float(first), int(opened) - 1, int(end_ms or 0))

        result: CallTimeline | None = self._run(place)
        return result

    def ended(self, call_sid: str, end_ms: int) -> None:
        self._run(
            lambda redis: redis.eval(
                _STREAM_ENDED, 1, f"{PREFIX}:timeline:{call_sid}", end_ms, TIMELINE_TTL_SECONDS
            )
        )

    # Who listens to what, so that audio crosses between processes only when it has to.

    def audio_room_changed(self, room: str, listened: bool) -> None:
        """This process has its first listener in `room`, or no longer any."""
        if listened:
            self._own_rooms.add(room)
        else:
            self._own_rooms.discard(room)

        def tell(redis: Any) -> None:
            with redis.pipeline() as pipe:
                (pipe.sadd if listened else pipe.srem)(self._rooms_key, room)
                pipe.expire(self._rooms_key, PROCESS_TTL_SECONDS)
                pipe.execute()

        self._run(tell)

    def remote_audio_rooms(self) -> frozenset[str]:
        """The audio rooms other processes have listeners in (as of the last second)."""
        return self._remote_rooms

    def refresh_remote_audio_rooms(self) -> None:
        def collect(redis: Any) -> frozenset[str]:
            others = [p for p in redis.smembers(f"{PREFIX}:processes") if p != self.process_id]
            rooms: set[str] = set()
            for process in others:
                rooms |= redis.smembers(f"{PREFIX}:process:{process}:audio_rooms")
            return frozenset(rooms)

        rooms = self._run(collect)
        if rooms is not None:
            self._remote_rooms = rooms

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
            if beats % int(HEARTBEAT_SECONDS / ROOMS_SECONDS) == 0:
                self._outage.try_now()
                self._run(beat)
            self.refresh_remote_audio_rooms()
            beats += 1
            if self._stopped.wait(ROOMS_SECONDS):
                return

    # Commands for whichever process holds a call (talking back into it).

    def send_command(self, command: dict[str, Any]) -> bool:
        """Tell every process; the one that holds the call acts. False while Redis is down."""
        sent = self._run(lambda redis: redis.publish(COMMANDS_CHANNEL, json.dumps(command)))
        return sent is not None

    def receive_commands(self, handler: Callable[[dict[str, Any]], None]) -> None:
        """Run `handler` for every command any process sends, until `stop`."""
        threading.Thread(
            target=self._listen, args=(handler,), name="redis-commands", daemon=True
        ).start()

    def _listen(self, handler: Callable[[dict[str, Any]], None]) -> None:
        while not self._stopped.is_set():
            try:
                subscription = self._redis.pubsub(ignore_subscribe_messages=True)
                subscription.subscribe(COMMANDS_CHANNEL)
                while not self._stopped.is_set():
                    message = subscription.get_message(timeout=TIMEOUT_SECONDS * 0.8)
                    if message is not None:
                        handler(json.loads(message["data"]))
            except Exception:  # Redis went away: the heartbeat logs it; listen again later
                self._stopped.wait(1.0)

    def stop(self) -> None:
        self._stopped.set()

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
