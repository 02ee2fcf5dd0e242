"""The recognition process: load the engine, run recognisers until told to stop.

A relay's own process serves it over a pipe (`serve_engine`); a process shared by several
server processes serves each over a Unix socket (`serve_engine_socket`). Nothing here is
patched by gevent: its threads are OS threads, and the engine's decoding runs on them."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection, Listener

from threadpoolctl import threadpool_info, threadpool_limits

from callrelay.asr.base import RECOGNITION_NICE, SpeechEngine, TrackRecogniser, Transcript
from callrelay.asr.process.messages import (
    Batch,
    ChildMessage,
    Describe,
    Loaded,
    LoadFailed,
    LogLine,
    NewRecogniser,
    NoEngine,
    RecogniserCall,
    Replies,
    Reply,
    Stop,
)
from callrelay.runtime import settle_heap

logger = logging.getLogger("callrelay.asr")

EngineFactory = Callable[[], SpeechEngine | None]
UNSENT_LOG_LINES = 100
PARENT_CHECK_SECONDS = 1.0


def _leave_signals_to_the_relay() -> None:
    """Ctrl-C reaches every process of the terminal's group: the relay stops this one (its
    pipe closes, or it is told to) once it has finished every transcription."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def serve_engine(connection: Connection, factory: EngineFactory) -> None:
    """The main of a relay's own recognition process, which serves that relay over a pipe."""
    _leave_signals_to_the_relay()
    with contextlib.suppress(OSError):
        os.nice(RECOGNITION_NICE)  # before any thread exists: the engine's threads inherit it
    send = _sender(connection)
    _log_to_relay(send)
    engine, loaded = _load(factory)
    send(loaded)
    if engine is not None:
        _serve_relay(connection, engine, send)
    os._exit(0)  # workers may be parked on model threads; nothing is left to hand back


def serve_engine_socket(path: str, factory: EngineFactory) -> None:
    """The main of a recognition process shared by several server processes: each connects
    to the Unix socket at `path` and is served on a thread of its own. Its log lines go to the
    relay that connected first and is still connected."""
    _leave_signals_to_the_relay()
    with contextlib.suppress(OSError):
        os.nice(RECOGNITION_NICE)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    listener = Listener(path, family="AF_UNIX")  # bound first: relays may connect and wait
    relays: dict[int, Callable[[ChildMessage], None]] = {}
    relays_lock = threading.Lock()
    unsent: list[ChildMessage] = []
    """Log lines made while no relay was connected (the engine loading), for the first."""

    def send_log(message: ChildMessage) -> None:
        with relays_lock:
            first = next(iter(relays.values()), None)
            if first is None:
                del unsent[: max(0, len(unsent) - UNSENT_LOG_LINES + 1)]
                unsent.append(message)
                return
        with contextlib.suppress(OSError, ValueError):
            first(message)

    _log_to_relay(send_log)
    engine, loaded = _load(factory)

    def serve(connection: Connection, number: int) -> None:
        send = _sender(connection)
        with contextlib.suppress(OSError, ValueError):
            send(loaded)
            if engine is None:
                return
            with relays_lock:
                relays[number] = send
                early, unsent[:] = list(unsent), []
            for line in early:
                send(line)
            _serve_relay(connection, engine, send)
        with relays_lock:
            relays.pop(number, None)
        connection.close()

    for number in itertools.count():
        connection = listener.accept()
        threading.Thread(
            target=serve, args=(connection, number), name=f"asr-relay-{number}", daemon=True
        ).start()


