"""Twilio's identifiers: two letters for the kind, 32 hex digits."""

from __future__ import annotations

import re

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")


def is_call_sid(value: str | None) -> bool:
    """Whether `value` is a CallSid: safe in a path, a file name, a Redis key."""
    return value is not None and CALL_SID.fullmatch(value) is not None
