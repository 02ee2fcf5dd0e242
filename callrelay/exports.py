"""A call's transcript as people and players read it: plain text, WebVTT and SRT captions.

Pure functions of the transcript's lines (the JSON objects of `transcript.jsonl`). Both sides'
lines are cues on one timeline; they may overlap, as the speakers did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CAPTION_FORMATS = {
    "txt": "text/plain; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
}
"""Each rendered format, and its media type."""

Line = Mapping[str, Any]


def render(format_name: str, lines: Iterable[Line]) -> str:
    """The transcript in one of `CAPTION_FORMATS`."""
    return {"txt": to_text, "vtt": to_webvtt, "srt": to_srt}[format_name](lines)


def to_text(lines: Iterable[Line]) -> str:
    """`[mm:ss.s] Speaker: words`, a line each."""
    return "".join(
        f"[{_clock(line.get('start', 0.0))}] {line.get('speaker')}: {_one_line(line)}\n"
        for line in _spoken(lines)
    )


def to_webvtt(lines: Iterable[Line]) -> str:
    """WebVTT, each cue with its speaker as a voice (`<v Caller>`), as a browser's `<track>`
    and caption editors read it."""
    cues = [
        f"{number}\n{_timestamp(line, 'start', '.')} --> {_timestamp(line, 'end', '.')}\n"
        f"<v {line.get('speaker')}>{_cue_text(line)}\n"
        for number, line in enumerate(_spoken(lines), 1)
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_srt(lines: Iterable[Line]) -> str:
    """SubRip: no voices in the format, so each cue starts with its speaker's name."""
    return "\n".join(
        f"{number}\n{_timestamp(line, 'start', ',')} --> {_timestamp(line, 'end', ',')}\n"
        f"{line.get('speaker')}: {_one_line(line)}\n"
        for number, line in enumerate(_spoken(lines), 1)
    )


def _spoken(lines: Iterable[Line]) -> list[Line]:
    """Lines with words, by when they began."""
    return sorted(
        (line for line in lines if str(line.get("text", "")).strip()),
        key=lambda line: float(line.get("start", 0.0)),
    )


def _cue_text(line: Line) -> str:
    """WebVTT cue text: `&`, `<` and `>` escaped (a cue is markup), on one line, so that no
    text can end the cue or open a tag."""
    return _one_line(line).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(line: Line) -> str:
    return " ".join(str(line.get("text", "")).split())


def _timestamp(line: Line, key: str, decimal: str) -> str:
    """hh:mm:ss.mmm (WebVTT) or hh:mm:ss,mmm (SRT); an end is never before its start."""
    seconds = float(line.get(key, 0.0))
    if key == "end":
        seconds = max(seconds, float(line.get("start", 0.0)))
    milliseconds = round(max(0.0, seconds) * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{decimal}{rest % 1000:03d}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, float(seconds)), 60)
    return f"{int(minutes):02d}:{rest:04.1f}"
