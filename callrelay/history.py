"""Call history: what happened to each call, kept beside its recordings so it outlives the server.

Each call's files (`CallFiles`) hold its recordings, `transcript.jsonl` and `call.jsonl`: one
line per thing that happened to the call (Twilio's webhook, a stream started or ended, a status
callback, transcription done), only ever appended, so that several processes, a crash or a full
disk cost at most a line. What a call is (numbers, times, status) is folded from those lines
(`call_log.py`). The index (`HistoryIndex`) keeps one row per call for listing and search; it
is rebuilt from the files when missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from callrelay.call import OUTPUT_RATE, CallInfo, CallSink
from callrelay.call_log import CallLogs, fold
from callrelay.indexing import IndexWriter
from callrelay.logs import log_event
from callrelay.pauses import PauseListener
from callrelay.recording import HEADER_BYTES
from callrelay.recording_formats import ENCODED_NAMES, SIDE_FILES, encoded_frames
from callrelay.stereo import StereoWav
from callrelay.storage.files import (
    EVENTS_FILE,
    TRANSCRIPT_FILE,
    CallFiles,
    StoredFile,
)
from callrelay.storage.index import CallQuery, CallRow, HistoryIndex
from callrelay.tracks import FILE_STEMS
from callrelay.transcription import TranscriptListener
from callrelay.twilio.sids import is_call_sid
from callrelay.uploads import CallUploader

STEREO_FILE = "recording.wav"
"""The stereo recording's name in the API (it is computed, never stored)."""
STEREO_SIDES = set(SIDE_FILES)
STEREO_CHANNELS = ("caller", "receiver")

logger = logging.getLogger("callrelay.history")


class HistoryUnavailable(Exception):
    """The index cannot be reached (its database is down): nothing was listed or deleted."""


