"""Logging: a readable console and `media.log`, one JSON object per line, secrets redacted.

Code logs events, not sentences: `log_event(logger, "call_started", callSid=...)` writes
`{"ts": "...Z", "level": "INFO", "evt": "call_started", "callSid": ...}` to the file and a short
line to the console. Every secret value the settings hold is replaced by `[redacted]` in both,
wherever it appears (an exception text, a URL, a field).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from concurrent_log_handler import ConcurrentRotatingFileHandler

LOG_MAX_BYTES = 8 * 1024 * 1024
LOG_BACKUPS = 4
REDACTED = "[redacted]"
_FIELDS = "callrelay_fields"
_EVENT = "callrelay_evt"


def log_event(
    logger: logging.Logger, evt: str, level: int = logging.INFO, /, **fields: Any
) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, evt, extra={_EVENT: evt, _FIELDS: fields})


def _record_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    evt = getattr(record, _EVENT, None)
    fields: dict[str, Any] = dict(getattr(record, _FIELDS, {}))
    if evt is None:
        evt = "log"
        fields["msg"] = record.getMessage()
        fields["logger"] = record.name
    if record.exc_info:
        fields["error"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:  # formatted where it happened (the recognition process)
        fields["error"] = record.exc_text
    return evt, fields


class _Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


class JsonLineFormatter(logging.Formatter):
    def __init__(self, redact: _Redactor, with_pid: bool = False) -> None:
        """`with_pid`: each line names the process that wrote it (several share the file)."""
        super().__init__()
        self._redact = redact
        self._with_pid = with_pid

    def format(self, record: logging.LogRecord) -> str:
        evt, fields = _record_fields(record)
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "evt": evt,
            **({"pid": record.process} if self._with_pid else {}),
            **fields,
        }
        return self._redact(json.dumps(line, default=str, ensure_ascii=False))


class ConsoleFormatter(logging.Formatter):
    def __init__(self, redact: _Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        evt, fields = _record_fields(record)
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        error = fields.pop("error", None)
        details = " ".join(f"{key}={value}" for key, value in fields.items())
        text = f"{stamp} {record.levelname:<7} {evt} {details}".rstrip()
        if error:
            text += "\n" + str(error)
        return self._redact(text)


def configure_logging(
    log_file: Path, level: str, secrets: Iterable[str], processes: int = 1
) -> None:
    """Send the `callrelay` loggers to the console and a rotating JSON-lines file.

    Several processes writing one file (`processes` above 1) rotate it under a file lock:
    each would otherwise rotate it on its own count, renaming the others' fresh files away."""
    redact = _Redactor(secrets)
    root = logging.getLogger("callrelay")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    root.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(ConsoleFormatter(redact))
    root.addHandler(console)
    if log_file.parent != Path():
        log_file.parent.mkdir(parents=True, exist_ok=True)
    rotating = ConcurrentRotatingFileHandler if processes > 1 else RotatingFileHandler
    file_handler = rotating(
        log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    file_handler.setFormatter(JsonLineFormatter(redact, with_pid=processes > 1))
    root.addHandler(file_handler)
    for name in ("gunicorn.error", "engineio.server", "socketio.server"):
        other = logging.getLogger(name)
        other.handlers = [console, file_handler]
        other.propagate = False
        other.setLevel(max(logging.WARNING, logging.getLevelName(level)))
