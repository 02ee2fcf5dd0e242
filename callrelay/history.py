"""Call history: what happened to each call, kept beside its recordings so it outlives the server.

Each call's folder (`captures/<CallSid>/`) holds its recordings, `transcript.jsonl` and
`call.jsonl`: one line per thing that happened to the call (Twilio's webhook, a stream started
or ended, a status callback, transcription done), only ever appended, so that several
processes, a crash or a full disk cost at most a line. What a call is (numbers, times, status)
is folded from those lines. `captures/index.sqlite3` is a cache of those folds for listing and
search; it is rebuilt from the folders when missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callrelay.call import OUTPUT_RATE, CallInfo, CallSink
from callrelay.logs import log_event
from callrelay.recording import HEADER_BYTES
from callrelay.tracks import FILE_STEMS
from callrelay.transcription import TranscriptListener
from callrelay.twilio.sids import is_call_sid

logger = logging.getLogger("callrelay.history")

EVENTS_FILE = "call.jsonl"
TRANSCRIPT_FILE = "transcript.jsonl"
INDEX_FILE = "index.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_sid TEXT PRIMARY KEY,
    started_at REAL,
    ended_at REAL,
    direction TEXT,
    from_number TEXT,
    to_number TEXT,
    status TEXT,
    seconds REAL,
    transcript TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS calls_by_time ON calls (started_at DESC);
"""
COLUMNS = (
    "call_sid",
    "started_at",
    "ended_at",
    "direction",
    "from_number",
    "to_number",
    "status",
    "seconds",
    "transcript",
)
MAX_PAGE = 200


@dataclass(frozen=True)
class CallQuery:
    """Which calls `GET /calls` lists: newest first, `limit` at most, started before `before`."""

    limit: int = 50
    before: float | None = None
    number: str | None = None
    """A number the call was from or to (a part of it matches)."""
    since: float | None = None
    until: float | None = None
    text: str | None = None
    """Words said in the call (a part of the transcript, any case)."""


