"""The relay's side of the recognition process: an engine whose recognisers live in the child.

Requests travel in batches, one message every `SEND_INTERVAL` at most, and their replies in one
message per batch (a reply that waits on a decode comes on its own when it is ready): a thread
woken for every track's 60 ms of audio, and a pipe message each way for it, would cost more CPU
than the recognition it asks for.

The server runs under gevent: the pipe is only read once `select` (which gevent makes
cooperative) says a message is there, so waiting on the child never stalls the event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import select
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from multiprocessing.connection import Client, Connection
from typing import Any, cast

from callrelay.asr import EngineUnavailable, SpeechEngine, TrackRecogniser, Transcript
from callrelay.asr.base import Answer, RecogniserMethod
from callrelay.asr.process.child import EngineFactory, relay_log_line, serve_engine
from callrelay.asr.process.messages import (
    Batch,
    Describe,
    Loaded,
    LoadFailed,
    LogLine,
    NewRecogniser,
    NoEngine,
    RecogniserCall,
    Replies,
    Request,
    Stop,
)
from callrelay.audio import Int16Array
from callrelay.logs import log_event

logger = logging.getLogger("callrelay.asr")

START_TIMEOUT_SECONDS = 180.0
DESCRIBE_TIMEOUT_SECONDS = 2.0
STOP_TIMEOUT_SECONDS = 5.0
CONNECT_RETRY_SECONDS = 0.2
SEND_INTERVAL = 0.02
"""Requests wait up to this long to travel with others."""
RESTART_BACKOFF_SECONDS = (0.5, 2.0, 5.0, 15.0, 30.0, 60.0)
"""Waits before each try to start a recognition process that died; then recognition stays off."""


def start_engine_process(
    factory: EngineFactory, recycle_after: int | None = None
) -> SpeechEngine | None:
    """Load the engine `factory` makes in a child process; None if it makes none.

    `factory` must pickle (a module-level function, or a `functools.partial` of one). A load
    that fails raises here, in the relay, as it would in process. `recycle_after`: once that
    many recognisers have been made, the next moment none is in use the process is replaced
    by a fresh one (a speech engine's caches grow to the largest work they have seen).
    """
    return _engine(partial(_spawn, factory), recycle_after)


def connect_engine_process(path: str) -> SpeechEngine | None:
    """The engine of a recognition process shared with other server processes, which serves
    them at the Unix socket `path` (`serve_engine_socket`); None if it has no engine. Whoever
    started that process restarts it if it dies; this one connects again."""
    return _engine(partial(_connect, path), None)


def _engine(
    open_link: Callable[[], RecognitionLink | None], recycle_after: int | None
) -> SpeechEngine | None:
    link = open_link()
    if link is None:
        return None
    return ProcessSpeechEngine(link, open_link, recycle_after)


class RecognitionLink:
    """A connection to a recognition process, and what this relay may do to that process."""

    def __init__(self, connection: Connection, loaded: Loaded, process: Any = None) -> None:
        self.connection = connection
        self.name = loaded.name
        self.sample_rate = loaded.sample_rate
        self.pid = loaded.pid
        self.process = process
        """The process, when this relay started it (and so stops it); None when shared."""

    def stop(self) -> None:
        """After `Stop` was sent: a process of our own is waited for (killed if it lingers);
        a shared one is only left."""
        if self.process is None:
            with contextlib.suppress(OSError):
                self.connection.close()
            return
        self.process.join(STOP_TIMEOUT_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(STOP_TIMEOUT_SECONDS)

    def exit_code(self) -> int | None:
        """Once the connection has closed: how the process ended, if it was ours."""
        if self.process is None:
            return None
        self.process.join(STOP_TIMEOUT_SECONDS)
        return cast(int | None, self.process.exitcode)


def _spawn(factory: EngineFactory) -> RecognitionLink | None:
    """Start a recognition process and wait until its engine is loaded."""
    context = multiprocessing.get_context("spawn")
    relay_end, child_end = context.Pipe()
    for end in (relay_end, child_end):
        # A pipe made under gevent is non-blocking, and the child would inherit that; both
        # ends read whole messages, and the relay's only once `select` says one is there.
        os.set_blocking(end.fileno(), True)
    process = context.Process(
        target=serve_engine, args=(child_end, factory), name="callrelay-asr", daemon=True
    )
    process.start()
    child_end.close()

    def how_it_ended() -> str:
        process.join(STOP_TIMEOUT_SECONDS)
        return f"code {process.exitcode}"

    try:
        loaded = _await_loaded(relay_end, how_it_ended)
    except BaseException:
        process.kill()
        process.join(STOP_TIMEOUT_SECONDS)
        raise
    if loaded is None:
        process.join(STOP_TIMEOUT_SECONDS)
        return None
    return RecognitionLink(relay_end, loaded, process)


def _connect(path: str) -> RecognitionLink | None:
    """Connect to a shared recognition process and wait until its engine is loaded."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            connection = Client(path, family="AF_UNIX")
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"no recognition process at {path}") from None
            time.sleep(CONNECT_RETRY_SECONDS)  # it is starting, or being restarted
    os.set_blocking(connection.fileno(), True)
    loaded = _await_loaded(connection, lambda: "shared")
    if loaded is None:
        connection.close()
        return None
    return RecognitionLink(connection, loaded)


