"""Two-party test calls with known turns, and scoring what a recogniser made of them."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from callrelay.audio import MULAW_SILENCE
from callrelay.simulator.audio_source import load_telephone_audio

Speaker = Literal["caller", "receiver"]


@dataclass(frozen=True)
class Turn:
    speaker: Speaker
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Conversation:
    caller: bytes
    """8 kHz mu-law, inbound track."""
    receiver: bytes
    turns: tuple[Turn, ...]

    @property
    def seconds(self) -> float:
        return max(len(self.caller), len(self.receiver)) / 8000

    def rotated(self, turn: int) -> Conversation:
        """The same call started in the pause before turn `turn` and wrapped around, so that
        simultaneous test calls do not all speak at the same moments."""
        if not self.turns or turn % len(self.turns) == 0:
            return self
        first = self.turns[turn % len(self.turns)]
        previous_end = self.turns[turn % len(self.turns) - 1].end
        cut = int((previous_end + first.start) / 2 * 8000)
        seconds = len(self.caller) / 8000

        def shift(t: Turn) -> Turn:
            start = (t.start - cut / 8000) % seconds
            return Turn(t.speaker, start, start + t.end - t.start, t.text)

        turns = sorted((shift(t) for t in self.turns), key=lambda t: t.start)
        return Conversation(
            self.caller[cut:] + self.caller[:cut],
            self.receiver[cut:] + self.receiver[:cut],
            tuple(turns),
        )


def read_turns(path: Path) -> list[Turn]:
    """A `turns.tsv` (speaker, start_s, end_s, text)."""
    with path.open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    turns = []
    for row in rows:
        speaker: Speaker = "caller" if row["speaker"] == "caller" else "receiver"
        turns.append(Turn(speaker, float(row["start_s"]), float(row["end_s"]), row["text"]))
    return turns


def build_conversation(
    clips: Sequence[tuple[Path, str]], *, gap: float = 1.0, lead: float = 0.5
) -> Conversation:
    """Alternate the clips between caller and receiver, `gap` seconds apart, the other silent."""
    audio = [np.frombuffer(load_telephone_audio(path), dtype=np.uint8) for path, _ in clips]
    total = int((lead + sum(len(a) / 8000 + gap for a in audio)) * 8000) + 8000
    tracks = {
        "caller": np.full(total, MULAW_SILENCE, np.uint8),
        "receiver": np.full(total, MULAW_SILENCE, np.uint8),
    }
    turns = []
    position = int(lead * 8000)
    for index, (samples, (_, text)) in enumerate(zip(audio, clips, strict=True)):
        speaker: Speaker = "caller" if index % 2 == 0 else "receiver"
        tracks[speaker][position : position + len(samples)] = samples
        turns.append(Turn(speaker, position / 8000, (position + len(samples)) / 8000, text))
        position += len(samples) + int(gap * 8000)
    return Conversation(tracks["caller"].tobytes(), tracks["receiver"].tobytes(), tuple(turns))


_NUMBERS = dict(
    enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
        ]
    )
)
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def normalise(text: str) -> list[str]:
    """Lower case, no punctuation, small numbers and common abbreviations spelt out."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    out = []
    for word in words:
        word = word.strip("'")
        if word.isdigit() and int(word) in _NUMBERS:
            out.append(_NUMBERS[int(word)])
        elif word.isdigit():
            out.extend(_NUMBERS.get(int(d), d) for d in word)
        elif word:
            out.append(_ABBREVIATIONS.get(word, word))
    return out


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference words) after `normalise`."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i]
        for j, hyp_word in enumerate(hyp, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
            )
        previous = current
    return previous[-1], len(ref)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: all edits over all reference words."""
    pairs = [word_errors(r, h) for r, h in zip(references, hypotheses, strict=True)]
    words = sum(n for _, n in pairs)
    return sum(e for e, _ in pairs) / words if words else 0.0
