"""The history index: one row per call for listing and search, whatever keeps it."""

from __future__ import annotations

from collections.abc import Sequence
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
    """One row per call. Every method may wait on its store (a file, a database server): the
    relay writes rows from one background task (`IndexWriter`) and reads them in request
    handlers, never on the audio path. A method that cannot reach its store raises."""

    def open(self) -> None:
        """Get ready without waiting on a server (a pool connects in the background)."""

    def migrate(self) -> None:
        """Create or bring up to date what the index keeps (safe to run from several processes
        at once); raises while the store is unreachable."""

    def record(self, row: CallRow) -> None:
        """Add the call, or replace what was kept of it."""

    def known(self, call_sids: Sequence[str]) -> set[str]:
        """Which of these calls the index has a row for."""

    def query(self, query: CallQuery) -> list[CallRow]:
        """The calls `query` asks for, newest first."""

    def forget(self, call_sid: str) -> None:
        """Remove the call's row, and remember that it was deleted (so that a host still
        holding a copy of it stops serving it and never indexes it again)."""

    def forgotten(self, call_sids: Sequence[str]) -> set[str]:
        """Which of these calls were deleted."""

    def close(self) -> None: ...


def sql_conditions(
    query: CallQuery, placeholder: str, like: str = "LIKE"
) -> tuple[list[str], list[object]]:
    """The WHERE conditions (and their values) of a query of the `calls` columns, for SQL that
    marks a value with `placeholder` and matches text, any case, with `like`."""
    p = placeholder
    where: list[str] = []
    values: list[object] = []
    if query.before is not None:
        where.append(f"started_at < {p}")
        values.append(query.before)
    if query.since is not None:
        where.append(f"started_at >= {p}")
        values.append(query.since)
    if query.until is not None:
        where.append(f"started_at < {p}")
        values.append(query.until)
    if query.number:
        where.append(f"(from_number {like} {p} ESCAPE '\\' OR to_number {like} {p} ESCAPE '\\')")
        values += [f"%{_like(query.number)}%"] * 2
    if query.text:
        where.append(f"transcript {like} {p} ESCAPE '\\'")
        values.append(f"%{_like(query.text)}%")
    return where, values


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