class CallHistory(CallSink, TranscriptListener, PauseListener):
    """The history sink and listener (it hears each call start and end, and its transcripts
    end), and the queries `GET /calls` answers."""

    def __init__(
        self,
        files: CallFiles,
        index: HistoryIndex,
        uploader: CallUploader | None = None,
        here: CallFiles | None = None,
    ) -> None:
        """`files`: where the calls' files are read (and this host's written); `here`, when
        `files` reads other places too (an object store): this host's own; `uploader`, with
        an object store: told when a stored call's files change."""
        self.files = files
        self.index = index
        self._here = here or files
        self._uploader = uploader
        self._logs = CallLogs(files)
        self.indexer = IndexWriter(files, index, self._row)
        """Writes the index's rows in the background, catching up after an outage."""

    def open(self) -> None:
        """Open the index and start keeping it up to date (its schema first, then any call it
        lacks), in the background."""
        self.index.open()
        self.indexer.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (what is not written by `timeout` is flagged: the next start
        writes it), then close the index."""
        self.indexer.wait_indexed(timeout)
        self.indexer.stop()
        self.index.close()

    # What happens to calls.

    def webhook(self, call_sid: str, fields: Mapping[str, str]) -> None:
        """Twilio's `/voice` request for the call: its numbers and direction."""
        self._append(
            call_sid,
            "webhook",
            {
                "from": fields.get("From"),
                "to": fields.get("To"),
                "direction": fields.get("Direction"),
            },
        )

    def placed(
        self, call_sid: str, to: str, from_number: str | None, bridge_to: str | None
    ) -> None:
        self._append(call_sid, "placed", {"to": to, "from": from_number, "bridgeTo": bridge_to})

    def call_status(self, status: Mapping[str, Any]) -> None:
        call_sid = status.get("callSid")
        if is_call_sid(call_sid):
            assert call_sid is not None
            self._append(call_sid, "status", {k: v for k, v in status.items() if k != "callSid"})

    def call_started(self, call: CallInfo) -> None:
        self._append(
            call.call_sid,
            "stream_started",
            {
                "streamSid": call.stream_sid,
                "tracks": list(call.tracks),
                "customParameters": dict(call.custom_parameters),
            },
            at=call.started_at,
        )

    def call_ended(self, call: CallInfo, reason: str) -> None:
        self._append(
            call.call_sid, "stream_ended", {"streamSid": call.stream_sid, "reason": reason}
        )

    def call_paused(self, call_sid: str, reason: str, at: float) -> None:
        self._append(call_sid, "paused", {"reason": reason}, at=at)

    def call_resumed(self, call_sid: str, reason: str, at: float) -> None:
        self._append(call_sid, "resumed", {"reason": reason}, at=at)

    def transcription_ended(self, call: CallInfo) -> None:
        """The transcript is complete: its words are indexed for search from now on."""
        self._append(call.call_sid, "transcribed", {})

    def completed(
        self,
        call_sid: str,
        analytics: Mapping[str, Any],
        speech: Mapping[str, Any],
        recorded_seconds: float | None = None,
    ) -> None:
        """Everything the call produced is final: its figures (`callrelay.analytics`), each
        side's [start, end] runs of speech, and how long its recordings are (kept in the log
        for when they have left this host)."""
        self._append(
            call_sid,
            "completed",
            {"analytics": analytics, "speech": speech, "recordedSeconds": recorded_seconds},
        )

    def _append(
        self,
        call_sid: str,
        event: str,
        fields: Mapping[str, Any],
        at: float | None = None,
    ) -> None:
        if not is_call_sid(call_sid):
            return  # a stream that is not a real call (a test tool's): no history
        line = {"event": event, "at": round(at if at is not None else time.time(), 3)}
        line.update({k: v for k, v in fields.items() if v is not None})
        try:
            self.files.append_line(call_sid, EVENTS_FILE, line)
        except OSError as error:
            log_event(
                logger,
                "history_write_failed",
                logging.ERROR,
                callSid=call_sid,
                event=event,
                error=f"{type(error).__name__}: {error}",
            )
            return
        self.indexer.mark(call_sid)
        if self._uploader is not None:
            self._uploader.changed(call_sid)

    def _row(self, call_sid: str, with_words: bool) -> CallRow:
        """The call's index row. Its words are read once its transcript is complete (and at a
        rebuild); until then they are not searched."""
        call = fold(self._logs.events(call_sid))
        started = call.get("startedAt") or call.get("createdAt")
        if started is None:  # recordings from before the history was kept
            started = self.files.modified_at(call_sid)
        words = ""
        if with_words or call.get("transcribed"):
            lines = self.files.read_lines(call_sid, TRANSCRIPT_FILE).lines
            words = " ".join(str(line.get("text", "")) for line in lines)
        return CallRow(
            call_sid=call_sid,
            started_at=started,
            ended_at=call.get("endedAt"),
            direction=call.get("direction"),
            from_number=call.get("from"),
            to_number=call.get("to"),
            status=call.get("status"),
            seconds=_seconds(self.recordings(call_sid, here_only=True), call),
            transcript=words,
        )

    # Queries.

    def calls(self, query: CallQuery) -> list[dict[str, Any]]:
        """The calls the index lists; raises HistoryUnavailable while it cannot be read."""
        try:
            rows = self.index.query(query)
        except Exception as error:  # whatever the index's driver raises when it is away
            raise HistoryUnavailable from error
        return [_summary(row) for row in rows]

    def call(self, call_sid: str) -> dict[str, Any] | None:
        """Everything about one call, or None if it left nothing here."""
        if not self.has(call_sid):
            return None
        events = self._logs.events(call_sid)
        recordings = self.recordings(call_sid)
        call = fold(events)
        call.setdefault("startedAt", call.get("createdAt") or self.files.modified_at(call_sid))
        call["seconds"] = _seconds(recordings, call)
        stereo = _stereo(recordings)
        return {
            "callSid": call_sid,
            **call,
            "recordings": recordings,
            **({"stereo": stereo} if stereo else {}),
            "transcript": self.transcript_lines(call_sid),
            "events": events,
        }

    def has(self, call_sid: str) -> bool:
        """Whether the call left anything here. A call deleted from another host is not: what
        this host still held of it is removed now."""
        if not self.files.has(call_sid):
            return False
        try:
            deleted = call_sid in self.index.forgotten([call_sid])
        except Exception:  # the index is away: serve what is here
            return True
        if deleted:
            self._remove_local(call_sid)
        return not deleted

    def _remove_local(self, call_sid: str) -> None:
        self._here.delete(call_sid)
        self._logs.forget(call_sid)
        log_event(logger, "deleted_call_removed", callSid=call_sid)

    def recordings(self, call_sid: str, here_only: bool = False) -> list[dict[str, Any]]:
        """The call's recordings with their length: its stereo encoded file, if it was encoded
        (`RECORDINGS_FORMAT`), then its WAVs (`caller.wav`, `caller-2.wav`...), caller's
        first. `here_only`: on this host only, without asking an object store."""
        files = self._here if here_only else self.files
        stored = files.files(call_sid)
        return [
            *(_encoded(files, call_sid, file) for file in stored if file.name in ENCODED_NAMES),
            *(
                _recording(file)
                for stem in FILE_STEMS.values()
                for file in stored
                if file.name == f"{stem}.wav"
                or (file.name.startswith(f"{stem}-") and file.name.endswith(".wav"))
            ),
        ]

    def stereo(self, call_sid: str) -> StereoWav | None:
        """The call's first stream as one stereo WAV (caller left, receiver right), read from
        its mono recordings as it is read; None if it has none."""
        if not self.has(call_sid):
            return None
        names = {r["name"] for r in self.recordings(call_sid)}
        sides = [
            self.files.open(call_sid, f"{FILE_STEMS[track]}.wav")
            if f"{FILE_STEMS[track]}.wav" in names
            else None
            for track in ("inbound", "outbound")
        ]
        if not any(sides):
            return None
        return StereoWav(sides[0], sides[1], OUTPUT_RATE)

    def is_recording(self, call_sid: str, name: str) -> bool:
        """Whether `name` is one of the call's recordings."""
        return self.has(call_sid) and name in {r["name"] for r in self.recordings(call_sid)}

    def transcript_lines(self, call_sid: str) -> list[dict[str, Any]]:
        lines = self.files.read_lines(call_sid, TRANSCRIPT_FILE).lines
        return sorted(lines, key=lambda line: line.get("start", 0.0))

    def delete(self, call_sid: str) -> bool:
        """Remove a call's recordings, transcript and history; False if there was nothing."""
        try:
            self.index.forget(call_sid)
        except Exception as error:
            raise HistoryUnavailable from error
        existed = self.files.delete(call_sid)
        self._logs.forget(call_sid)
        return existed


