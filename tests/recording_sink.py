"""A sink that keeps what it hears, for testing the call pipeline without sockets."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from callrelay.call import AudioChunk, CallInfo


@dataclass
class RememberingSink:
    started: list[CallInfo] = field(default_factory=list)
    chunks: list[AudioChunk] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    ended: list[tuple[CallInfo, str]] = field(default_factory=list)

    def call_started(self, call: CallInfo) -> None:
        self.started.append(call)

    def audio(self, call: CallInfo, chunk: AudioChunk) -> None:
        self.chunks.append(chunk)

    def dtmf(self, call: CallInfo, digit: str) -> None:
        self.digits.append(digit)

    def call_ended(self, call: CallInfo, reason: str) -> None:
        self.ended.append((call, reason))

    def track_pcm(self, track: str) -> np.ndarray:
        chunks = [c for c in self.chunks if c.track == track]
        for before, after in itertools.pairwise(chunks):
            assert after.start_sample == before.end_sample, "chunks must tile the timeline"
        return np.concatenate([c.pcm for c in chunks]) if chunks else np.zeros(0, np.int16)