def _await_loaded(connection: Connection, how_it_ended: Callable[[], str]) -> Loaded | None:
    """The process's answer to loading: its engine, None for no engine, or raise."""
    while True:
        if not _readable(connection, START_TIMEOUT_SECONDS):
            raise EngineUnavailable("the speech engine did not load in time")
        try:
            message = connection.recv()
        except (EOFError, OSError):
            raise EngineUnavailable(
                f"the speech engine process exited while loading ({how_it_ended()})"
            ) from None
        match message:
            case LogLine():
                relay_log_line(message)
            case LoadFailed(error_type, text):
                if error_type == "EngineUnavailable":
                    raise EngineUnavailable(text)
                raise RuntimeError(f"speech engine failed to load: {error_type}: {text}")
            case NoEngine():
                return None
            case Loaded():
                return message


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
        self._outbox: list[tuple[int, Request]] = []
        """(generation, request): what the sender thread sends next, in order."""
        self._outbox_ready = threading.Condition()
        self._pending: dict[int, tuple[int, Future[Any]]] = {}
        """request id -> (generation it went to, its answer)."""
        self._request_ids = itertools.count()
        self._recogniser_keys = itertools.count()
        self.alive = True
        self._stopping = False
        self._recycle_after = recycle_after
        self._made = 0
        """Recognisers made in the current process."""
        self._in_use: Counter[int] = Counter()
        """Recognisers not finished, by the generation that serves them."""
        self._recycling = False
        self.recycled = 0
        self._start_reader(0, link)
        self._sender = threading.Thread(
            target=self._send_batches, name="asr-process-sender", daemon=True
        )
        self._sender.start()

    @property
    def pid(self) -> int | None:
        """The current recognition process; None once closed."""
        link = self._links.get(self.generation)
        return None if link is None else link.pid

    def serves(self, generation: int) -> bool:
        """Whether the process of `generation` still runs (current, or draining)."""
        return generation in self._links

    def new_recogniser(self) -> TrackRecogniser:
        key = next(self._recogniser_keys)
        with self._lock:
            generation = self.generation
            self._made += 1
            self._in_use[generation] += 1
        recogniser = RemoteRecogniser(self, key, generation)
        if self.alive:
            self._send(NewRecogniser(key), generation)
        return recogniser

    def renew(self, key: int, position: int, previous: int) -> int:
        """Make recogniser `key` again in the current process, `position` samples into its
        track (its own process died); the generation that serves it now."""
        with self._lock:
            generation = self.generation
            self._in_use[previous] -= 1
            self._in_use[generation] += 1
        self._send(NewRecogniser(key), generation)
        if position:
            self._send(RecogniserCall(next(self._request_ids), key, "skip", position), generation)
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
            recycle = due and self.alive and not self._recycling and not self._stopping
            if recycle:
                self._recycling = True
        if drained:
            self._retire(generation)
        if recycle:
            threading.Thread(target=self._recycle, name="asr-recycle", daemon=True).start()

    def _recycle(self) -> None:
        """Start a fresh process and make it current; the old one drains."""
        try:
            link = self._open_link()
        except Exception as error:
            log_event(logger, "asr_recycle_failed", logging.WARNING, error=str(error))
            self._recycling = False
            return
        if link is None:
            self._recycling = False
            return
        with self._lock:
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
        self._recycling = False

    def _retire(self, generation: int) -> None:
        """Stop a recycled process that has no recogniser left."""
        with self._lock:
            link = self._links.pop(generation, None)
        if link is None:
            return
        with contextlib.suppress(OSError, ValueError):
            link.connection.send(Batch([Stop()]))
        threading.Thread(target=link.stop, name="asr-retire", daemon=True).start()

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
        self._stopping = True
        self._send(Stop(), None)
        self._sender.join(STOP_TIMEOUT_SECONDS)  # it returns once it has sent `Stop`
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
        self._send(make(request_id), generation)
        return future

    def _send(self, request: Request, generation: int | None) -> None:
        """Queue `request` for the sender thread (for every process when `generation` is
        None): never blocks, even when a child is stuck (the queue stays small: each track
        has one call in flight at most)."""
        with self._outbox_ready:
            self._outbox.append((-1 if generation is None else generation, request))
            self._outbox_ready.notify()

    def _send_batches(self) -> None:
        last_sent = 0.0
        while True:
            with self._outbox_ready:
                while not self._outbox:
                    self._outbox_ready.wait()
            time.sleep(max(0.0, last_sent + SEND_INTERVAL - time.monotonic()))
            with self._outbox_ready:
                batch, self._outbox = self._outbox, []
            with self._lock:
                links = dict(self._links)
            stopping = False
            unsent: list[Request] = []
            for generation, link in links.items():
                requests = [r for made_for, r in batch if made_for in (generation, -1)]
                if not requests:
                    continue
                try:
                    link.connection.send(Batch(requests))
                except (OSError, ValueError):  # the process is gone: its reader handles it
                    unsent += requests
                stopping = stopping or any(isinstance(r, Stop) for r in requests)
            unsent += [r for made_for, r in batch if made_for not in links and made_for != -1]
            last_sent = time.monotonic()
            self._forget(unsent)
            if stopping and self._stopping:
                return

    def _forget(self, unsent: list[Request]) -> None:
        """Requests that never reached a live process get no answer: say so."""
        for request in unsent:
            if isinstance(request, RecogniserCall | Describe):
                with self._lock:
                    pending = self._pending.pop(request.request_id, None)
                if pending is not None:
                    pending[1].set_exception(EngineProcessGone())

    def _start_reader(self, generation: int, link: RecognitionLink) -> None:
        threading.Thread(
            target=self._read_replies,
            args=(generation, link),
            name="asr-process-reader",
            daemon=True,
        ).start()

    def _read_replies(self, generation: int, link: RecognitionLink) -> None:
        self._relay_replies(link.connection)
        exit_code = link.exit_code()
        with self._lock:
            unanswered = [
                rid for rid, (served_by, _) in self._pending.items() if served_by == generation
            ]
            gone = [self._pending.pop(request_id)[1] for request_id in unanswered]
            unexpected = self._links.pop(generation, None) is not None and not self._stopping
            current = generation == self.generation
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
            self.alive = False
            self._restart()

    def _relay_replies(self, connection: Connection) -> None:
        while True:
            try:
                _readable(connection, None)
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
            if self._stopping:
                return
            try:
                link = self._open_link()
            except Exception as error:
                log_event(logger, "asr_restart_failed", logging.ERROR, error=str(error))
                continue
            if link is None:
                return
            with self._lock:  # one step: a reader of `generation` sees `alive` too
                self.generation += 1
                self._links[self.generation] = link
                self._made = 0
                self.alive = True
            self._start_reader(self.generation, link)
            log_event(logger, "asr_process_restarted", process=link.pid, restarts=self.generation)
            return


