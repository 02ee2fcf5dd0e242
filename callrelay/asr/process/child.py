"""The recognition process: load the engine, run recognisers until told to stop."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection

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


def serve_engine(connection: Connection, factory: EngineFactory) -> None:
    """The process's main: recogniser calls are started on the thread that reads the pipe
    (each returns at once; the work runs on the engine's threads) and answered when done."""
    with contextlib.suppress(OSError):
        os.nice(RECOGNITION_NICE)  # before any thread exists: the engine's threads inherit it
    send_lock = threading.Lock()

    def send(message: ChildMessage) -> None:
        with send_lock:
            connection.send(message)

    _log_to_relay(send)
    try:
        engine = factory()
    except Exception as error:
        send(LoadFailed(type(error).__name__, str(error)))
        return
    if engine is None:
        send(NoEngine())
        return
    send(Loaded(engine.name, engine.sample_rate))
    settle_heap()
    recognisers: dict[int, TrackRecogniser] = {}

    def reply_later(call: RecogniserCall) -> Callable[[Future[list[Transcript]]], None]:
        def reply(answer: Future[list[Transcript]]) -> None:
            with contextlib.suppress(OSError, ValueError):
                send(Replies([_reply(call, answer)]))

        return reply

    stopping = False
    while not stopping:
        try:
            batch: Batch = connection.recv()
        except (EOFError, OSError):
            break  # the relay is gone
        replies: list[Reply] = []
        for request in batch.requests:
            match request:
                case NewRecogniser(key):
                    recognisers[key] = engine.new_recogniser()
                case RecogniserCall():
                    answer = _start(recognisers, request)
                    if answer.done():
                        replies.append(_reply(request, answer))
                    else:
                        answer.add_done_callback(reply_later(request))
                case Describe(request_id):
                    replies.append(Reply(request_id, True, engine.describe()))
                case Stop():
                    stopping = True
        if replies:
            with contextlib.suppress(OSError, ValueError):
                send(Replies(replies))
    os._exit(0)  # workers may be parked on model threads; nothing is left to hand back


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
