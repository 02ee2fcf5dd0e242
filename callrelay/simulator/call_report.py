"""What `callrelay simulate call` prints: one short line per event, then a summary."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callrelay.config import Settings
from callrelay.simulator.media_client import StreamReport
from callrelay.simulator.observer import AUDIO_EVENTS
from callrelay.tracks import MEDIA_EVENTS, SPEAKER_EVENTS


@dataclass
class CallPrinter:
    """One short line per event; audio as running counts. `--json`: each event as JSON."""

    as_json: bool
    started: float = field(default_factory=time.monotonic)
    media: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(AUDIO_EVENTS, 0))
    """Audio events received, by name: the observer's own counts."""
    finals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPEAKER_EVENTS, 0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, text: str) -> None:
        if not self.as_json:
            print(text, flush=True)

    def event(self, name: str, data: Any) -> None:
        with self._lock:
            if name in SPEAKER_EVENTS:
                self.finals[name] += 1
            if self.as_json:
                print(json.dumps({"event": name, "data": data}), flush=True)
                return
            print(self._line(name, data if isinstance(data, dict) else {}), flush=True)

    def _line(self, name: str, data: dict[str, Any]) -> str:
        elapsed = time.monotonic() - self.started
        call = str(data.get("callSid", ""))[-6:]
        text = ""
        if name in SPEAKER_EVENTS or name == "partial":
            span = f"[{data.get('start', 0):5.2f}-{data.get('end', 0):5.2f}s]"
            who = f"{data.get('speaker')} so far: " if name == "partial" else ""
            text = f"{span} {who}{data.get('text')}"
        elif name == "call_started":
            text = "tracks " + ",".join(data.get("tracks", []))
        elif name == "call_ended":
            text = f"reason {data.get('reason')}"
        elif name == "dtmf":
            text = f"digit {data.get('digit')}"
        elif name == "call_status":
            text = str(data.get("callStatus", ""))
        elif name == "call_completed" and data.get("analytics"):
            talk = {side: data["analytics"][side]["talkSeconds"] for side in ("caller", "receiver")}
            text = f"talk caller {talk['caller']} s, receiver {talk['receiver']} s"
        return f"{elapsed:7.2f}s  {name:<19} ...{call}  {text}".rstrip()

    def media_counts(self) -> str:
        return ", ".join(f"{track} {self.media[event]}" for track, event in MEDIA_EVENTS.items())


def print_summary(
    printer: CallPrinter,
    report: StreamReport,
    settings: Settings,
    watched: bool,
    transcribing: bool,
    transcripts_complete: bool,
) -> None:
    folder = settings.captures_dir / report.call_sid
    summary: dict[str, Any] = {
        "callSid": report.call_sid,
        "streamSid": report.stream_sid,
        "seconds": round(report.seconds, 1),
        "framesSent": report.frames_sent,
        "framesDropped": report.frames_dropped,
        "framesSkippedSilent": report.frames_skipped_silent,
        "recordings": [str(folder / "caller.wav"), str(folder / "receiver.wav")],
        "serverClosed": report.server_closed,
        "warnings": report.warnings[:5],
    }
    if watched:
        summary["framesRelayed"] = {
            track: printer.media[event] for track, event in MEDIA_EVENTS.items()
        }
    if transcribing:
        summary["finals"] = printer.finals
        summary["transcriptsComplete"] = transcripts_complete
    heard = report.talkback
    if heard is not None:
        summary["talkBack"] = {
            "seconds": round(len(heard.audio) / 8000, 3),
            "marksEchoed": heard.marks_echoed,
            "clears": heard.clears,
        }
    if printer.as_json:
        print(json.dumps({"event": "summary", "data": summary}), flush=True)
    else:
        text = _summary_text(printer, report, folder, watched, transcribing, transcripts_complete)
        print(text, flush=True)


def _summary_text(
    printer: CallPrinter,
    report: StreamReport,
    folder: Path,
    watched: bool,
    transcribing: bool,
    transcripts_complete: bool,
) -> str:
    """The summary as a person reads it, one figure a line."""
    heard = report.talkback
    sent = ", ".join(f"{t} {n}" for t, n in report.frames_sent.items())
    lines = [f"done in {report.seconds:.1f} s", f"  frames sent      {sent}"]
    if report.frames_dropped or report.frames_skipped_silent:
        lines.append(
            f"  frames left out  {report.frames_dropped} dropped, "
            f"{report.frames_skipped_silent} silent skipped"
        )
    if watched:
        lines.append(f"  frames relayed   {printer.media_counts()}")
    if transcribing:
        finals = ", ".join(f"{speaker} {n}" for speaker, n in printer.finals.items())
        late = "" if transcripts_complete else " (the relay was still transcribing; gave up)"
        lines.append(f"  finals           {finals}{late}")
    if heard is not None:
        lines.append(
            f"  talk-back heard  {len(heard.audio) / 8000:.1f} s, marks {heard.marks_echoed}, "
            f"{heard.clears} clear(s)"
        )
    lines.append(f"  recordings       {folder}/caller.wav, receiver.wav (on the relay's host)")
    lines.append(f"  transcript       {folder}/transcript.jsonl")
    if report.server_closed:
        lines.append(f"  the relay closed the stream: {report.server_closed}")
    lines += [f"  warning: {warning}" for warning in report.warnings[:5]]
    return "\n".join(lines)