def _readable(connection: Connection, timeout: float | None) -> bool:
    """Wait until `connection` has something to read (or has closed); False on timeout."""
    readable, _, _ = select.select([connection], [], [], timeout)
    return bool(readable)


class RemoteRecogniser(TrackRecogniser):
    def __init__(self, engine: ProcessSpeechEngine, key: int, generation: int) -> None:
        self._engine = engine
        self._key = key
        self._generation = generation
        """The process that serves it (a recycled one serves it until it finishes)."""
        self._position = 0
        """Samples of its track it has been given or told to skip: where a new one starts."""

    def accept(self, samples: Int16Array) -> Answer:
        answer = self._call("accept", samples)
        self._position += len(samples)
        return answer

    def skip(self, sample_count: int) -> Answer:
        answer = self._call("skip", sample_count)
        self._position += sample_count
        return answer

    def finish(self) -> Answer:
        answer = self._call("finish", None)
        generation = self._generation
        answer.add_done_callback(lambda _: self._engine.finished(generation))
        return answer

    def _call(self, method: RecogniserMethod, argument: Any) -> Answer:
        if not self._engine.serves(self._generation) and self._engine.alive:
            self._generation = self._engine.renew(self._key, self._position, self._generation)
        return self._engine.call(self._key, method, argument, self._generation)


class EngineProcessGone(Exception):
    """The recognition process exited; its pending calls have no answer."""


class RecogniserError(Exception):
    """A recogniser method raised in the child; the text is its traceback."""
