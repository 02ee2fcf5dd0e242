"""Redacted recordings: a track's audio held back before it is written, so that what redaction
masks in its transcript is silenced before it reaches the disk (pure: no I/O).

Redaction learns what to mask from finals, which come a second or two after the words were
said, and up to `HOLD_SECONDS` more for a number said in groups. So with `REDACT` on, each
track's audio waits `DELAY_SECONDS` in memory (about a megabyte per track) before the recorder
writes it, with every masked stretch known by then, and a small margin around it, silenced.
Listeners hear the call live, unmasked and undelayed: only what is kept is redacted. A stretch
masked later than that (recognition far behind) is silenced in the file in place.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from callrelay.call import OUTPUT_RATE, AudioChunk
from callrelay.redaction.track import HOLD_SECONDS

DELAY_SECONDS = HOLD_SECONDS + 20.0
"""How long audio waits before it is written: the longest a final is held, and time for
recognition to catch up."""
MARGIN_SECONDS = 0.15
"""Silenced around each masked stretch: word times are a recogniser's estimate."""


class DelayedMasking:
    def __init__(
        self, delay_seconds: float = DELAY_SECONDS, margin_seconds: float = MARGIN_SECONDS
    ) -> None:
        self._delay = int(delay_seconds * OUTPUT_RATE)
        self._margin = int(margin_seconds * OUTPUT_RATE)
        self._waiting: deque[AudioChunk] = deque()
        self._spans: list[tuple[int, int]] = []
        self._newest = 0
        self.released_to = 0
        """Every sample before this has left (been written, or is being)."""

    def push(self, chunk: AudioChunk) -> list[AudioChunk]:
        """Take the track's next chunk; the chunks old enough to write now, masked."""
        self._waiting.append(chunk)
        self._newest = max(self._newest, chunk.end_sample)
        return self._release(self._newest - self._delay)

    def mask(self, start_sample: int, end_sample: int) -> tuple[int, int] | None:
        """Silence this stretch (with the margin) in what has not left yet; the part that
        already left, to be silenced where it was written, if any."""
        start, end = max(0, start_sample - self._margin), end_sample + self._margin
        self._spans.append((start, end))
        if start < self.released_to:
            return start, min(end, self.released_to)
        return None

    def drain(self) -> list[AudioChunk]:
        """Everything still waiting (the track's transcripts are all out)."""
        return self._release(None)

    def _release(self, before: int | None) -> list[AudioChunk]:
        ready = []
        while self._waiting and (before is None or self._waiting[0].end_sample <= before):
            chunk = self._waiting.popleft()
            ready.append(self._silenced(chunk))
            self.released_to = max(self.released_to, chunk.end_sample)
        self._spans = [(s, e) for s, e in self._spans if e > self.released_to]
        return ready

    def _silenced(self, chunk: AudioChunk) -> AudioChunk:
        overlapping = [
            (max(s, chunk.start_sample), min(e, chunk.end_sample))
            for s, e in self._spans
            if s < chunk.end_sample and e > chunk.start_sample
        ]
        if not overlapping:
            return chunk
        pcm = chunk.pcm.copy()
        for start, end in overlapping:
            pcm[start - chunk.start_sample : end - chunk.start_sample] = 0
        return replace(chunk, pcm=pcm)
