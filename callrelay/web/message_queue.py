"""Socket.IO across processes and hosts: python-socketio's Redis manager, guarded.

Each emit is delivered to this process's own clients first, then published for the others.
python-socketio's manager would try Redis twice on every emit while it is gone, each try
waiting on a connection; a relay emits a hundred times a second per call. Here a failed publish
marks the queue down for a second: emits in between go to this process's clients only, the
loss is logged once (`message_queue_down`), counted, and `message_queue_up` says when events
flow across again. Redis's publish/subscribe delivers at most once: what other processes
missed meanwhile is not replayed (recordings and transcripts, on disk, lose nothing).

Only the manager's extension point is overridden (`_publish`, which python-socketio's docs ask
a pub/sub backend to fill in); the publishing connection is this class's own redis-py client,
so nothing of `RedisManager`'s connection state is touched. Its listener is left as it is.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
import socketio

from callrelay.outage import Outage

logger = logging.getLogger("callrelay.socketio")

CHANNEL = "flask-socketio"
TIMEOUT_SECONDS = 0.5


class GuardedRedisManager(socketio.RedisManager):  # type: ignore[misc]
    def __init__(self, url: str) -> None:
        options: dict[str, Any] = {
            "socket_connect_timeout": TIMEOUT_SECONDS,
            "socket_timeout": TIMEOUT_SECONDS,
            "retry": None,
        }
        super().__init__(url, channel=CHANNEL, redis_options=options)
        self._publisher = redis.Redis.from_url(url, **options)
        """Connects on its first publish; a broken connection is dropped and the next publish
        opens a new one."""
        self._outage = Outage(
            logger,
            "message_queue_down",
            "message_queue_up",
            "this process's calls go on reaching its own clients; other processes' clients "
            "miss them until Redis is back",
        )
        self.unpublished = 0
        """Emits other processes never saw, because the queue was down."""

    @property
    def up(self) -> bool:
        return self._outage.up

    def _publish(self, data: Any) -> None:
        if not self._outage.worth_trying():
            self.unpublished += 1
            return
        try:
            self._publisher.publish(self.channel, self.json.dumps(data))
        except Exception as error:
            self.unpublished += 1
            self._outage.failed(error)
            return
        self._outage.succeeded(unpublished=self.unpublished)
