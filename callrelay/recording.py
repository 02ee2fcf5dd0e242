"""Recordings: `captures/<CallSid>/caller.wav` and `receiver.wav`, streamed to disk live.

A file being written is a valid, playable WAV at every moment, even if the process is killed:
its header is rewritten once a second of audio (two writes per second, not per 20 ms frame), so
it is at most a second behind the samples on disk, and `repair_captures` makes it count them all
at the next start. A write that fails (disk full, removed folder) is logged once per
call; the writer retries at most once a second and fills what it missed with silence, so the
two files stay aligned sample for sample when recording resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np

from callrelay.audio import Int16Array
from callrelay.call import OUTPUT_RATE, AudioChunk, CallInfo, CallSink
from callrelay.logs import log_event
from callrelay.recording_masks import DelayedMasking
from callrelay.storage.files import LocalCallFiles
from callrelay.tracks import FILE_STEMS
from callrelay.twilio.media_stream import Track

logger = logging.getLogger("callrelay.recording")

HEADER_BYTES = 44
RETRY_SECONDS = 1.0


def wav_header(data_bytes: int, rate: int = OUTPUT_RATE, channels: int = 1) -> bytes:
    """The canonical 44-byte header of a PCM16 WAV holding `data_bytes` of samples."""
    return b"RIFF" + struct.pack(
        "<I4s4sIHHIIHH4sI",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        channels,
        rate,
        rate * 2 * channels,
        2 * channels,
        16,
        b"data",
        data_bytes,
    )


SILENCE_PIECE_SAMPLES = OUTPUT_RATE
"""Long silences are written a second at a time, never held whole in memory."""


class WavWriter:
    """A mono PCM16 WAV file that grows by appends and is always valid on disk.

    With `resume`, a WAV of this format already at `path` is carried on, not replaced.
    """

    def __init__(self, path: Path, rate: int = OUTPUT_RATE, resume: bool = False) -> None:
        self.path = path
        self.rate = rate
        self.samples = 0
        self._header_samples = 0
        """The sample count the header on disk says."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume and _is_our_wav(path, rate):
            repair_wav(path)
            self._fd = os.open(path, os.O_WRONLY)
            self.samples = (os.lseek(self._fd, 0, os.SEEK_END) - HEADER_BYTES) // 2
            return
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, wav_header(0, rate))

    def append_silence(self, sample_count: int) -> None:
        while sample_count > 0:
            piece = min(sample_count, SILENCE_PIECE_SAMPLES)
            self.append(np.zeros(piece, dtype=np.int16))
            sample_count -= piece

    def append(self, pcm: Int16Array) -> None:
        """Append samples; on failure the file keeps every whole sample written before it."""
        data = pcm.astype("<i2", copy=False).tobytes()
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        finally:
            if written < len(data):
                self._truncate_to_whole_samples(written)
            self.samples += written // 2
            if self.samples - self._header_samples >= self.rate or written < len(data):
                self._write_header()

    def silence_at(self, start_sample: int, end_sample: int) -> None:
        """Overwrite samples already written with silence (a stretch redaction masked late)."""
        end = min(end_sample, self.samples)
        if end > start_sample >= 0:
            os.pwrite(self._fd, bytes(2 * (end - start_sample)), HEADER_BYTES + 2 * start_sample)

    def _truncate_to_whole_samples(self, written: int) -> None:
        size = HEADER_BYTES + 2 * self.samples + written - written % 2
        try:
            os.ftruncate(self._fd, size)
            os.lseek(self._fd, size, os.SEEK_SET)
        except OSError:
            pass

    def _write_header(self) -> None:
        self._header_samples = self.samples
        data_bytes = 2 * self.samples
        os.pwrite(self._fd, struct.pack("<I", 36 + data_bytes), 4)
        os.pwrite(self._fd, struct.pack("<I", data_bytes), 40)

    def close(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            self._write_header()
        os.close(self._fd)
        self._fd = -1


class TrackRecording:
    """One track's WAV, written at the positions the call's timeline gives."""

    def __init__(self, path: Path, masking: DelayedMasking | None = None) -> None:
        self.path = path
        self.masking = masking
        """With redaction: the audio waits here to be masked before it is written."""
        self._writer: WavWriter | None = None
        self._next_try = 0.0
        self.failures = 0
        self.error: OSError | None = None

    @property
    def samples(self) -> int:
        return self._writer.samples if self._writer else 0

    def open(self, resume: bool = False) -> bool:
        """Create the file now, so that every track has one even if it stays silent."""
        try:
            self._writer = WavWriter(self.path, resume=resume)
        except OSError as error:
            self._failed(error, time.monotonic())
            return False
        return True

    def _failed(self, error: OSError, now: float) -> None:
        self.failures += 1
        self.error = error
        self._next_try = now + RETRY_SECONDS

    def write(self, chunk: AudioChunk) -> bool:
        """Write the chunk at its place (once masked, with redaction); False if the disk
        refused it (it is retried later)."""
        if self.masking is None:
            return self._write_now(chunk)
        return all([self._write_now(ready) for ready in self.masking.push(chunk)])

    def mask(self, start_sample: int, end_sample: int) -> bool:
        """Silence a stretch redaction masked; True if part of it was already on disk (and is
        silenced there now)."""
        if self.masking is None:
            return False
        written = self.masking.mask(start_sample, end_sample)
        if written is None or self._writer is None:
            return False
        with contextlib.suppress(OSError):
            self._writer.silence_at(*written)
        return True

    def drain(self) -> None:
        """Write whatever still waits to be masked."""
        if self.masking is not None:
            for ready in self.masking.drain():
                self._write_now(ready)

    def _write_now(self, chunk: AudioChunk) -> bool:
        now = time.monotonic()
        if self.error is not None and now < self._next_try:
            return False
        try:
            if self._writer is None:
                self._writer = WavWriter(self.path)
            missing = chunk.start_sample - self._writer.samples
            self._writer.append_silence(missing)
            skip = max(0, -missing)
            if skip < len(chunk.pcm):
                self._writer.append(chunk.pcm[skip:])
        except OSError as error:
            self._failed(error, now)
            return False
        self.error = None
        return True

    def pad_to(self, samples: int) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.append_silence(samples - self._writer.samples)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class CallRecorder(CallSink):
    """The recording sink: one `TrackRecording` per track of every call in flight."""

    def __init__(self, files: LocalCallFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._calls: dict[str, dict[Track, TrackRecording]] = {}
        self._warned: set[str] = set()
        self._resumed: set[str] = set()
        self.bytes_written = 0
        self.write_errors = 0

    def call_started(self, call: CallInfo) -> None:
        """A call's files; a stream that resumes the call carries on the files it left.

        Any other stream of a call that already has files (one running alongside, or one the
        server cannot place because it restarted) gets files of its own: `caller-2.wav`.
        """
        folder = self._files.folder(call.call_sid)
        suffix = ""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            number = 1
            while not call.resumed and any(
                (folder / f"{FILE_STEMS[t]}{suffix}.wav").exists() for t in call.tracks
            ):
                number += 1
                suffix = f"-{number}"
        except OSError as error:
            self._warn(call, error)
        tracks = {
            track: self._new_track(folder / f"{FILE_STEMS[track]}{suffix}.wav")
            for track in call.tracks
        }
        with self._lock:
            self._calls[call.stream_sid] = tracks
        for recording in tracks.values():
            if not recording.open(resume=call.resumed) and recording.error is not None:
                self._warn(call, recording.error)
        log_event(
            logger,
            "recording_started",
            callSid=call.call_sid,
            streamSid=call.stream_sid,
            files=[str(t.path) for t in tracks.values()],
            **({"resumedAt": round(call.offset_ms / 1000, 3)} if call.resumed else {}),
        )

    def audio(self, call: CallInfo, chunk: AudioChunk) -> None:
        tracks = self._calls.get(call.stream_sid)
        if tracks is None:
            return
        recording = tracks[chunk.track]
        if recording.write(chunk):
            self.bytes_written += 2 * len(chunk.pcm)
            if call.stream_sid in self._warned and call.stream_sid not in self._resumed:
                self._resumed.add(call.stream_sid)
                log_event(
                    logger,
                    "recording_resumed",
                    callSid=call.call_sid,
                    streamSid=call.stream_sid,
                    at=round(chunk.start_sample / OUTPUT_RATE, 3),
                    detail="what the disk refused meanwhile is silence in the file",
                )
        elif recording.error is not None:
            self.write_errors += 1
            self._warn(call, recording.error)

    def _new_track(self, path: Path) -> TrackRecording:
        return TrackRecording(path)

    def call_ended(self, call: CallInfo, reason: str) -> None:
        with self._lock:
            tracks = self._calls.pop(call.stream_sid, {})
            self._warned.discard(call.stream_sid)
            self._resumed.discard(call.stream_sid)
        if tracks:
            self._ended(call, tracks)

    def _ended(self, call: CallInfo, tracks: dict[Track, TrackRecording]) -> None:
        """The stream's audio is over: its recordings are final now."""
        self._finish(call, tracks)

    def _finish(self, call: CallInfo, tracks: dict[Track, TrackRecording]) -> None:
        """Pad the tracks to one length and close them: the recordings are final."""
        for recording in tracks.values():
            recording.drain()
        end = max(recording.samples for recording in tracks.values())
        for recording in tracks.values():
            recording.pad_to(end)
            recording.close()
        log_event(
            logger,
            "recording_finished",
            callSid=call.call_sid,
            streamSid=call.stream_sid,
            seconds=round(end / OUTPUT_RATE, 3),
            failures=sum(r.failures for r in tracks.values()),
        )

    def _warn(self, call: CallInfo, error: OSError) -> None:
        if call.stream_sid in self._warned:
            return
        self._warned.add(call.stream_sid)
        log_event(
            logger,
            "recording_failed",
            logging.ERROR,
            callSid=call.call_sid,
            streamSid=call.stream_sid,
            error=f"{type(error).__name__}: {error.strerror or error}",
            detail="audio still goes to clients; recording resumes when the disk allows",
        )


def _is_our_wav(path: Path, rate: int) -> bool:
    try:
        with path.open("rb") as file:
            header = file.read(HEADER_BYTES)
    except OSError:
        return False
    return header[:4] == b"RIFF" and header[8:40] == wav_header(0, rate)[8:40]


def repair_wav(path: Path) -> bool:
    """Make a WAV's header match the samples on disk (after a crash). True if it changed."""
    with path.open("r+b") as file:
        header = file.read(HEADER_BYTES)
        if len(header) < HEADER_BYTES or header[:4] != b"RIFF" or header[36:40] != b"data":
            return False
        rate = struct.unpack("<I", header[24:28])[0]
        data_bytes = path.stat().st_size - HEADER_BYTES
        data_bytes -= data_bytes % 2
        if struct.unpack("<I", header[40:44])[0] == data_bytes and header == wav_header(
            data_bytes, rate
        ):
            return False
        file.truncate(HEADER_BYTES + data_bytes)
        file.seek(0)
        file.write(wav_header(data_bytes, rate))
        return True


def repair_captures(captures_dir: Path) -> list[Path]:
    """Repair every WAV under `captures_dir`; return the ones that needed it."""
    repaired = []
    if captures_dir.is_dir():
        for path in sorted(captures_dir.glob("*/*.wav")):
            try:
                if repair_wav(path):
                    repaired.append(path)
            except OSError as error:
                log_event(
                    logger, "repair_failed", logging.WARNING, path=str(path), error=str(error)
                )
    return repaired
