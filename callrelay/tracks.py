"""The names a call's two tracks go by, in one table.

Twilio calls them `inbound` (the party Twilio called, or who called in) and `outbound` (the
dialled party); people call them the Caller and the Receiver. Everything that names a track
(recording files, Socket.IO events, transcripts, logs) takes the name from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from callrelay.twilio.media_stream import Track


@dataclass(frozen=True)
class TrackNames:
    speaker: str
    """`Caller` / `Receiver`: the transcript event and the `speaker` field."""
    file_stem: str
    """`caller` / `receiver`: the recording's file name."""
    media_event: str
    """`media_in` / `media_out`: the Socket.IO audio event."""


TRACK_NAMES: Mapping[Track, TrackNames] = {
    "inbound": TrackNames(speaker="Caller", file_stem="caller", media_event="media_in"),
    "outbound": TrackNames(speaker="Receiver", file_stem="receiver", media_event="media_out"),
}

SPEAKER_NAMES: Mapping[Track, str] = {t: n.speaker for t, n in TRACK_NAMES.items()}
FILE_STEMS: Mapping[Track, str] = {t: n.file_stem for t, n in TRACK_NAMES.items()}
MEDIA_EVENTS: Mapping[Track, str] = {t: n.media_event for t, n in TRACK_NAMES.items()}
SPEAKER_EVENTS: tuple[str, ...] = tuple(SPEAKER_NAMES.values())
