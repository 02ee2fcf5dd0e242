"""A call's log (`call.jsonl`): what happened to it, and what it is, folded from that.

The log is only ever appended to (by any process), so it can be read on from where the last
read stopped: `CallLogs` keeps each recent call's lines and the offset reached, and reads only
what was added since, however many processes write the file.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from callrelay.storage.files import EVENTS_FILE, CallFiles

REMEMBERED_LOGS = 1000
"""Calls whose lines are kept in memory (the ones being written to now, and a few more)."""


def fold(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What a call is, from what happened to it (in the order it happened)."""
    call: dict[str, Any] = {"streams": []}
    for event in events:
        folder = _FOLDERS.get(str(event.get("event")))
        if folder is not None:
            folder(call, event, event.get("at"))
    for pause in call.get("pauses", []):
        if pause["end"] is None and call.get("endedAt") is not None:
            pause["end"] = call["endedAt"]  # paused until its stream ended
    if not call["streams"] and call.get("status") is None:
        call["status"] = "no-stream"  # Twilio asked for TwiML, but no media stream came (yet)
    started, ended = call.get("startedAt"), call.get("endedAt")
    if started is not None and ended is not None:
        call["seconds"] = round(ended - started, 3)
    return call


Call = dict[str, Any]
Event = Mapping[str, Any]
FINAL_STATUSES = ("completed", "busy", "failed", "no-answer", "canceled")


def _numbers(call: Call, event: Event) -> None:
    for key in ("from", "to", "direction"):
        if event.get(key):
            call.setdefault(key, event[key])


def _webhook(call: Call, event: Event, at: Any) -> None:
    _numbers(call, event)
    call.setdefault("createdAt", at)


def _placed(call: Call, event: Event, at: Any) -> None:
    call.setdefault("to", event.get("to"))
    call.setdefault("from", event.get("from"))
    call.setdefault("direction", "outbound-api")
    call.setdefault("createdAt", at)
    if event.get("bridgeTo"):
        call["bridgeTo"] = event["bridgeTo"]


def _stream_started(call: Call, event: Event, at: Any) -> None:
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


def _stream_ended(call: Call, event: Event, at: Any) -> None:
    for stream in call["streams"]:
        if stream["streamSid"] == event.get("streamSid"):
            stream.update(endedAt=at, reason=event.get("reason"))
    call["endedAt"] = at
    if call.get("status") in (None, "in-progress"):
        call["status"] = "ended"


def _status(call: Call, event: Event, at: Any) -> None:
    status = event.get("callStatus")
    if status:
        call["twilioStatus"] = status
        if status in FINAL_STATUSES:
            call["status"] = status
    if event.get("callDuration"):
        call["twilioDuration"] = int(event["callDuration"])
    _numbers(call, event)


def _transcribed(call: Call, event: Event, at: Any) -> None:
    call["transcribed"] = True


def _paused(call: Call, event: Event, at: Any) -> None:
    call.setdefault("pauses", []).append({"start": at, "end": None, "reason": event.get("reason")})


def _resumed(call: Call, event: Event, at: Any) -> None:
    if call.get("pauses") and call["pauses"][-1]["end"] is None:
        call["pauses"][-1]["end"] = at


def _completed(call: Call, event: Event, at: Any) -> None:
    call["completedAt"] = at
    call["analytics"] = event.get("analytics")
    call["speech"] = event.get("speech")
    if event.get("recordedSeconds") is not None:
        call["recordedSeconds"] = event["recordedSeconds"]


_FOLDERS: dict[str, Callable[[Call, Event, Any], None]] = {
    "webhook": _webhook,
    "placed": _placed,
    "stream_started": _stream_started,
    "stream_ended": _stream_ended,
    "status": _status,
    "transcribed": _transcribed,
    "paused": _paused,
    "resumed": _resumed,
    "completed": _completed,
}
"""How each line of a call's log changes what the call is."""


class CallLogs:
    """Every call's log, read on incrementally: an append costs a read of what is new."""

    def __init__(self, files: CallFiles, remembered: int = REMEMBERED_LOGS) -> None:
        self._files = files
        self._remembered = remembered
        self._read: OrderedDict[str, tuple[int, list[dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()

    def events(self, call_sid: str) -> list[dict[str, Any]]:
        """Every whole line of the call's log, in order."""
        with self._lock:
            start, events = self._read.pop(call_sid, (0, []))
        more = self._files.read_lines(call_sid, EVENTS_FILE, start)
        events = events + more.lines
        with self._lock:
            self._read[call_sid] = (more.end, events)
            while len(self._read) > self._remembered:
                self._read.popitem(last=False)
        return list(events)

    def forget(self, call_sid: str) -> None:
        with self._lock:
            self._read.pop(call_sid, None)
