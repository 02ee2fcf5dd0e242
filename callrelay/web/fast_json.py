"""orjson for python-socketio's `json=` option: every Socket.IO packet is encoded here.

python-socketio calls `dumps(obj, separators=...)` and expects text; orjson takes no such
argument and returns bytes (and its output is already compact).
"""

from __future__ import annotations

from typing import Any

import orjson


class OrjsonForSocketIO:
    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return orjson.loads(text)
