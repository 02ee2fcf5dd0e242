"""WebSocket close codes (RFC 6455, section 7.4.1) the relay and its simulator use."""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    """The server is shutting down."""
    PROTOCOL_ERROR = 1002
    """Media Streams events out of order."""
    UNSUPPORTED_DATA = 1003
    """A binary frame: Twilio sends text only."""
    NO_STATUS = 1005
    """A close frame without a code, or none yet (never sent, only seen)."""
    ABNORMAL = 1006
    """No close frame: the connection was lost (never sent, only seen)."""
    INVALID_PAYLOAD = 1007
    """A frame that is not a Media Streams JSON message."""
    POLICY_VIOLATION = 1008
    """A `start` for another call than the stream's URL names."""
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    """Over `MAX_CALLS`: Twilio may try another server."""
