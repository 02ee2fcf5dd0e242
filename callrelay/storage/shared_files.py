"""A call's files wherever they are: this host's folder first, then the object store.

With `RECORDINGS_URL` the history reads through this `CallFiles`: a call recorded here is read
from its folder (its logs always are, and its recordings until they are stored and removed); a
call recorded on another host, or whose recordings left this one, is read from the store,
a stored file being seekable like a local one (each read a ranged request), so that byte
ranges work the same. Writes go to the folder only: the uploader stores them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from callrelay.storage.files import LinesRead, LocalCallFiles, StoredFile, parse_json_lines
from callrelay.storage.object_store import ObjectStore


class StoreUnavailable(OSError):
    """The object store could not be read (it is down, or refused the credentials)."""


class SharedCallFiles:
    def __init__(self, local: LocalCallFiles, store: ObjectStore) -> None:
        self.local = local
        self.store = store

    def append_line(self, call_sid: str, name: str, line: Mapping[str, Any]) -> None:
        self.local.append_line(call_sid, name, line)

    def read_lines(self, call_sid: str, name: str, start: int = 0) -> LinesRead:
        if self.local.has(call_sid):
            return self.local.read_lines(call_sid, name, start)
        try:
            data = self.store.read(call_sid, name, start)
        except ClientError as error:
            if _missing(error):
                return LinesRead([], start)
            raise StoreUnavailable(str(error)) from error
        except BotoCoreError as error:
            raise StoreUnavailable(str(error)) from error
        whole = data[: data.rfind(b"\n") + 1]
        return LinesRead(parse_json_lines(whole), start + len(whole))

    def files(self, call_sid: str) -> list[StoredFile]:
        here = {file.name: file for file in self.local.files(call_sid)}
        stored = {file.name: StoredFile(file.name, file.size) for file in self._stored(call_sid)}
        return sorted({**stored, **here}.values(), key=lambda file: file.name)

    def open(self, call_sid: str, name: str) -> BinaryIO | None:
        opened = self.local.open(call_sid, name)
        if opened is not None:
            return opened
        sizes = {file.name: file.size for file in self._stored(call_sid)}
        if name not in sizes:
            return None
        return self.store.open(call_sid, name, sizes[name])

    def has(self, call_sid: str) -> bool:
        return self.local.has(call_sid) or bool(self._stored(call_sid))

    def delete(self, call_sid: str) -> bool:
        try:
            removed = self.store.delete(call_sid)
        except (BotoCoreError, ClientError) as error:
            raise StoreUnavailable(str(error)) from error
        return self.local.delete(call_sid) or removed > 0

    def calls(self) -> Iterator[str]:
        """The calls recorded here (each host indexes its own)."""
        return self.local.calls()

    def modified_at(self, call_sid: str) -> float:
        return self.local.modified_at(call_sid)

    def set_flag(self, call_sid: str, flag: str, on: bool) -> None:
        self.local.set_flag(call_sid, flag, on)

    def flagged(self, flag: str) -> Iterator[str]:
        return self.local.flagged(flag)

    def _stored(self, call_sid: str) -> list[Any]:
        try:
            return self.store.files(call_sid)
        except (BotoCoreError, ClientError) as error:
            raise StoreUnavailable(str(error)) from error


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")
