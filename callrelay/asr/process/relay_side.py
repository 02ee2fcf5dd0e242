"""The relay's side of the recognition process: an engine whose recognisers live in the child.

Requests travel in batches (`batches.py`), and their replies in one message per batch (a reply
that waits on a decode comes on its own when it is ready).

Threads (greenlets when the server runs under gevent): one sender, one reader per process, and
short-lived ones that restart, recycle or retire a process. Every change of `state`,
`generation` and the processes held is made under one lock.

The server runs under gevent: the pipe is only read once `select` (which gevent makes
cooperative) says a message is there, so waiting on the child never stalls the event loop.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from callrelay.asr import SpeechEngine, TrackRecogniser, Transcript
from callrelay.asr.base import Answer, RecogniserMethod
from callrelay.asr.process.batches import BatchSender
from callrelay.asr.process.child import EngineFactory, relay_log_line
from callrelay.asr.process.link import (
    RecognitionLink,
    connect_link,
    readable,
    spawn_link,
)
from callrelay.asr.process.messages import (
    Batch,
    Describe,
    LogLine,
    NewRecogniser,
    RecogniserCall,
    Replies,
    Request,
    Stop,
)
from callrelay.asr.process.remote_recogniser import (
    EngineProcessGone,
    RecogniserError,
    RemoteRecogniser,
)
from callrelay.background import start_task
from callrelay.logs import log_event

logger = logging.getLogger("callrelay.asr")

DESCRIBE_TIMEOUT_SECONDS = 2.0
RESTART_BACKOFF_SECONDS = (0.5, 2.0, 5.0, 15.0, 30.0, 60.0)
"""Waits before each try to start a recognition process that died; then recognition stays off."""


class EngineState(enum.Enum):
    """Where the recognition process stands, as the relay sees it."""

    SERVING = "serving"
    RECYCLING = "recycling"
    """Serving, while a fresh process starts to take over (`recycle_after` was reached)."""
    RESTARTING = "restarting"
    """The current process died; another is being started. Calls get no transcripts meanwhile."""
    OFF = "off"
    """Every restart failed: recognition stays off, calls go on."""
    CLOSED = "closed"


def start_engine_process(
    factory: EngineFactory, recycle_after: int | None = None
) -> SpeechEngine | None:
    """Load the engine `factory` makes in a child process; None if it makes none.

    `factory` must pickle (a module-level function, or a `functools.partial` of one). A load
    that fails raises here, in the relay, as it would in process. `recycle_after`: once that
    many recognisers have been made, the next moment none is in use the process is replaced
    by a fresh one (a speech engine's caches grow to the largest work they have seen).
    """
    return _engine(partial(spawn_link, factory), recycle_after)


def connect_engine_process(path: str) -> SpeechEngine | None:
    """The engine of a recognition process shared with other server processes, which serves
    them at the Unix socket `path` (`serve_engine_socket`); None if it has no engine. Whoever
    started that process restarts it if it dies; this one connects again."""
    return _engine(partial(connect_link, path), None)


def _engine(
    open_link: Callable[[], RecognitionLink | None], recycle_after: int | None
) -> SpeechEngine | None:
    link = open_link()
    if link is None:
        return None
    return ProcessSpeechEngine(link, open_link, recycle_after)


class ProcessSpeechEngine(SpeechEngine):
    """Looks like any engine; every recogniser call goes over the pipe.

    If the process dies (a crash, the OOM killer), the relay logs it, starts another and the
    tracks in flight carry on in it from where they are: the utterance being spoken when it
    died is lost, the rest of the call is not.

    Recycling (`recycle_after`) drains instead: a fresh process takes every recogniser made
    from then on, the old one serves those it has until they finish, then stops. Nothing is
    lost, and it happens under any load.
    """

    def __init__(
        self,
        link: RecognitionLink,
        open_link: Callable[[], RecognitionLink | None],
        recycle_after: int | None = None,
    ) -> None:
        """`open_link` starts (or reaches) a process again after one died or was recycled."""
        self.name = link.name
        self.sample_rate = link.sample_rate
        self._open_link = open_link
        self._lock = threading.Lock()
        self.generation = 0
        """Which process is current: +1 each time one is started again or recycled."""
        self._links: dict[int, RecognitionLink] = {0: link}
        """The current process, and recycled ones still serving their recognisers."""
        self._pending: dict[int, tuple[int, Future[Any]]] = {}
        """request id -> (generation it went to, its answer)."""
        self._request_ids = itertools.count()
        self._recogniser_keys = itertools.count()
        self.state = EngineState.SERVING
        self._recycle_after = recycle_after
        self._made = 0
        """Recognisers made in the current process."""
        self._in_use: Counter[int] = Counter()
        """Recognisers not finished, by the generation that serves them."""
        self.recycled = 0
        self._sender = BatchSender(self._held, self._forget)
        self._start_reader(0, link)
        self._sender.start()

    @property
    def alive(self) -> bool:
        """Whether a process serves new work now."""
        return self.state in (EngineState.SERVING, EngineState.RECYCLING)

    def _held(self) -> dict[int, RecognitionLink]:
        with self._lock:
            return dict(self._links)

    @property
    def pid(self) -> int | None:
        """The current recognition process; None once closed."""
        link = self._links.get(self.generation)
        return None if link is None else link.pid

    def serves(self, generation: int) -> bool:
        """Whether the process of `generation` still runs (current, or draining)."""
        return generation in self._links

    def new_recogniser(self, keyterms: Sequence[str] = ()) -> TrackRecogniser:
        key = next(self._recogniser_keys)
        terms = tuple(keyterms)
        with self._lock:
            generation = self.generation
            self._made += 1
            self._in_use[generation] += 1
        recogniser = RemoteRecogniser(self, key, generation, terms)
        if self.alive:
            self._sender.send(NewRecogniser(key, terms), generation)
        return recogniser

    def renew(self, key: int, position: int, previous: int, keyterms: tuple[str, ...] = ()) -> int:
        """Make recogniser `key` again in the current process, `position` samples into its
        track (its own process died); the generation that serves it now."""
        with self._lock:
            generation = self.generation
            self._in_use[previous] -= 1
            self._in_use[generation] += 1
        self._sender.send(NewRecogniser(key, keyterms), generation)
        if position:
            self._sender.send(
                RecogniserCall(next(self._request_ids), key, "skip", position), generation
            )
        return generation

    def call(self, key: int, method: RecogniserMethod, argument: Any, generation: int) -> Answer:
        """Run one recogniser method in the child. Nothing comes of it while there is no
        child, or if the child dies before answering; a call that raised there fails with
        `RecogniserError`."""
        answer: Answer = Future()
        request = self._request(
            lambda request_id: RecogniserCall(request_id, key, method, argument), generation
        )
        if request is None:
            answer.set_result([])
            return answer

        def settle(request: Future[list[Transcript]]) -> None:
            try:
                answer.set_result(request.result())
            except EngineProcessGone:
                answer.set_result([])
            except Exception as error:
                answer.set_exception(error)

        request.add_done_callback(settle)
        return answer

    def finished(self, generation: int) -> None:
        """A recogniser is done: a draining process with none left stops; a current one past
        its limit is replaced."""
        with self._lock:
            self._in_use[generation] -= 1
            drained = generation != self.generation and self._in_use[generation] <= 0
            due = self._recycle_after is not None and self._made >= self._recycle_after
            recycle = due and self.state is EngineState.SERVING
            if recycle:
                self.state = EngineState.RECYCLING
        if drained:
            self._retire(generation)
        if recycle:
            start_task("asr-recycle", self._recycle)

    def _recycle(self) -> None:
        """Start a fresh process and make it current; the old one drains."""
        try:
            link = self._open_link()
        except Exception as error:
            log_event(logger, "asr_recycle_failed", logging.WARNING, error=str(error))
            link = None
        if link is None:
            self._settle(EngineState.RECYCLING, EngineState.SERVING)
            return
        with self._lock:
            if self.state is EngineState.RECYCLING:
                self.state = EngineState.SERVING
            old = self.generation
            self.generation += 1
            self._links[self.generation] = link
            self._made = 0
            idle = self._in_use[old] <= 0
            self.recycled += 1
        self._start_reader(self.generation, link)
        log_event(
            logger,
            "asr_process_recycled",
            process=link.pid,
            previous=self._links[old].pid if old in self._links else None,
            draining=max(0, self._in_use[old]),
        )
        if idle:
            self._retire(old)

    def _settle(self, expected: EngineState, then: EngineState) -> None:
        """Move from `expected` to `then`, unless something else (a death, a close) came first."""
        with self._lock:
            if self.state is expected:
                self.state = then

    def _retire(self, generation: int) -> None:
        """Stop a recycled process that has no recogniser left."""
        with self._lock:
            link = self._links.pop(generation, None)
        if link is None:
            return
        with contextlib.suppress(OSError, ValueError):
            link.connection.send(Batch([Stop()]))
        start_task("asr-retire", link.stop)

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {
            **super().describe(),
            "process": self.pid,
            "restarts": self.generation - self.recycled,
            "recycled": self.recycled,
            "draining": len(self._links) - 1,
        }
        future = self._request(Describe, self.generation)
        if future is None:
            return {**described, "state": "restarting"}
        try:
            remote = future.result(timeout=DESCRIBE_TIMEOUT_SECONDS)
        except Exception:
            return {**described, "state": "busy"}
        return {**remote, **described}

    def close(self) -> None:
        """Stop the children (after the relay has finished every transcription)."""
        with self._lock:
            self.state = EngineState.CLOSED
        self._sender.stop()
        for link in list(self._links.values()):
            link.stop()

    def _request(self, make: Callable[[int], Request], generation: int) -> Future[Any] | None:
        """Send the request `make(request_id)`; its reply settles the future returned."""
        if not self.alive and generation == self.generation:
            return None
        future: Future[Any] = Future()
        request_id = next(self._request_ids)
        with self._lock:
            self._pending[request_id] = (generation, future)
        self._sender.send(make(request_id), generation)
        return future

    def _forget(self, unsent: list[Request]) -> None:
        """Requests that never reached a live process get no answer: say so."""
        for request in unsent:
            if isinstance(request, RecogniserCall | Describe):
                with self._lock:
                    pending = self._pending.pop(request.request_id, None)
                if pending is not None:
                    pending[1].set_exception(EngineProcessGone())

    def _start_reader(self, generation: int, link: RecognitionLink) -> None:
        start_task("asr-process-reader", self._read_replies, generation, link)

    def _read_replies(self, generation: int, link: RecognitionLink) -> None:
        self._relay_replies(link.connection)
        exit_code = link.exit_code()
        with self._lock:
            unanswered = [
                rid for rid, (served_by, _) in self._pending.items() if served_by == generation
            ]
            gone = [self._pending.pop(request_id)[1] for request_id in unanswered]
            held = self._links.pop(generation, None) is not None
            unexpected = held and self.state is not EngineState.CLOSED
            current = generation == self.generation
            if unexpected and current:
                self.state = EngineState.RESTARTING
        for future in gone:
            future.set_exception(EngineProcessGone())
        if not unexpected:
            return  # stopped or retired, as asked
        log_event(
            logger,
            "asr_process_died",
            logging.ERROR,
            exitCode=exit_code,
            detail="calls go on being relayed and recorded; recognition is restarting",
        )
        if current:
            self._restart()

    def _relay_replies(self, connection: Connection) -> None:
        while True:
            try:
                readable(connection, None)
                message = connection.recv()
            except (EOFError, OSError):
                return
            if isinstance(message, LogLine):
                relay_log_line(message)
                continue
            assert isinstance(message, Replies)
            for reply in message.replies:
                with self._lock:
                    pending = self._pending.pop(reply.request_id, None)
                if pending is None:
                    continue
                if reply.ok:
                    pending[1].set_result(reply.value)
                else:
                    pending[1].set_exception(RecogniserError(reply.value))

    def _restart(self) -> None:
        for wait in RESTART_BACKOFF_SECONDS:
            time.sleep(wait)
            if self.state is EngineState.CLOSED:
                return
            try:
                link = self._open_link()
            except Exception as error:
                log_event(logger, "asr_restart_failed", logging.ERROR, error=str(error))
                continue
            if link is None:
                break
            with self._lock:  # one step: a reader of `generation` sees `state` too
                self.generation += 1
                self._links[self.generation] = link
                self._made = 0
                self.state = EngineState.SERVING
            self._start_reader(self.generation, link)
            log_event(logger, "asr_process_restarted", process=link.pid, restarts=self.generation)
            return
        self._settle(EngineState.RESTARTING, EngineState.OFF)
        log_event(
            logger,
            "asr_process_gave_up",
            logging.ERROR,
            detail="recognition stays off; calls go on being relayed and recorded",
        )
