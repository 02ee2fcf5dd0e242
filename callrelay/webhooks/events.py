"""What a webhook says: `{"type", "timestamp", "data"}`, as Standard Webhooks' payloads do."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

EVENT_TYPES = (
    "call.started",
    "transcript.final",
    "transcript.partial",
    "call.paused",
    "call.resumed",
    "call.ended",
    "call.completed",
)
DEFAULT_EVENT_TYPES = frozenset(EVENT_TYPES) - {"transcript.partial"}


@dataclass(frozen=True)
class WebhookEvent:
    """One event of a call. Its `id` is the `webhook-id` of every try to deliver it."""

    id: str
    type: str
    call_sid: str
    created_at: float
    data: dict[str, Any]

    @classmethod
    def new(cls, event_type: str, call_sid: str, data: dict[str, Any]) -> WebhookEvent:
        assert event_type in EVENT_TYPES, event_type
        return cls(f"msg_{secrets.token_hex(12)}", event_type, call_sid, time.time(), data)

    def body(self) -> str:
        """The JSON posted: compact, with the time the event happened in UTC."""
        moment = datetime.fromtimestamp(self.created_at, UTC).isoformat(timespec="milliseconds")
        payload = {"type": self.type, "timestamp": moment.replace("+00:00", "Z"), "data": self.data}
        return orjson.dumps(payload).decode()
