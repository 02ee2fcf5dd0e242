"""Posting the outbox's deliveries: signed as Standard Webhooks says, at least once, retried.

Its tasks (greenlets of the event loop under `callrelay serve`): one dispatcher that hands due
deliveries to `WORKERS` posting tasks and keeps this process's lease, so a receiver that hangs
holds one task for at most the timeout and never the others, nor any call. Every try of a
delivery carries the event's `webhook-id`, so a receiver drops a duplicate; its timestamp and
signature are the try's own.

A try that meets a connection error, a timeout, 408, 429 or a 5xx is retried after a wait that
doubles from half a second up to `WEBHOOK_RETRY_MAX_SECONDS`, with jitter, and never sooner than
a `Retry-After` asks; any other answer but a 2xx is final. A delivery not made within
`WEBHOOK_GIVE_UP_SECONDS` of its event is given up. Either way it is logged and counted.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from standardwebhooks import Webhook

from callrelay import __version__
from callrelay.background import start_task
from callrelay.logs import log_event
from callrelay.metrics import (
    WEBHOOK_BACKLOG,
    WEBHOOK_DELIVERIES,
    WEBHOOK_OLDEST_SECONDS,
    WEBHOOK_RETRIES,
)
from callrelay.webhooks.events import WebhookEvent
from callrelay.webhooks.outbox import Delivery, Outbox

logger = logging.getLogger("callrelay.webhooks")

WORKERS = 4
"""Deliveries tried at once by one process."""
FIRST_RETRY_SECONDS = 0.5
LEASE_SECONDS = 30.0
"""A process's hold on its deliveries; renewed every third of it. One that stops renewing
(it is gone) has its deliveries taken over by another process once it runs out."""
POLL_SECONDS = 0.5
"""The dispatcher looks for due deliveries at least this often..."""
QUERY_GAP_SECONDS = 0.02
"""...and at most this often: the wake-ups of many finished tries make one query."""
HANDED_OUT = 64
"""Deliveries handed to the posting tasks at once, at most."""
BACKLOG_SECONDS = 1.0
"""How often the backlog's gauges are brought up to date."""
RETRY_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class WebhookPolicy:
    urls: list[str]
    secret: str
    timeout_seconds: float
    retry_max_seconds: float
    give_up_seconds: float


@dataclass(frozen=True)
class Outcome:
    """A try's result: `retry_after` None means it is over (`delivered` says how)."""

    delivered: bool
    detail: str
    retry_after: float | None = None


