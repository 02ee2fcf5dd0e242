"""Call analytics: who spoke when, for how long, over whom, from the two aligned tracks.

Pure functions. Speech activity is a boolean per 20 ms frame for each side, on the call's
timeline: from the utterances the recogniser cut (each final's start and end: its VAD's
decision), or, with recognition off, from the audio itself (`activity_from_audio`). The
figures follow from the frames and from the sides' runs of speech ("segments"):

- a side's `talkSeconds`, `words` and `wordsPerMinute` (words per minute of its talk);
- a turn: a segment that takes the floor, i.e. follows a segment of the other side. A segment
  spoken wholly inside the other side's (a "mm-hm") is overlap, not a turn;
- a monologue: a side's consecutive segments with no turn of the other between them, from the
  first one's start to the last one's end (`longestMonologueSeconds`);
- `overlapSeconds` (both talk), `silenceSeconds` (neither does);
- an interruption: one side starts while the other is talking, and the other stops within a
  second of it;
- `firstResponseSeconds`: from the end of the first speaker's first segment to the other
  side's first words after it (0 if they came while it was still speaking).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FRAME_SECONDS = 0.02
INTERRUPTION_SECONDS = 1.0
"""An interrupted side stops within this long of the interruption."""

Activity = npt.NDArray[np.bool_]
SIDES = ("caller", "receiver")


@dataclass(frozen=True)
class Segment:
    side: str
    start: float
    end: float


def activity_from_spans(spans: Iterable[tuple[float, float]], frames: int) -> Activity:
    """A side's speech per 20 ms frame from its utterances' (start, end) in seconds."""
    active = np.zeros(frames, np.bool_)
    for start, end in spans:
        first = max(0, round(start / FRAME_SECONDS))
        last = min(frames, round(end / FRAME_SECONDS))
        active[first:last] = True
    return active


SPEECH_ABOVE_FLOOR_DB = 15.0
"""A frame is speech this far above the track's noise floor..."""
SPEECH_MIN_DBFS = -50.0
"""...and above this level in any case (a silent track has no speech at all)."""
HANGOVER_FRAMES = 15
"""Pauses shorter than this (300 ms) stay inside a segment, as between words."""
MIN_SPEECH_FRAMES = 5
"""Bursts shorter than this (100 ms) are clicks and noise, not speech."""


def activity_from_audio(samples: npt.NDArray[np.int16], rate: int) -> Activity:
    """A side's speech per 20 ms frame from its audio, by energy: for when no recogniser
    decided it."""
    return activity_from_levels(frame_levels(samples, rate))


def frame_levels(samples: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.float32]:
    """Each whole 20 ms frame's level in dBFS (a long recording is read a piece at a time,
    in whole frames, and its pieces' levels joined)."""
    per_frame = int(rate * FRAME_SECONDS)
    count = len(samples) // per_frame
    frames = samples[: count * per_frame].reshape(count, per_frame).astype(np.float32) / 32768
    levels: npt.NDArray[np.float32] = 10 * np.log10(np.mean(frames * frames, axis=1) + 1e-10)
    return levels


def activity_from_levels(levels: npt.NDArray[np.float32]) -> Activity:
    """Telephone audio is band-limited and its silence near-digital, so a level well above
    the track's own floor is speech; pauses between words stay inside, clicks do not count."""
    if len(levels) == 0:
        return np.zeros(0, np.bool_)
    floor = float(np.percentile(levels, 10))
    loud = levels > max(floor + SPEECH_ABOVE_FLOOR_DB, SPEECH_MIN_DBFS)
    return _drop_short(_fill_gaps(loud, HANGOVER_FRAMES), MIN_SPEECH_FRAMES)


