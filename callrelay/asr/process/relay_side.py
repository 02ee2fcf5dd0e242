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
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

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
SEND_INTERVAL = 0.02
"""Requests wait up to this long to travel with others."""
RESTART_BACKOFF_SECONDS = (0.5, 2.0, 5.0, 15.0, 30.0, 60.0)
"""Waits before each try to start a recognition process that died; then recognition stays off."""

CHILD_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1"}
"""Read by numpy's OpenBLAS when the child loads it. With a thread per core, OpenBLAS's threads
spin for a while after each small product (Whisper's mel filterbank) and burn a core beside the
encoder that follows, nearly doubling the CPU of an utterance's encoding. A setting the user
made is kept."""


def start_engine_process(
    factory: EngineFactory, recycle_after: int | None = None
) -> SpeechEngine | None:
    """Load the engine `factory` makes in a child process; None if it makes none.

    `factory` must pickle (a module-level function, or a `functools.partial` of one). A load
    that fails raises here, in the relay, as it would in process. `recycle_after`: once that
    many recognisers have been made, the next moment none is in use the process is replaced
    by a fresh one (a speech engine's caches grow to the largest work they have seen).
    """
    child = _spawn(factory)
    if child is None:
        return None
    process, connection, loaded = child
    return ProcessSpeechEngine(process, connection, factory, loaded, recycle_after)


def _spawn(factory: EngineFactory) -> tuple[Any, Connection, Loaded] | None:
    """Start a recognition process and wait until its engine is loaded."""
    context = multiprocessing.get_context("spawn")
    for name, value in CHILD_ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # the relay's numpy is loaded: only the child reads it
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
    while True:
        if not _readable(relay_end, START_TIMEOUT_SECONDS):
            process.kill()
            raise EngineUnavailable("the speech engine did not load in time")
        try:
            message = relay_end.recv()
        except EOFError:
            raise EngineUnavailable(
                f"the speech engine process exited while loading (code {process.exitcode})"
            ) from None
        match message:
            case LogLine():
                relay_log_line(message)
            case LoadFailed(error_type, text):
                process.join(STOP_TIMEOUT_SECONDS)
                if error_type == "EngineUnavailable":
                    raise EngineUnavailable(text)
                raise RuntimeError(f"speech engine failed to load: {error_type}: {text}")
            case NoEngine():
                process.join(STOP_TIMEOUT_SECONDS)
                return None
            case Loaded():
                return process, relay_end, message


