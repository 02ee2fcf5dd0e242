"""A read-only, seekable file whose bytes are made or fetched as they are read: a subclass
says how long it is and how to read a stretch of it (`_read`); seeking, `tell` and
`readinto` are here, so that byte ranges cost only the stretch asked for."""

from __future__ import annotations

import io
import os


class RangedFile(io.RawIOBase):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._position = 0

    def _read(self, position: int, count: int) -> bytes:
        """`count` bytes (at most) from `position`, which is within the file."""
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        data = self._read(self._position, wanted)
        memoryview(buffer)[: len(data)] = data
        self._position += len(data)
        return len(data)
