"""A call's stored files: the `CallFiles` interface and the local folder that implements it.

Every name here is one of a call's own (`call.jsonl`, `transcript.jsonl`, `caller.wav`...);
the CallSid is validated by the caller and made safe again here, so no path leaves the root.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from callrelay.twilio.sids import is_call_sid

EVENTS_FILE = "call.jsonl"
"""What happened to the call, one JSON object per line, only ever appended."""
TRANSCRIPT_FILE = "transcript.jsonl"
"""Every final of the call, one JSON object per line."""
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")
_FILE_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9]+)+")


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int


@dataclass(frozen=True)
class LinesRead:
    lines: list[dict[str, Any]]
    """The whole lines read (a torn last line, from a crash, is left out)."""
    end: int
    """Where the next read should start: the byte after the last whole line."""


class CallFiles(Protocol):
    """A call's stored files. Called from request handlers and sinks: each call is short, but
    may touch the disk (or, for other implementations, the network)."""

    def append_line(self, call_sid: str, name: str, line: Mapping[str, Any]) -> None:
        """Append one JSON line to the call's file `name`; raises OSError when it cannot."""

    def read_lines(self, call_sid: str, name: str, start: int = 0) -> LinesRead:
        """The whole JSON lines of the call's file `name` from byte `start` on."""

    def files(self, call_sid: str) -> list[StoredFile]:
        """The call's files, by name."""

    def open(self, call_sid: str, name: str) -> BinaryIO | None:
        """One of the call's files to read (seekable, for byte ranges); None if not there."""

    def has(self, call_sid: str) -> bool:
        """Whether the call left anything here."""

    def delete(self, call_sid: str) -> bool:
        """Remove every file of the call; False if there was none."""

    def calls(self) -> Iterator[str]:
        """Every call with files here (to rebuild an index from)."""

    def modified_at(self, call_sid: str) -> float:
        """When the call's files last changed (for calls whose log says no time)."""

    def set_flag(self, call_sid: str, flag: str, on: bool) -> None:
        """Raise or lower one of the call's flags (a mark that outlives the process, not one
        of its files); raises OSError when it cannot."""

    def flagged(self, flag: str) -> Iterator[str]:
        """Every call with `flag` raised."""


class LocalCallFiles:
    """`root/<CallSid>/<name>`: the folder the recorder writes each call's WAVs into live."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, call_sid: str) -> Path:
        return self.root / (_SAFE_NAME.sub("_", call_sid)[:64] or "call")

    def _path(self, call_sid: str, name: str) -> Path:
        if not _FILE_NAME.fullmatch(name):
            raise ValueError(f"not a call's file name: {name!r}")
        return self.folder(call_sid) / name

    def append_line(self, call_sid: str, name: str, line: Mapping[str, Any]) -> None:
        path = self._path(call_sid, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(line, ensure_ascii=False) + "\n")

    def read_lines(self, call_sid: str, name: str, start: int = 0) -> LinesRead:
        try:
            with self._path(call_sid, name).open("rb") as file:
                file.seek(start)
                data = file.read()
        except FileNotFoundError:
            return LinesRead([], start)
        whole = data[: data.rfind(b"\n") + 1]
        return LinesRead(parse_json_lines(whole), start + len(whole))

    def files(self, call_sid: str) -> list[StoredFile]:
        folder = self.folder(call_sid)
        found = []
        with contextlib.suppress(FileNotFoundError):
            for path in sorted(folder.iterdir()):
                if path.is_file() and _FILE_NAME.fullmatch(path.name):
                    found.append(StoredFile(path.name, path.stat().st_size))
        return found

    def open(self, call_sid: str, name: str) -> BinaryIO | None:
        try:
            return self._path(call_sid, name).open("rb")
        except (FileNotFoundError, IsADirectoryError, ValueError):
            return None

    def has(self, call_sid: str) -> bool:
        return self.folder(call_sid).is_dir()

    def delete(self, call_sid: str) -> bool:
        folder = self.folder(call_sid)
        if not folder.is_dir():
            return False
        shutil.rmtree(folder)
        return True

    def calls(self) -> Iterator[str]:
        if self.root.is_dir():
            for folder in sorted(self.root.iterdir()):
                if folder.is_dir() and is_call_sid(folder.name):
                    yield folder.name

    def modified_at(self, call_sid: str) -> float:
        try:
            return round(self.folder(call_sid).stat().st_mtime, 3)
        except OSError:
            return 0.0

    def _flag(self, call_sid: str, flag: str) -> Path:
        return self.folder(call_sid) / f".{_SAFE_NAME.sub('_', flag)}"  # a dot: not a file of it

    def has_flag(self, call_sid: str, flag: str) -> bool:
        return self._flag(call_sid, flag).exists()

    def set_flag(self, call_sid: str, flag: str, on: bool) -> None:
        path = self._flag(call_sid, flag)
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def flagged(self, flag: str) -> Iterator[str]:
        if self.root.is_dir():
            for path in sorted(self.root.glob(f"*/.{_SAFE_NAME.sub('_', flag)}")):
                if is_call_sid(path.parent.name):
                    yield path.parent.name


def parse_json_lines(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of JSON-lines text; a line that is not one (torn by a crash) is left
    out."""
    lines = []
    for text in data.decode("utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if isinstance(value, dict):
                lines.append(value)
    return lines