def _exit_with_parent(parent: int) -> None:
    """A process of its own stops when its relay's pipe closes; a shared one, which serves
    whoever connects, when the process that started it (and would restart it) is gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _one_blas_thread() -> None:
    """Once the engine is loaded: the BLAS libraries it loaded (numpy's OpenBLAS) use one
    thread each. With a thread per core, OpenBLAS's threads spin for a while after each small
    product (Whisper's mel filterbank) and burn a core beside the encoder that follows, nearly
    doubling the CPU of an utterance's encoding. An OPENBLAS_NUM_THREADS the user set is kept."""
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        threadpool_limits(limits=1, user_api="blas")


def _blas_threads() -> int:
    """The most threads any BLAS library loaded here may use."""
    return max((int(pool["num_threads"]) for pool in threadpool_info()), default=0)


def _sender(connection: Connection) -> Callable[[ChildMessage], None]:
    """Replies come from the reading thread and from engine threads: one message at a time."""
    lock = threading.Lock()

    def send(message: ChildMessage) -> None:
        with lock:
            connection.send(message)

    return send


def _load(factory: EngineFactory) -> tuple[SpeechEngine | None, ChildMessage]:
    """The engine, and what to tell a relay about its loading."""
    try:
        engine = factory()
    except Exception as error:
        return None, LoadFailed(type(error).__name__, str(error))
    if engine is None:
        return None, NoEngine()
    _one_blas_thread()
    settle_heap()
    return engine, Loaded(engine.name, engine.sample_rate, os.getpid())


def _serve_relay(
    connection: Connection, engine: SpeechEngine, send: Callable[[ChildMessage], None]
) -> None:
    """Run one relay's recognisers until it says stop or goes away. Recogniser calls are
    started on the thread that reads the connection (each returns at once; the work runs on
    the engine's threads) and answered when done."""
    recognisers: dict[int, TrackRecogniser] = {}

    def reply_later(call: RecogniserCall) -> Callable[[Future[list[Transcript]]], None]:
        def reply(answer: Future[list[Transcript]]) -> None:
            with contextlib.suppress(OSError, ValueError):
                send(Replies([_reply(call, answer)]))

        return reply

    while True:
        try:
            batch: Batch = connection.recv()
        except (EOFError, OSError):
            break  # the relay is gone
        replies: list[Reply] = []
        stopping = False
        for request in batch.requests:
            match request:
                case NewRecogniser(key, keyterms):
                    recognisers[key] = engine.new_recogniser(keyterms)
                case RecogniserCall():
                    answer = _start(recognisers, request)
                    if answer.done():
                        replies.append(_reply(request, answer))
                    else:
                        answer.add_done_callback(reply_later(request))
                case Describe(request_id):
                    described = {**engine.describe(), "blasThreads": _blas_threads()}
                    replies.append(Reply(request_id, True, described))
                case Stop():
                    stopping = True
        if replies:
            with contextlib.suppress(OSError, ValueError):
                send(Replies(replies))
        if stopping:
            break


def _start(
    recognisers: dict[int, TrackRecogniser], call: RecogniserCall
) -> Future[list[Transcript]]:
    try:
        recogniser = recognisers[call.key]
        if call.method == "accept":
            return recogniser.accept(call.argument)
        if call.method == "skip":
            return recogniser.skip(call.argument)
        recognisers.pop(call.key, None)
        return recogniser.finish()
    except Exception as error:
        failed: Future[list[Transcript]] = Future()
        failed.set_exception(error)
        return failed


def _reply(call: RecogniserCall, answer: Future[list[Transcript]]) -> Reply:
    try:
        return Reply(call.request_id, True, answer.result())
    except Exception:
        logger.exception("recogniser %s failed", call.method)
        return Reply(call.request_id, False, f"{call.method} failed")


class _RelayLogHandler(logging.Handler):
    def __init__(self, send: Callable[[ChildMessage], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            fields = dict(record.__dict__)
            fields.update(msg=record.getMessage(), args=None, exc_info=None)
            self._send(LogLine(fields))
        except Exception:
            self.handleError(record)


def _log_to_relay(send: Callable[[ChildMessage], None]) -> None:
    root = logging.getLogger("callrelay")
    root.handlers = [_RelayLogHandler(send)]
    root.setLevel(logging.INFO)
    root.propagate = False


def relay_log_line(line: LogLine) -> None:
    """In the relay: log a line the recognition process made, as if it were made here."""
    record = logging.makeLogRecord(line.fields)
    target = logging.getLogger(record.name)
    if target.isEnabledFor(record.levelno):
        target.handle(record)