class WebhookDelivery:
    def __init__(self, outbox: Outbox, policy: WebhookPolicy) -> None:
        self._outbox = outbox
        self._policy = policy
        self._signer = Webhook(policy.secret)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        """This process's name in the outbox: host, process id, and when it was made (a
        process id is reused, by a container's restart for one)."""
        self._wake = threading.Event()
        self._work: queue.Queue[Delivery] = queue.Queue()
        self._in_flight: set[int] = set()
        self._in_flight_lock = threading.Lock()
        self._session = requests.Session()
        self._stopping = False
        self.failing: dict[str, str] = {}
        """Receivers whose last try failed, and how (for GET / and the console)."""

    def start(self) -> None:
        """Take over what processes of this host that are gone left (a restart, a kill -9),
        then start delivering."""
        lease_until = time.time() + LEASE_SECONDS
        for previous in self._outbox.owners():
            if _gone(previous, self.owner):
                taken = self._outbox.take_over(previous, self.owner, lease_until)
                log_event(logger, "webhook_deliveries_taken_over", deliveries=taken)
        self._outbox.renew(self.owner, lease_until, time.time())
        start_task("webhook-dispatcher", self._dispatch)
        for number in range(WORKERS):
            start_task(f"webhook-{number}", self._post_each)

    def enqueue(self, event: WebhookEvent) -> None:
        """Write `event` to the outbox for every receiver, then let the dispatcher know."""
        self._outbox.add(event, self._policy.urls, self.owner, time.time() + LEASE_SECONDS)
        self._wake.set()

    def stop(self) -> None:
        """Stop handing out deliveries; what is left stays in the outbox for the next start."""
        self._stopping = True
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """For GET /: how many receivers fail and what waits, never their addresses."""
        backlog = self._outbox.backlog()
        oldest = backlog.oldest_created_at
        return {
            "receivers": len(self._policy.urls),
            "failing": len(self.failing),
            "pending": backlog.pending,
            "oldestPendingSeconds": None if oldest is None else round(time.time() - oldest, 1),
        }

    # The dispatcher.

    def _dispatch(self) -> None:
        renewed = reported = 0.0
        while not self._stopping:
            now = time.time()
            if now - renewed > LEASE_SECONDS / 3:
                self._renew(now)
                renewed = now
            with self._in_flight_lock:
                busy = set(self._in_flight)
            free = HANDED_OUT - len(busy)
            due = self._outbox.due(self.owner, now, free, busy) if free > 0 else []
            for delivery in due:
                with self._in_flight_lock:
                    self._in_flight.add(delivery.id)
                self._work.put(delivery)
            if now - reported > BACKLOG_SECONDS:
                self._report_backlog(now)
                reported = now
            self._wake.wait(self._until_next(now))
            self._wake.clear()
            time.sleep(QUERY_GAP_SECONDS)

    def _renew(self, now: float) -> None:
        taken = self._outbox.renew(self.owner, now + LEASE_SECONDS, now)
        if taken:
            log_event(logger, "webhook_deliveries_taken_over", deliveries=taken)

    def _until_next(self, now: float) -> float:
        next_at = self._outbox.next_due_at(self.owner)
        if next_at is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.01, next_at - now))

    def _report_backlog(self, now: float) -> None:
        backlog = self._outbox.backlog()
        WEBHOOK_BACKLOG.set(backlog.pending)
        oldest = backlog.oldest_created_at
        WEBHOOK_OLDEST_SECONDS.set(0 if oldest is None else max(0.0, now - oldest))

    # The posting tasks.

    def _post_each(self) -> None:
        while True:
            delivery = self._work.get()
            try:
                self._settle(delivery, self._try(delivery))
            except Exception:
                logger.exception("webhook delivery %s failed", delivery.id)
            finally:
                with self._in_flight_lock:
                    self._in_flight.discard(delivery.id)
                self._wake.set()  # the chain's next event may be due now

    def _try(self, delivery: Delivery) -> Outcome:
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"callrelay/{__version__}",
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(delivery.event_id, now, delivery.body),
        }
        try:
            response = self._session.post(
                delivery.url,
                data=delivery.body.encode(),
                headers=headers,
                timeout=self._policy.timeout_seconds,
                allow_redirects=False,
            )
        except requests.Timeout:
            return Outcome(False, f"no answer within {self._policy.timeout_seconds:g} s", 0.0)
        except requests.RequestException as error:
            return Outcome(False, f"cannot connect: {type(error).__name__}", 0.0)
        status = response.status_code
        response.close()
        if 200 <= status < 300:
            return Outcome(True, str(status))
        if status in RETRY_STATUSES or status >= 500:
            return Outcome(False, str(status), _retry_after(response.headers.get("Retry-After")))
        return Outcome(False, f"{status}, not retried")

    def _settle(self, delivery: Delivery, outcome: Outcome) -> None:
        receiver = _receiver(delivery.url)
        if outcome.delivered:
            self._outbox.finished(delivery.id)
            WEBHOOK_DELIVERIES.labels(delivery.event_type, "delivered").inc()
            self.failing.pop(receiver, None)
            return
        self.failing[receiver] = outcome.detail
        now = time.time()
        deadline = delivery.created_at + self._policy.give_up_seconds
        if outcome.retry_after is None or now >= deadline:
            self._outbox.finished(delivery.id)
            WEBHOOK_DELIVERIES.labels(delivery.event_type, "given_up").inc()
            _log_failure("webhook_given_up", logging.ERROR, delivery, outcome.detail)
            return
        wait = self._backoff(delivery.attempts, outcome.retry_after)
        self._outbox.retry(delivery.id, min(now + wait, deadline), outcome.detail)
        WEBHOOK_RETRIES.labels(delivery.event_type).inc()
        if delivery.attempts == 0:
            _log_failure("webhook_retrying", logging.WARNING, delivery, outcome.detail)

    def _backoff(self, attempts: int, retry_after: float) -> float:
        """Doubling from FIRST_RETRY_SECONDS to the maximum, each wait between its half and
        its whole (so that retries of many deliveries do not arrive together)."""
        ceiling = min(self._policy.retry_max_seconds, FIRST_RETRY_SECONDS * 2.0**attempts)
        return max(retry_after, random.uniform(ceiling / 2, ceiling))


def _log_failure(event: str, level: int, delivery: Delivery, error: str) -> None:
    log_event(
        logger,
        event,
        level,
        eventType=delivery.event_type,
        webhookId=delivery.event_id,
        callSid=delivery.call_sid,
        receiver=_receiver(delivery.url),
        attempts=delivery.attempts + 1,
        error=error,
    )


def _gone(owner: str, me: str) -> bool:
    """Whether the process `owner` names is a gone process of this host."""
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if owner == me or host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # this process id, in an earlier life
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _retry_after(value: str | None) -> float:
    """Seconds a `Retry-After` asks for (a number, or an HTTP date); 0 if none or unreadable."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


def _receiver(url: str) -> str:
    """A receiver as logs and status name it: scheme, host and path, never its query (which
    may hold a key)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