def _stereo(recordings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What `GET /calls/<CallSid>` says of the stereo recording, if the call has one: the
    encoded file, else the one computed from the mono WAVs."""
    encoded = [r for r in recordings if r["name"] in ENCODED_NAMES]
    if encoded:
        return encoded[0]
    sides = [r for r in recordings if r["name"] in STEREO_SIDES]
    if not sides:
        return None
    return {
        "name": STEREO_FILE,
        "channels": list(STEREO_CHANNELS),
        "seconds": max(r["seconds"] for r in sides),
    }


def _encoded(files: CallFiles, call_sid: str, file: StoredFile) -> dict[str, Any]:
    opened = files.open(call_sid, file.name)
    frames = encoded_frames(opened) if opened is not None else 0
    return {
        "name": file.name,
        "bytes": file.size,
        "seconds": round(frames / OUTPUT_RATE, 3),
        "channels": list(STEREO_CHANNELS),
    }


def _recording(file: StoredFile) -> dict[str, Any]:
    seconds = round(max(0, file.size - HEADER_BYTES) / 2 / OUTPUT_RATE, 3)
    return {"name": file.name, "bytes": file.size, "seconds": seconds}


def _summary(row: CallRow) -> dict[str, Any]:
    return {
        "callSid": row.call_sid,
        "startedAt": row.started_at,
        "endedAt": row.ended_at,
        "seconds": row.seconds,
        "direction": row.direction,
        "from": row.from_number,
        "to": row.to_number,
        "status": row.status,
    }


def _seconds(recordings: list[dict[str, Any]], call: Mapping[str, Any]) -> float | None:
    """How long the call lasted: its longest recording (what was heard), else what its log
    says its recordings were, else the time between its first stream's start and its last
    stream's end."""
    recorded = [float(r["seconds"]) for r in recordings]
    if recorded:
        return max(recorded)
    seconds = call.get("recordedSeconds") or call.get("seconds")
    return float(seconds) if seconds is not None else None
