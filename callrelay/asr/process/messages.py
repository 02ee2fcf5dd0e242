"""What the relay and the recognition process say to each other over their pipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callrelay.asr.base import RecogniserMethod

# The relay to the recognition process, in batches.


@dataclass(frozen=True)
class NewRecogniser:
    key: int
    keyterms: tuple[str, ...] = ()
    """Words its call's recognition favours (`keyterms` of the call)."""


@dataclass(frozen=True)
class RecogniserCall:
    request_id: int
    key: int
    method: RecogniserMethod
    argument: Any = None
    """The samples for `accept`, the sample count for `skip`."""


@dataclass(frozen=True)
class Describe:
    request_id: int


@dataclass(frozen=True)
class Stop:
    pass


Request = NewRecogniser | RecogniserCall | Describe | Stop


@dataclass(frozen=True)
class Batch:
    requests: list[Request]


# The recognition process to the relay.


@dataclass(frozen=True)
class Loaded:
    name: str
    sample_rate: int
    pid: int


@dataclass(frozen=True)
class NoEngine:
    """The settings name no engine (or the one named cannot run): recognition is off."""


@dataclass(frozen=True)
class LoadFailed:
    error_type: str
    text: str


@dataclass(frozen=True)
class Reply:
    request_id: int
    ok: bool
    value: Any
    """The call's result, or the text of its failure."""


@dataclass(frozen=True)
class Replies:
    replies: list[Reply]


@dataclass(frozen=True)
class LogLine:
    """A log record made in the recognition process, for the relay's log."""

    fields: dict[str, Any]


ChildMessage = Loaded | NoEngine | LoadFailed | Replies | LogLine