def fold(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What a call is, from what happened to it (in the order it happened)."""
    call: dict[str, Any] = {"streams": []}
    for event in events:
        kind, at = event.get("event"), event.get("at")
        if kind == "webhook":
            for key in ("from", "to", "direction"):
                if event.get(key):
                    call.setdefault(key, event[key])
            call.setdefault("createdAt", at)
        elif kind == "placed":
            call.setdefault("to", event.get("to"))
            call.setdefault("from", event.get("from"))
            call.setdefault("direction", "outbound-api")
            call.setdefault("createdAt", at)
            if event.get("bridgeTo"):
                call["bridgeTo"] = event["bridgeTo"]
        elif kind == "stream_started":
            call.setdefault("startedAt", at)
            call["streams"].append(
                {
                    "streamSid": event.get("streamSid"),
                    "startedAt": at,
                    "tracks": event.get("tracks", []),
                    "customParameters": event.get("customParameters", {}),
                }
            )
            call["status"] = "in-progress"
        elif kind == "stream_ended":
            for stream in call["streams"]:
                if stream["streamSid"] == event.get("streamSid"):
                    stream.update(endedAt=at, reason=event.get("reason"))
            call["endedAt"] = at
            if call.get("status") in (None, "in-progress"):
                call["status"] = "ended"
        elif kind == "status":
            status = event.get("callStatus")
            if status:
                call["twilioStatus"] = status
                if status in ("completed", "busy", "failed", "no-answer", "canceled"):
                    call["status"] = status
            if event.get("callDuration"):
                call["twilioDuration"] = int(event["callDuration"])
            for key in ("from", "to", "direction"):
                if event.get(key):
                    call.setdefault(key, event[key])
        elif kind == "transcribed":
            call["transcribed"] = True
    started, ended = call.get("startedAt"), call.get("endedAt")
    if started is not None and ended is not None:
        call["seconds"] = round(ended - started, 3)
    return call


class CallHistory(CallSink, TranscriptListener):
    """The history sink and listener (it hears each call start and end, and its transcripts
    end), and the queries `GET /calls` answers."""

    def __init__(self, captures_dir: Path, folder_of: Callable[[str], Path]) -> None:
        self.captures_dir = captures_dir
        self._folder_of = folder_of
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open the index, rebuilding it from the call folders if it is missing or unreadable."""
        self.captures_dir.mkdir(parents=True, exist_ok=True)
        path = self.captures_dir / INDEX_FILE
        fresh = not path.exists()
        try:
            self._db = self._connect(path)
        except sqlite3.DatabaseError as error:
            log_event(logger, "history_index_unreadable", logging.WARNING, error=str(error))
            path.unlink(missing_ok=True)
            self._db, fresh = self._connect(path), True
        if fresh:
            count = self.rebuild()
            log_event(logger, "history_index_built", calls=count, path=str(path))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, timeout=5.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")  # several processes: readers never wait
        db.execute("PRAGMA synchronous=NORMAL")  # a cache: no fsync per call event
        db.executescript(SCHEMA)
        return db

    def rebuild(self) -> int:
        """Index every call folder again; the number of calls indexed."""
        count = 0
        for folder in sorted(self.captures_dir.iterdir()):
            if folder.is_dir() and is_call_sid(folder.name):
                self._index(folder.name)
                count += 1
        return count

    # What happens to calls.

    def webhook(self, call_sid: str, fields: Mapping[str, str]) -> None:
        """Twilio's `/voice` request for the call: its numbers and direction."""
        self._append(
            call_sid,
            "webhook",
            {
                "from": fields.get("From"),
                "to": fields.get("To"),
                "direction": fields.get("Direction"),
            },
        )

    def placed(
        self, call_sid: str, to: str, from_number: str | None, bridge_to: str | None
    ) -> None:
        self._append(call_sid, "placed", {"to": to, "from": from_number, "bridgeTo": bridge_to})

    def call_status(self, status: Mapping[str, Any]) -> None:
        call_sid = status.get("callSid")
        if is_call_sid(call_sid):
            assert call_sid is not None
            self._append(call_sid, "status", {k: v for k, v in status.items() if k != "callSid"})

    def call_started(self, call: CallInfo) -> None:
        self._append(
            call.call_sid,
            "stream_started",
            {
                "streamSid": call.stream_sid,
                "tracks": list(call.tracks),
                "customParameters": dict(call.custom_parameters),
            },
            at=call.started_at,
        )

    def call_ended(self, call: CallInfo, reason: str) -> None:
        self._append(
            call.call_sid, "stream_ended", {"streamSid": call.stream_sid, "reason": reason}
        )

    def transcription_ended(self, call: CallInfo) -> None:
        """The transcript is complete: index its words for search."""
        self._append(call.call_sid, "transcribed", {})

    def _append(
        self, call_sid: str, event: str, fields: Mapping[str, Any], at: float | None = None
    ) -> None:
        if not is_call_sid(call_sid):
            return  # a stream that is not a real call (a test tool's): no history
        line = {"event": event, "at": round(at if at is not None else time.time(), 3)}
        line.update({k: v for k, v in fields.items() if v is not None})
        folder = self._folder_of(call_sid)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / EVENTS_FILE).open("a", encoding="utf-8") as file:
                file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._index(call_sid)
        except (OSError, sqlite3.Error) as error:
            log_event(
                logger,
                "history_write_failed",
                logging.ERROR,
                callSid=call_sid,
                event=event,
                error=f"{type(error).__name__}: {error}",
            )

    def _index(self, call_sid: str) -> None:
        call = fold(read_jsonl(self._folder_of(call_sid) / EVENTS_FILE))
        started = call.get("startedAt") or call.get("createdAt")
        if started is None:  # recordings from before the history was kept
            started = _folder_time(self._folder_of(call_sid))
        seconds = _seconds(self.recordings(call_sid), call)
        words = " ".join(
            str(line.get("text", "")) for line in read_jsonl(self._transcript_path(call_sid))
        )
        row = (
            call_sid,
            started,
            call.get("endedAt"),
            call.get("direction"),
            call.get("from"),
            call.get("to"),
            call.get("status"),
            seconds,
            words,
        )
        with self._lock:
            if self._db is None:
                return
            self._db.execute(
                f"INSERT OR REPLACE INTO calls ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                row,
            )

    # Queries.

    def calls(self, query: CallQuery) -> list[dict[str, Any]]:
        where: list[str] = []
        values: list[object] = []
        if query.before is not None:
            where.append("started_at < ?")
            values.append(query.before)
        if query.since is not None:
            where.append("started_at >= ?")
            values.append(query.since)
        if query.until is not None:
            where.append("started_at < ?")
            values.append(query.until)
        if query.number:
            where.append("(from_number LIKE ? ESCAPE '\\' OR to_number LIKE ? ESCAPE '\\')")
            values += [f"%{_like(query.number)}%"] * 2
        if query.text:
            where.append("transcript LIKE ? ESCAPE '\\'")
            values.append(f"%{_like(query.text)}%")
        sql = f"SELECT {', '.join(COLUMNS)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC LIMIT ?"
        values.append(max(1, min(query.limit, MAX_PAGE)))
        with self._lock:
            if self._db is None:
                return []
            rows = self._db.execute(sql, values).fetchall()
        return [self._summary(dict(zip(COLUMNS, row, strict=True))) for row in rows]

    def call(self, call_sid: str) -> dict[str, Any] | None:
        """Everything about one call, or None if it left nothing here."""
        folder = self._folder_of(call_sid)
        if not folder.is_dir():
            return None
        events = read_jsonl(folder / EVENTS_FILE)
        recordings = self.recordings(call_sid)
        call = fold(events)
        call.setdefault("startedAt", call.get("createdAt") or _folder_time(folder))
        call["seconds"] = _seconds(recordings, call)
        return {
            "callSid": call_sid,
            **call,
            "recordings": recordings,
            "transcript": self.transcript_lines(call_sid),
            "events": events,
        }

    def has(self, call_sid: str) -> bool:
        """Whether the call left anything here."""
        return self._folder_of(call_sid).is_dir()

    def recordings(self, call_sid: str) -> list[dict[str, Any]]:
        folder = self._folder_of(call_sid)
        found = []
        for stem in FILE_STEMS.values():
            for path in sorted(folder.glob(f"{stem}*.wav")):
                if path.stem == stem or path.stem.startswith(f"{stem}-"):
                    size = path.stat().st_size
                    found.append(
                        {
                            "name": path.name,
                            "bytes": size,
                            "seconds": round(max(0, size - HEADER_BYTES) / 2 / OUTPUT_RATE, 3),
                        }
                    )
        return found

    def recording_path(self, call_sid: str, name: str) -> Path | None:
        """The file of recording `name` of a call, if it is one of its recordings."""
        if name not in {r["name"] for r in self.recordings(call_sid)}:
            return None
        return self._folder_of(call_sid) / name

    def transcript_lines(self, call_sid: str) -> list[dict[str, Any]]:
        lines = read_jsonl(self._transcript_path(call_sid))
        return sorted(lines, key=lambda line: line.get("start", 0.0))

    def delete(self, call_sid: str) -> bool:
        """Remove a call's recordings, transcript and history; False if there was nothing."""
        folder = self._folder_of(call_sid)
        existed = folder.is_dir()
        if existed:
            shutil.rmtree(folder)
        with self._lock:
            if self._db is not None:
                self._db.execute("DELETE FROM calls WHERE call_sid = ?", (call_sid,))
        return existed

    def _transcript_path(self, call_sid: str) -> Path:
        return self._folder_of(call_sid) / TRANSCRIPT_FILE

    @staticmethod
    def _summary(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "callSid": row["call_sid"],
            "startedAt": row["started_at"],
            "endedAt": row["ended_at"],
            "seconds": row["seconds"],
            "direction": row["direction"],
            "from": row["from_number"],
            "to": row["to_number"],
            "status": row["status"],
        }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a JSON-lines file (a torn last line, from a crash, is left out)."""
    lines = []
    with contextlib.suppress(FileNotFoundError):
        for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(text)
                if isinstance(value, dict):
                    lines.append(value)
    return lines


def _seconds(recordings: list[dict[str, Any]], call: Mapping[str, Any]) -> float | None:
    """How long the call lasted: its longest recording (what was heard), else the time between
    its first stream's start and its last stream's end."""
    recorded = [r["seconds"] for r in recordings]
    return max(recorded) if recorded else call.get("seconds")


def _folder_time(folder: Path) -> float:
    try:
        return round(folder.stat().st_mtime, 3)
    except OSError:
        return 0.0


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