class ProcessSpeechEngine(SpeechEngine):
    """Looks like any engine; every recogniser call goes over the pipe.

    If the process dies (a crash, the OOM killer), the relay logs it, starts another and the
    tracks in flight carry on in it from where they are: the utterance being spoken when it
    died is lost, the rest of the call is not.
    """

    def __init__(
        self,
        process: Any,
        connection: Connection,
        factory: EngineFactory,
        loaded: Loaded,
        recycle_after: int | None = None,
    ) -> None:
        self.name = loaded.name
        self.sample_rate = loaded.sample_rate
        self._process = process
        self._connection = connection
        self._factory = factory
        self._send_lock = threading.Lock()
        self._outbox: list[tuple[int, Request]] = []
        """(generation, request): what the sender thread sends next, in order."""
        self._outbox_ready = threading.Condition()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._request_ids = itertools.count()
        self._recogniser_keys = itertools.count()
        self.alive = True
        self.generation = 0
        """How many times the process was started again; a recogniser made in an older one is
        made again (at its place on the timeline) before its next call."""
        self._stopping = False
        self._recycle_after = recycle_after
        self._made = 0
        """Recognisers made in the current process."""
        self._in_use = 0
        self._recycling = False
        self.recycled = 0
        threading.Thread(target=self._read_replies, name="asr-process-reader", daemon=True).start()
        threading.Thread(target=self._send_batches, name="asr-process-sender", daemon=True).start()

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    def new_recogniser(self) -> TrackRecogniser:
        key = next(self._recogniser_keys)
        self._made += 1
        self._in_use += 1
        recogniser = RemoteRecogniser(self, key, self.generation)
        if self.alive:
            self._send(NewRecogniser(key))
        return recogniser

    def renew(self, key: int, position: int) -> None:
        """Make recogniser `key` again in a new process, `position` samples into its track."""
        self._send(NewRecogniser(key))
        if position:
            self._send(RecogniserCall(next(self._request_ids), key, "skip", position))

    def call(self, key: int, method: RecogniserMethod, argument: Any) -> Answer:
        """Run one recogniser method in the child. Nothing comes of it while there is no
        child, or if the child dies before answering; a call that raised there fails with
        `RecogniserError`."""
        answer: Answer = Future()
        request = self._request(
            lambda request_id: RecogniserCall(request_id, key, method, argument)
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

    def finished(self) -> None:
        """A recogniser is done; time to recycle the process if it is due and idle."""
        self._in_use -= 1
        due = self._recycle_after is not None and self._made >= self._recycle_after
        if due and self._in_use == 0 and self.alive and not self._recycling:
            self._recycling = True
            threading.Thread(target=self._recycle, name="asr-recycle", daemon=True).start()

    def _recycle(self) -> None:
        """Start a fresh process, send the next requests to it, then stop the old one."""
        try:
            child = _spawn(self._factory)
        except Exception as error:
            log_event(logger, "asr_recycle_failed", logging.WARNING, error=str(error))
            self._recycling = False
            return
        if child is None:
            self._recycling = False
            return
        old_process, old_connection = self._process, self._connection
        with self._send_lock:
            self._process, self._connection, _ = child
            self.generation += 1
            self._made = self._in_use
        self.recycled += 1
        log_event(logger, "asr_process_recycled", process=self.pid, previous=old_process.pid)
        with contextlib.suppress(OSError, ValueError):
            old_connection.send(Batch([Stop()]))
        old_process.join(STOP_TIMEOUT_SECONDS)
        if old_process.is_alive():
            old_process.kill()
        self._recycling = False

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {
            **super().describe(),
            "process": self.pid,
            "restarts": self.generation - self.recycled,
            "recycled": self.recycled,
        }
        future = self._request(Describe)
        if future is None:
            return {**described, "state": "restarting"}
        try:
            remote = future.result(timeout=DESCRIBE_TIMEOUT_SECONDS)
        except Exception:
            return {**described, "state": "busy"}
        return {**remote, **described}

    def close(self) -> None:
        """Stop the child (after the relay has finished every transcription)."""
        self._stopping = True
        self._send(Stop())
        self._process.join(STOP_TIMEOUT_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(STOP_TIMEOUT_SECONDS)

    def _request(self, make: Callable[[int], Request]) -> Future[Any] | None:
        """Send the request `make(request_id)`; its reply settles the future returned."""
        if not self.alive:
            return None
        future: Future[Any] = Future()
        request_id = next(self._request_ids)
        with self._pending_lock:
            self._pending[request_id] = future
        self._send(make(request_id))
        return future

    def _send(self, request: Request) -> None:
        """Queue `request` for the sender thread: never blocks, even when the child is stuck
        (the queue stays small: each track has one call in flight at most)."""
        with self._outbox_ready:
            self._outbox.append((self.generation, request))
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
            with self._send_lock:
                connection, generation = self._connection, self.generation
            current = [request for made_in, request in batch if made_in == generation]
            stale = [request for made_in, request in batch if made_in != generation]
            try:
                connection.send(Batch(current))
            except (OSError, ValueError):  # the process is gone: the reader restarts it
                stale, current = stale + current, []
            last_sent = time.monotonic()
            self._forget(stale)
            if any(isinstance(request, Stop) for request in current):
                return

    def _forget(self, unsent: list[Request]) -> None:
        """Requests that never reached a live process get no answer: say so."""
        for request in unsent:
            if isinstance(request, RecogniserCall | Describe):
                with self._pending_lock:
                    future = self._pending.pop(request.request_id, None)
                if future is not None:
                    future.set_exception(EngineProcessGone())

    def _read_replies(self) -> None:
        while True:
            connection = self._connection
            self._relay_replies(connection)
            if connection is not self._connection and not self._stopping:
                continue  # recycled: the old process has gone, read the new one
            self.alive = False
            self._process.join(STOP_TIMEOUT_SECONDS)
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            for future in pending.values():
                future.set_exception(EngineProcessGone())
            if self._stopping:
                return
            log_event(
                logger,
                "asr_process_died",
                logging.ERROR,
                exitCode=self._process.exitcode,
                detail="calls go on being relayed and recorded; recognition is restarting",
            )
            if not self._restart():
                return

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
                with self._pending_lock:
                    future = self._pending.pop(reply.request_id, None)
                if future is None:
                    continue
                if reply.ok:
                    future.set_result(reply.value)
                else:
                    future.set_exception(RecogniserError(reply.value))

    def _restart(self) -> bool:
        for wait in RESTART_BACKOFF_SECONDS:
            time.sleep(wait)
            if self._stopping:
                return False
            try:
                child = _spawn(self._factory)
            except Exception as error:
                log_event(logger, "asr_restart_failed", logging.ERROR, error=str(error))
                continue
            if child is None:
                return False
            with self._send_lock:
                self._process, self._connection, _ = child
            self.generation += 1
            self.alive = True
            log_event(logger, "asr_process_restarted", process=self.pid, restarts=self.generation)
            return True
        return False


def _readable(connection: Connection, timeout: float | None) -> bool:
    """Wait until `connection` has something to read (or has closed); False on timeout."""
    readable, _, _ = select.select([connection], [], [], timeout)
    return bool(readable)


class RemoteRecogniser(TrackRecogniser):
    def __init__(self, engine: ProcessSpeechEngine, key: int, generation: int) -> None:
        self._engine = engine
        self._key = key
        self._generation = generation
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
        answer.add_done_callback(lambda _: self._engine.finished())
        return answer

    def _call(self, method: RecogniserMethod, argument: Any) -> Answer:
        if self._generation != self._engine.generation and self._engine.alive:
            self._generation = self._engine.generation
            self._engine.renew(self._key, self._position)
        return self._engine.call(self._key, method, argument)


class EngineProcessGone(Exception):
    """The recognition process exited; its pending calls have no answer."""


class RecogniserError(Exception):
    """A recogniser method raised in the child; the text is its traceback."""
