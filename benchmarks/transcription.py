"""Benchmark: live transcription through the real relay, with concurrent simulated calls.

    callrelay bench transcription [--calls 1,5,10] [--engine whisper] [--speed 1]
                                  [--repeat 1]   (or python -m benchmarks.transcription)

For each number of concurrent calls it starts `callrelay serve`, streams that many two-party calls
of real human speech (tests/data/real, alternating between caller and receiver) in real
time, and prints:
  - word error rate per side, live, next to the same engine run offline on whole utterances;
  - final latency: speech end (on the call's timeline) -> `Caller`/`Receiver` event, p50/p95/max;
  - relay latency: media frame due -> `media_in` at a Socket.IO client, ASR on vs off;
  - server CPU (cores busy), real-time factor (CPU seconds per second of track audio), memory;
  - the worst recognition lag seen in `GET /`, and audio skipped under overload;
  - the load generator's own CPU (it shares the machine);
  - at the end, the loads that stayed live and the loads whose final p95 met 1.0 s, in every
    run of that load (how many concurrent calls this machine transcribes in real time), and
    each load's p95 over the finals of all its runs.
Near saturation single runs vary widely: `--repeat K` runs each row K times.
Loopback only. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import requests

from benchmarks.meter import ProcessMeter, percentile
from callrelay.simulator.conversation import Conversation, build_conversation, word_error_rate
from callrelay.simulator.local_relay import start_relay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid, play_stream

TEST_AUDIO = Path(__file__).resolve().parents[1] / "tests" / "data"
"""The repository's test audio: real speech with reference transcripts in `real/`."""
SPEAKER_EVENTS = {"Caller": "caller", "Receiver": "receiver"}


def real_speech_call() -> tuple[Conversation, list[tuple[Path, str]]]:
    real = TEST_AUDIO / "real"
    with (real / "transcripts.tsv").open() as file:
        clips = [(real / r["file"], r["transcript"]) for r in csv.DictReader(file, delimiter="\t")]
    return build_conversation(clips), clips


class FinalTiming(NamedTuple):
    latency: float
    speech: float
    """Seconds of speech in the utterance."""
    queue: float | None
    decode: float | None
    """The recognition process's own figures for it, from the server's log."""
    text: str


@dataclass
class RunResult:
    calls: int
    engine: str
    latencies: list[float] = field(default_factory=list)
    slow_finals: list[FinalTiming] = field(default_factory=list)
    """Each final, slowest first."""
    media_latencies: list[float] = field(default_factory=list)
    wer: dict[str, float] = field(default_factory=dict)
    cpu_cores: float = 0.0
    recognition_cores: float = 0.0
    generator_cores: float = 0.0
    rtf: float = 0.0
    idle_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    max_lag: float = 0.0
    skipped: float = 0.0
    engine_status: dict[str, Any] = field(default_factory=dict)
    missing_calls: int = 0

    @property
    def live(self) -> bool:
        """Recognition kept up: no audio skipped, every call transcribed, lag stayed bounded."""
        return not self.skipped and not self.missing_calls and self.max_lag < LIVE_LAG_SECONDS


LIVE_LAG_SECONDS = 2.0
"""A track's audio waits while its utterance decodes (~1 s at 10 calls); recognition that falls
behind grows its lag until audio is skipped at `ASR_MAX_LAG_SECONDS`."""
LATENCY_GOAL_SECONDS = 1.0


def verdict(results: list[RunResult]) -> str:
    """Which loads stayed live and which met the latency goal, in every run of that load, and
    each load's p95 over the finals of all its runs.

    One run's p95 is the 6th-slowest of ~120 finals at 10 calls, one draw; the finals of
    several runs together estimate the latency distribution itself."""
    loads = sorted({r.calls for r in results})

    def every_run(check: Callable[[RunResult], bool]) -> str:
        held = [n for n in loads if all(check(r) for r in results if r.calls == n)]
        return ", ".join(map(str, held)) + " calls" if held else "none"

    def pooled(calls: int) -> str:
        runs = [r for r in results if r.calls == calls]
        finals = [latency for r in runs for latency in r.latencies]
        runs_said = f"{len(runs)} run" if len(runs) == 1 else f"{len(runs)} runs"
        return f"{calls} calls {percentile(finals, 95):.2f} s ({runs_said})"

    return (
        f"live (nothing skipped, every call transcribed, worst lag < {LIVE_LAG_SECONDS:.0f} s): "
        f"{every_run(lambda r: r.live)}; final p95 <= {LATENCY_GOAL_SECONDS:.1f} s: "
        f"{every_run(lambda r: percentile(r.latencies, 95) <= LATENCY_GOAL_SECONDS)}; "
        f"final p95 over all runs' finals: {', '.join(pooled(n) for n in loads)}"
    )


