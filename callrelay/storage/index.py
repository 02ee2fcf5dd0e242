"""The history index: one row per call for listing and search, whatever keeps it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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


@dataclass(frozen=True)
class CallRow:
    """What the index keeps of a call: enough to list it and find it."""

    call_sid: str
    started_at: float
    ended_at: float | None
    direction: str | None
    from_number: str | None
    to_number: str | None
    status: str | None
    seconds: float | None
    transcript: str
    """Every word said, for `text` search."""


class HistoryIndex(Protocol):
    """One row per call. Every method may wait on its store (a file, a database): call it from
    request handlers and sinks, never per frame."""

    def open(self) -> bool:
        """Make the index ready; True when it was missing or unreadable and is new (empty):
        the caller rebuilds it from the call files."""

    def record(self, row: CallRow) -> None:
        """Add the call, or replace what was kept of it."""

    def query(self, query: CallQuery) -> list[CallRow]:
        """The calls `query` asks for, newest first."""

    def forget(self, call_sid: str) -> None: ...

    def close(self) -> None: ...