def call_analytics(
    activity: Mapping[str, Activity], words: Mapping[str, int | None]
) -> dict[str, Any]:
    """The figures for a call: `activity` and `words` by side (`caller`, `receiver`; words
    None when nothing was transcribed)."""
    frames = max(len(active) for active in activity.values())
    caller, receiver = (_padded(activity[side], frames) for side in SIDES)
    segments = sorted(
        (s for side in SIDES for s in _segments(side, _padded(activity[side], frames))),
        key=lambda s: s.start,
    )
    turns = _turns(segments)
    figures: dict[str, Any] = {
        side: _side(side, _padded(activity[side], frames), words.get(side), turns) for side in SIDES
    }
    figures.update(
        silenceSeconds=_seconds(int(np.sum(~caller & ~receiver))),
        overlapSeconds=_seconds(int(np.sum(caller & receiver))),
        interruptions=_interruptions(segments),
        firstResponseSeconds=_first_response(segments),
    )
    return figures


def speech_spans(active: Activity) -> list[list[float]]:
    """A side's runs of speech as [start, end] seconds: the call's "who spoke when"."""
    return [[s.start, s.end] for s in _segments("", active)]


def _side(
    side: str, active: Activity, words: int | None, turns: Sequence[list[Segment]]
) -> dict[str, Any]:
    talk = _seconds(int(np.sum(active)))
    own = [turn for turn in turns if turn[0].side == side]
    return {
        "talkSeconds": talk,
        "words": words,
        "wordsPerMinute": round(words / (talk / 60), 1) if words is not None and talk else None,
        "longestMonologueSeconds": round(max((t[-1].end - t[0].start for t in own), default=0), 2),
        "turns": len(own),
    }


def _turns(segments: Sequence[Segment]) -> list[list[Segment]]:
    """The segments grouped into turns: runs of one side's, a new one each time the floor
    passes. A segment inside one of the other side's (a backchannel) passes nothing."""
    turns: list[list[Segment]] = []
    for segment, covering in _with_covering(segments):
        if covering is not None and segment.end <= covering.end:
            continue
        if turns and turns[-1][0].side == segment.side:
            turns[-1].append(segment)
        else:
            turns.append([segment])
    return turns


def _interruptions(segments: Sequence[Segment]) -> int:
    return sum(
        1
        for segment, covering in _with_covering(segments)
        if covering is not None
        and covering.start < segment.start
        and covering.end <= segment.start + INTERRUPTION_SECONDS
    )


def _with_covering(segments: Sequence[Segment]) -> Iterable[tuple[Segment, Segment | None]]:
    """Each segment (by start) with the other side's segment it starts inside, if any. One
    side's segments never overlap, so the candidate is the other side's latest one."""
    latest: dict[str, Segment] = {}
    for segment in segments:
        other = next((s for side, s in latest.items() if side != segment.side), None)
        yield segment, other if other is not None and other.end > segment.start else None
        latest[segment.side] = segment


def _first_response(segments: Sequence[Segment]) -> float | None:
    if not segments:
        return None
    first = segments[0]
    later = [s for s in segments if s.side != first.side and s.end > first.end]
    if not later:
        return None
    return round(max(0.0, later[0].start - first.end), 2)


def _runs(active: Activity) -> list[tuple[int, int]]:
    """The runs of speech, as (first frame, frame after the last)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], active.astype(np.int8), [0]))))
    return [(int(start), int(end)) for start, end in zip(edges[::2], edges[1::2], strict=True)]


def _segments(side: str, active: Activity) -> list[Segment]:
    return [Segment(side, _seconds(start), _seconds(end)) for start, end in _runs(active)]


def _fill_gaps(active: Activity, shorter_than: int) -> Activity:
    """Silences shorter than `shorter_than` frames between speech become speech."""
    filled = active.copy()
    runs = _runs(active)
    for (_, end), (start, _) in itertools.pairwise(runs):
        if start - end < shorter_than:
            filled[end:start] = True
    return filled


def _drop_short(active: Activity, shorter_than: int) -> Activity:
    kept = active.copy()
    for start, end in _runs(active):
        if end - start < shorter_than:
            kept[start:end] = False
    return kept


def _padded(active: Activity, frames: int) -> Activity:
    return np.pad(active, (0, frames - len(active))) if len(active) < frames else active


def _seconds(frames: int) -> float:
    return round(frames * FRAME_SECONDS, 2)
