"""A speech engine in a process of its own, so that recognition never shares the relay's GIL.

The relay process keeps everything about calls (each track's queue, lag, skipping, events);
only the engine and its recognisers live in the child, at a lower OS priority. Under a full CPU
it is transcripts that wait, never audio frames, and the Python work of recognition (VAD
windows, feature extraction, decoding bookkeeping) no longer takes turns with the relay's
sockets for one interpreter lock. The two talk over a pipe: each recogniser call is a request
with a reply; the child's log lines come back over the same pipe into the relay's log.

Requests travel in batches, one message every `SEND_INTERVAL` at most, and their replies in one
message per batch (a reply that waits on a decode comes on its own when it is ready). Every
thread that sleeps and is woken costs ~0.1 ms of CPU on a virtual machine like ours; a request
and reply of their own for each track's 60 ms of audio cost 0.7 ms of CPU, 0.23 cores for 20
tracks before any recognition (measured).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from callrelay.asr import EngineUnavailable, SpeechEngine, TrackRecogniser, Transcript
from callrelay.asr.base import RECOGNITION_NICE, CallName
from callrelay.audio import Int16Array
from callrelay.logs import log_event
from callrelay.runtime import settle_heap

logger = logging.getLogger("callrelay.asr")

START_TIMEOUT_SECONDS = 180.0
DESCRIBE_TIMEOUT_SECONDS = 2.0
STOP_TIMEOUT_SECONDS = 5.0
SEND_INTERVAL = 0.02
"""Requests wait up to this long to travel with others."""
RESTART_BACKOFF_SECONDS = (0.5, 2.0, 5.0, 15.0, 30.0, 60.0)
"""Waits before each try to start a recognition process that died; then recognition stays off."""

EngineFactory = Callable[[], SpeechEngine | None]

CHILD_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1"}
"""Read by numpy's OpenBLAS when the child loads it. With a thread per core, OpenBLAS's threads
spin for a while after each small product (Whisper's mel filterbank) and burn a core beside the
encoder that follows: measured, 233 ms of CPU per utterance's encoding instead of 125. A
setting the user made is kept."""


def start_engine_process(factory: EngineFactory, workers: int) -> SpeechEngine | None:
    """Load the engine `factory` makes in a child process; None if it makes none.

    `factory` must pickle (a module-level function, or a `functools.partial` of one). A load
    that fails raises here, in the relay, as it would in process.
    """
    child = _spawn(factory, workers)
    if child is None:
        return None
    process, connection, ready = child
    return ProcessSpeechEngine(process, connection, factory, workers, **ready)


def _spawn(factory: EngineFactory, workers: int) -> tuple[Any, Connection, dict[str, Any]] | None:
    """Start a recognition process and wait until its engine is loaded."""
    context = multiprocessing.get_context("spawn")
    for name, value in CHILD_ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # the relay's numpy is loaded: only the child reads it
    relay_end, child_end = context.Pipe()
    process = context.Process(
        target=serve_engine,
        args=(child_end, factory, workers),
        name="callrelay-asr",
        daemon=True,
    )
    process.start()
    child_end.close()
    while True:
        if not relay_end.poll(START_TIMEOUT_SECONDS):
            process.kill()
            raise EngineUnavailable("the speech engine did not load in time")
        try:
            message = relay_end.recv()
        except EOFError:
            raise EngineUnavailable(
                f"the speech engine process exited while loading (code {process.exitcode})"
            ) from None
        kind = message[0]
        if kind == "log":
            _relay_log_record(message[1])
        elif kind == "failed":
            process.join(STOP_TIMEOUT_SECONDS)
            _, error_type, text = message
            if error_type == "EngineUnavailable":
                raise EngineUnavailable(text)
            raise RuntimeError(f"speech engine failed to load: {error_type}: {text}")
        elif kind == "ready":
            if message[1] is None:
                process.join(STOP_TIMEOUT_SECONDS)
                return None
            return process, relay_end, message[1]


class ProcessSpeechEngine(SpeechEngine):
    """The relay's side: looks like any engine; every recogniser call goes over the pipe.

    If the process dies (a crash, the OOM killer), the relay logs it, starts another and the
    tracks in flight carry on in it from where they are: the utterance being spoken when it
    died is lost, the rest of the call is not.
    """

    def __init__(
        self,
        process: Any,
        connection: Connection,
        factory: EngineFactory,
        workers: int,
        *,
        name: str,
        sample_rate: int,
    ) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self._process = process
        self._connection = connection
        self._factory = factory
        self._workers = workers
        self._send_lock = threading.Lock()
        self._outbox: list[tuple[int, tuple[Any, ...]]] = []
        """(generation, message): what the sender thread sends next, in order."""
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
        threading.Thread(target=self._read_replies, name="asr-process-reader", daemon=True).start()
        threading.Thread(target=self._send_batches, name="asr-process-sender", daemon=True).start()

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    def new_recogniser(self) -> TrackRecogniser:
        key = next(self._recogniser_keys)
        recogniser = RemoteRecogniser(self, key, self.generation)
        if self.alive:
            self._send(("new", key))
        return recogniser

    def renew(self, key: int, position: int) -> None:
        """Make recogniser `key` again in a new process, `position` samples into its track."""
        self._send(("new", key))
        if position:
            self._send(("call", next(self._request_ids), key, "skip", position))  # no answer

    def begin(self, key: int, method: CallName, argument: Any) -> Future[list[Transcript]]:
        """Run one recogniser method in the child. Nothing comes of it while there is no
        child, or if the child dies before answering; a call that raised there fails with
        `RecogniserError`."""
        answer: Future[list[Transcript]] = Future()
        request = self._request(("call", key, method, argument))
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

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {
            **super().describe(),
            "process": self.pid,
            "restarts": self.generation,
        }
        future = self._request(("describe",))
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
        self._send(("stop",))
        self._process.join(STOP_TIMEOUT_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(STOP_TIMEOUT_SECONDS)

    def _request(self, message: tuple[Any, ...]) -> Future[Any] | None:
        if not self.alive:
            return None
        future: Future[Any] = Future()
        request_id = next(self._request_ids)
        with self._pending_lock:
            self._pending[request_id] = future
        self._send((message[0], request_id, *message[1:]))
        return future

    def _send(self, message: tuple[Any, ...]) -> None:
        """Queue `message` for the sender thread: never blocks, even when the child is stuck
        (the queue stays small: each track has one call in flight at most)."""
        with self._outbox_ready:
            self._outbox.append((self.generation, message))
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
            current = [message for made_in, message in batch if made_in == generation]
            stale = [message for made_in, message in batch if made_in != generation]
            try:
                connection.send(("batch", current))
            except (OSError, ValueError):  # the process is gone: the reader restarts it
                stale, current = stale + current, []
            last_sent = time.monotonic()
            self._forget(stale)
            if any(message[0] == "stop" for message in current):
                return

    def _forget(self, unsent: list[tuple[Any, ...]]) -> None:
        """Requests that never reached a live process get no answer: say so."""
        for message in unsent:
            if message[0] in ("call", "describe"):
                with self._pending_lock:
                    future = self._pending.pop(message[1], None)
                if future is not None:
                    future.set_exception(EngineProcessGone())

    def _read_replies(self) -> None:
        while True:
            self._relay_replies(self._connection)
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
                message = connection.recv()
            except (EOFError, OSError):
                return
            if message[0] == "log":
                _relay_log_record(message[1])
                continue
            for request_id, ok, value in message[1]:
                with self._pending_lock:
                    future = self._pending.pop(request_id, None)
                if future is None:
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(RecogniserError(value))

    def _restart(self) -> bool:
        for wait in RESTART_BACKOFF_SECONDS:
            time.sleep(wait)
            if self._stopping:
                return False
            try:
                child = _spawn(self._factory, self._workers)
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


class RemoteRecogniser(TrackRecogniser):
    answers_later = True

    def __init__(self, engine: ProcessSpeechEngine, key: int, generation: int) -> None:
        self._engine = engine
        self._key = key
        self._generation = generation
        self._position = 0
        """Samples of its track it has been given or told to skip: where a new one starts."""

    def begin(self, method: CallName, argument: Any = None) -> Future[list[Transcript]]:
        if self._generation != self._engine.generation and self._engine.alive:
            self._generation = self._engine.generation
            self._engine.renew(self._key, self._position)
        future = self._engine.begin(self._key, method, argument)
        if method == "accept":
            self._position += len(argument)
        elif method == "skip":
            self._position += argument
        return future

    def call(self, method: CallName, argument: Any = None) -> list[Transcript]:
        return self.begin(method, argument).result()

    def accept(self, samples: Int16Array) -> list[Transcript]:
        return self.call("accept", samples)

    def skip(self, sample_count: int) -> list[Transcript]:
        return self.call("skip", sample_count)

    def finish(self) -> list[Transcript]:
        return self.call("finish")


class EngineProcessGone(Exception):
    """The recognition process exited; its pending calls have no answer."""


class RecogniserError(Exception):
    """A recogniser method raised in the child; the text is its traceback."""


# The child's side.


def serve_engine(connection: Connection, factory: EngineFactory, workers: int) -> None:
    """The recognition process: load the engine, then run recognisers until told to stop."""
    with contextlib.suppress(OSError):
        os.nice(RECOGNITION_NICE)  # before any thread exists: the engine's threads inherit it
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            connection.send(message)

    _log_to_relay(send)
    try:
        engine = factory()
    except Exception as error:
        send(("failed", type(error).__name__, str(error)))
        return
    if engine is None:
        send(("ready", None))
        return
    send(("ready", {"name": engine.name, "sample_rate": engine.sample_rate}))
    settle_heap()
    recognisers: dict[int, TrackRecogniser] = {}
    pool = (
        None
        if engine.begins_quickly
        else ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr")
    )

    def outcome(request_id: int, method: str, answer: Future[list[Transcript]]) -> tuple[Any, ...]:
        try:
            return (request_id, True, answer.result())
        except Exception:
            logger.exception("recogniser %s failed", method)
            return (request_id, False, f"{method} failed")

    def reply_later(request_id: int, method: str) -> Callable[[Future[list[Transcript]]], None]:
        def reply(answer: Future[list[Transcript]]) -> None:
            with contextlib.suppress(OSError, ValueError):
                send(("replies", [outcome(request_id, method, answer)]))

        return reply

    def begin(key: int, method: CallName, argument: Any) -> Future[list[Transcript]]:
        try:
            recogniser = recognisers[key]
            if method == "finish":
                recognisers.pop(key, None)
            return recogniser.begin(method, argument)
        except Exception as error:
            failed: Future[list[Transcript]] = Future()
            failed.set_exception(error)
            return failed

    def run(request_id: int, key: int, method: CallName, argument: Any) -> None:
        reply_later(request_id, method)(begin(key, method, argument))

    stopping = False
    while not stopping:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            break  # the relay is gone
        replies: list[tuple[Any, ...]] = []
        for kind, *fields in message[1]:
            if kind == "new":
                recognisers[fields[0]] = engine.new_recogniser()
            elif kind == "call" and pool is not None:
                pool.submit(run, *fields)
            elif kind == "call":
                request_id, key, method, argument = fields
                answer = begin(key, method, argument)
                if answer.done():
                    replies.append(outcome(request_id, method, answer))
                else:
                    answer.add_done_callback(reply_later(request_id, method))
            elif kind == "describe":
                replies.append((fields[0], True, engine.describe()))
            elif kind == "stop":
                stopping = True
        if replies:
            with contextlib.suppress(OSError, ValueError):
                send(("replies", replies))
    os._exit(0)  # workers may be parked on model threads; nothing is left to hand back


class _RelayLogHandler(logging.Handler):
    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            fields = dict(record.__dict__)
            fields.update(msg=record.getMessage(), args=None, exc_info=None)
            self._send(("log", fields))
        except Exception:
            self.handleError(record)


def _log_to_relay(send: Callable[[tuple[Any, ...]], None]) -> None:
    root = logging.getLogger("callrelay")
    root.handlers = [_RelayLogHandler(send)]
    root.setLevel(logging.INFO)
    root.propagate = False


def _relay_log_record(fields: dict[str, Any]) -> None:
    record = logging.makeLogRecord(fields)
    target = logging.getLogger(record.name)
    if target.isEnabledFor(record.levelno):
        target.handle(record)