def run(calls: int, engine: str, conversation: Conversation, speed: float) -> RunResult:
    result = RunResult(calls, engine)
    with tempfile.TemporaryDirectory() as tmp:
        relay = start_relay(Path(tmp), {"ASR_ENGINE": engine})
        try:
            meter = ProcessMeter(relay.process.pid)
            time.sleep(1.0)
            result.idle_rss_mb = meter.rss_mb()
            sids = [new_sid("CA") for _ in range(calls)]
            arrivals: dict[str, list[tuple[float, str, Any]]] = {sid: [] for sid in sids}

            def recorder(sid: str) -> Callable[[str, Any], None]:
                def on_event(name: str, data: Any) -> None:
                    arrivals[sid].append((time.monotonic(), name, data))

                return on_event

            observers = [relay.observer(recorder(sid), call_sid=sid, audio=False) for sid in sids]
            media_times: list[tuple[float, int]] = []
            audio_watch = relay.observer(call_sid=sids[0], keep_audio=False)
            audio_watch._client.on(  # record arrival of every media_in of the first call
                "media_in", lambda data: media_times.append((time.monotonic(), data["timestamp"]))
            )
            reports: dict[str, Any] = {}
            stop_sampling = threading.Event()

            def sample() -> None:
                while not stop_sampling.wait(0.5):
                    meter.rss_mb()
                    try:
                        asr = requests.get(relay.url + "/", timeout=5).json()["asr"]
                    except (requests.RequestException, KeyError, ValueError):
                        continue
                    result.max_lag = max(result.max_lag, float(asr.get("maxLagSeconds", 0)))
                    result.skipped = max(result.skipped, float(asr.get("skippedSeconds", 0)))
                    result.engine_status = asr

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            by_process_before = meter.cpu_by_process()
            cpu_before, wall_before = sum(by_process_before.values()), time.monotonic()
            generator_before = time.process_time()

            # Real calls are not in lock-step: each call starts at another turn of the
            # conversation (wrapping around), and they connect over two seconds.
            scripts = {
                sid: conversation.rotated(i * len(conversation.turns) // calls)
                for i, sid in enumerate(sids)
            }

            def call(sid: str, delay: float) -> None:
                time.sleep(delay)
                reports[sid] = play_stream(
                    relay.stream_target(),
                    {"inbound": scripts[sid].caller, "outbound": scripts[sid].receiver},
                    call_sid=sid,
                    options=StreamOptions(speed=speed),
                )

            threads = [
                threading.Thread(target=call, args=(sid, 2.0 * i / calls))
                for i, sid in enumerate(sids)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if engine != "off":
                for observer in observers:
                    observer.transcription_ended.wait(120)
            else:
                time.sleep(1.0)
            by_process = meter.cpu_by_process()
            cpu = sum(by_process.values()) - cpu_before
            recognition_pid = result.engine_status.get("process")
            if recognition_pid in by_process:
                result.recognition_cores = (
                    by_process[recognition_pid] - by_process_before.get(recognition_pid, 0.0)
                ) / (time.monotonic() - wall_before)
            wall = time.monotonic() - wall_before
            stop_sampling.set()
            result.cpu_cores = cpu / wall
            result.generator_cores = (time.process_time() - generator_before) / wall
            result.rtf = cpu / (calls * 2 * conversation.seconds)
            result.peak_rss_mb = meter.peak_rss_mb
            for observer in [*observers, audio_watch]:
                observer.close()
            closed = {sid: r.server_closed for sid, r in reports.items() if r.server_closed}
            if closed or len(reports) < calls:
                print(f"streams closed by the server: {closed}, calls lost: {calls - len(reports)}")
                print(relay.server_output()[-3000:])
            start0 = reports[sids[0]].started_at
            # A frame stamped T ms was due to be sent at started_at + T / 1000.
            result.media_latencies = [
                arrival - (start0 + timestamp / 1000 / (speed or 1))
                for arrival, timestamp in media_times[10:]  # past the connection's first burst
            ]
            hypotheses: dict[str, list[str]] = {"caller": [], "receiver": []}
            references: dict[str, list[str]] = {"caller": [], "receiver": []}
            decode_timings = logged_decode_timings(relay.log_file)
            for sid in sids:
                events = [(t, n, d) for t, n, d in arrivals[sid] if n in SPEAKER_EVENTS]
                if not events and engine != "off":
                    result.missing_calls += 1
                for arrival, _, data in events:
                    # Audio at call time T was due at started_at + T / speed.
                    due = reports[sid].started_at + float(data["end"]) / (speed or 1)
                    result.latencies.append(arrival - due)
                    speech = float(data["end"]) - float(data["start"])
                    queue, decode = decode_timings.get(
                        (sid, round(float(data["end"]), 2), data["text"]), (None, None)
                    )
                    result.slow_finals.append(
                        FinalTiming(arrival - due, speech, queue, decode, data["text"])
                    )
                for side in hypotheses:
                    hypotheses[side].append(
                        " ".join(d["text"] for _, n, d in events if SPEAKER_EVENTS[n] == side)
                    )
                    references[side].append(
                        " ".join(t.text for t in scripts[sid].turns if t.speaker == side)
                    )
            result.slow_finals.sort(key=lambda final: final.latency, reverse=True)
            if engine != "off":
                for side, texts in hypotheses.items():
                    result.wer[side] = word_error_rate(references[side], texts)
        finally:
            stop_relay(relay)
    return result


OFFLINE_SHIFTS_MS = (0, 5, 10, 15, 20, 25, 30, 35)
"""Leading silence before each clip. tiny.en's words can flip on a shift of a few milliseconds
(a Twilio stream's first timestamp is not 0), so one offline figure is one draw: the spread
over these shifts is the band a live figure should be judged against."""


def offline_wer(clips: list[tuple[Path, str]], lead_ms: int = 0) -> dict[str, float]:
    """The same engine on each whole clip, through the same phone channel and upsampler."""
    from callrelay.asr.base import pcm_to_float
    from callrelay.asr.segmenter import Utterance
    from callrelay.asr.whisper import WhisperEngine, bundled_model_path
    from callrelay.audio import MULAW_SILENCE, Upsampler2x
    from callrelay.simulator.audio_source import load_telephone_audio

    model = bundled_model_path()
    assert model is not None
    engine = WhisperEngine(model, cpu_threads=1)
    sides: dict[str, tuple[list[str], list[str]]] = {"caller": ([], []), "receiver": ([], [])}
    for index, (path, text) in enumerate(clips):
        mulaw = bytes([MULAW_SILENCE]) * (lead_ms * 8) + load_telephone_audio(path)
        upsampler = Upsampler2x()
        pcm = np.concatenate(
            [upsampler.process_mulaw(mulaw[i : i + 160]) for i in range(0, len(mulaw), 160)]
        )
        audio = pcm_to_float(pcm)
        transcript = engine.transcribe(Utterance(audio, 0, len(audio)))
        side = "caller" if index % 2 == 0 else "receiver"
        sides[side][0].append(text)
        sides[side][1].append(transcript.text if transcript else "")
    return {side: word_error_rate(refs, hyps) for side, (refs, hyps) in sides.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", default="1,5,10")
    parser.add_argument("--engine", default="whisper")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--no-compare-off", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each row")
    parser.add_argument("--no-offline", action="store_true", help="skip the offline WER band")
    parser.add_argument("--slowest", type=int, default=0, help="list each run's N slowest finals")
    args = parser.parse_args()
    # Stopped with `kill`, still stop the server it started (`finally` in `run`), which would
    # otherwise go on running beside the next benchmark and skew it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    conversation, clips = real_speech_call()
    print(
        f"call: {conversation.seconds:.1f} s, {len(conversation.turns)} turns of real speech, "
        f"both tracks, streamed at speed {args.speed}"
    )
    if args.engine == "whisper" and not args.no_offline:
        offline = [offline_wer(clips, shift) for shift in OFFLINE_SHIFTS_MS]
        for side in ("caller", "receiver"):
            rates = [o[side] for o in offline]
            print(
                f"offline WER {side} (whole clips, same engine, {len(rates)} lead-ins "
                f"0-{OFFLINE_SHIFTS_MS[-1]} ms): mean {np.mean(rates):.1%}, "
                f"{min(rates):.1%}-{max(rates):.1%}, at 0 ms {rates[0]:.1%}"
            )
    header = (
        f"{'calls':>5} {'engine':>7} {'WER caller':>10} {'WER recv':>9} {'lat p50':>8} "
        f"{'lat p95':>8} {'lat max':>8} {'media p50':>9} {'media p95':>9} {'cores':>6} "
        f"{'asr':>5} {'gen':>5} {'RTF':>6} {'RSS MB':>7} {'max lag':>8} {'skipped':>8} "
        f"{'utt':>5} {'fallbk':>6} {'early':>7} {'wait p95':>8} {'dec p95':>7}"
    )
    rows = []
    transcribed: list[RunResult] = []
    nan = float("nan")
    for calls in [int(c) for c in args.calls.split(",")]:
        engines = [args.engine] if args.no_compare_off else [args.engine, "off"]
        for engine in [e for e in engines for _ in range(args.repeat)]:
            r = run(calls, engine, conversation, args.speed)
            if engine != "off":
                transcribed.append(r)
            rows.append(
                f"{calls:>5} {engine:>7} "
                f"{r.wer.get('caller', nan):>10.1%} {r.wer.get('receiver', nan):>9.1%} "
                f"{percentile(r.latencies, 50):>8.2f} {percentile(r.latencies, 95):>8.2f} "
                f"{max(r.latencies, default=float('nan')):>8.2f} "
                f"{percentile(r.media_latencies, 50) * 1000:>7.1f}ms "
                f"{percentile(r.media_latencies, 95) * 1000:>7.1f}ms "
                f"{r.cpu_cores:>6.2f} {r.recognition_cores:>5.2f} {r.generator_cores:>5.2f} "
                f"{r.rtf:>6.3f} "
                f"{r.peak_rss_mb:>7.0f} {r.max_lag:>8.2f} "
                f"{r.skipped:>8.1f} {r.engine_status.get('utterances', ''):>5} "
                f"{r.engine_status.get('fullWindowFallbacks', ''):>6} "
                f"{early_decodes(r.engine_status):>7} "
                f"{r.engine_status.get('queueWait', {}).get('p95', ''):>8} "
                f"{r.engine_status.get('decode', {}).get('p95', ''):>7}"
            )
            print(header if len(rows) == 1 else "", end="\n" if len(rows) == 1 else "")
            print(rows[-1], flush=True)
            for final in r.slow_finals[: args.slowest]:
                print(
                    f"      {final.latency:5.2f} s after {final.speech:4.1f} s of speech "
                    f"(waited {seconds(final.queue)}, decoded in {seconds(final.decode)}): "
                    f"{final.text}"
                )
    if transcribed:
        print(verdict(transcribed))
    print(
        "\nlat: speech end -> final event (s). media: frame due -> media_in at a client. "
        "cores: server CPU / wall time, asr: the recognition process's share of it; gen: the "
        "load generator's (simulated Twilio and clients, this process). "
        "RTF: server CPU s per s of track audio. utt: utterances decoded (early ones included), "
        "early: decodes started before the pause confirmed the end, used as finals/as partials. "
        "wait p95 / dec p95: seconds an utterance waited for a decode worker / its decode took "
        "(with its fallback if any; the recognition process's own clock, last 500 utterances)."
    )


def logged_decode_timings(log_file: Path) -> dict[tuple[str, float, str], tuple[float, float]]:
    """(callSid, end, text) -> (queueSeconds, decodeSeconds) of each logged final."""
    timings = {}
    for line in log_file.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("evt") == "transcript" and "decodeSeconds" in entry:
            key = (entry["callSid"], entry["end"], entry["text"])
            timings[key] = (entry["queueSeconds"], entry["decodeSeconds"])
    return timings


def seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


def early_decodes(status: dict[str, Any]) -> str:
    if "earlyDecodesUsed" not in status:
        return ""
    return f"{status['earlyDecodesUsed']}/{status['earlyDecodesPartial']}"


if __name__ == "__main__":
    main()
