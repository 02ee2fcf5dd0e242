"""Benchmark: many calls in a row through one server; does any process's memory creep?

    callrelay bench soak [--calls 400] [--at-once 8] [--engine whisper] [--every 25]
    (or python -m benchmarks.soak)

Starts `callrelay serve` (recognition on by default) and plays `--calls` short two-party calls of
real human speech (three clips of tests/data/real, 13 s), `--at-once` at a time, each as fast as
the relay reads it; a call counts as done when its last transcript is out, and the next starts
then. Every `--every` calls it samples the resident memory of every process of the server
(gunicorn's master and worker, the recognition process) and prints the curve; at the end, each
process's growth over the second half of the run, in MB per 100 calls: flat after warm-up is
the goal. Loopback only. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.meter import ProcessMeter
from callrelay.simulator.conversation import build_conversation
from callrelay.simulator.local_relay import start_relay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid, play_stream

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "real"
CLIPS = ("cards-005.flac", "counting.flac", "sense_and_sensibility_01_austen_64kb-0880.flac")


def process_rss_mb(meter: ProcessMeter) -> dict[int, float]:
    rss = {}
    for pid in meter.pids():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[pid] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--at-once", type=int, default=8)
    parser.add_argument("--engine", default="whisper", help="ASR_ENGINE for the server")
    parser.add_argument("--every", type=int, default=25, help="calls between two samples")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    with (REAL / "transcripts.tsv").open() as file:
        texts = {row["file"]: row["transcript"] for row in csv.DictReader(file, delimiter="\t")}
    call = build_conversation([(REAL / name, texts[name]) for name in CLIPS])
    env = {"ASR_ENGINE": args.engine, "MAX_CALLS": "1000"}
    env.update(dict(item.split("=", 1) for item in args.env))
    with tempfile.TemporaryDirectory(prefix="callrelay-soak-") as tmp:
        relay = start_relay(Path(tmp), env)
        try:
            run(relay, call, args)
        finally:
            stop_relay(relay)


def run(relay: object, call: object, args: argparse.Namespace) -> None:
    from callrelay.simulator.conversation import Conversation
    from callrelay.simulator.local_relay import RunningRelay

    assert isinstance(relay, RunningRelay) and isinstance(call, Conversation)
    meter = ProcessMeter(relay.process.pid)
    slots = threading.Semaphore(args.at_once)
    finished = threading.Condition()
    done = [0]
    transcribing = args.engine != "off"

    def ended(name: str, data: object) -> None:
        if name == ("transcription_ended" if transcribing else "call_ended"):
            slots.release()
            with finished:
                done[0] += 1
                finished.notify_all()

    observer = relay.observer(ended, audio=False)
    print(
        f"{args.calls} calls of {call.seconds:.0f} s, {args.at_once} at a time, "
        f"ASR {args.engine}; resident memory (MB) of each server process"
    )
    started = time.monotonic()
    curve: list[tuple[int, dict[int, float]]] = [(0, process_rss_mb(meter))]
    print(f"{'calls':>6} {'s':>6}  " + "  ".join(f"pid {pid:>7}" for pid in curve[0][1]))

    def wait_until_done(count: int) -> None:
        with finished:
            finished.wait_for(lambda: done[0] >= count, 300)

    def sample(count: int) -> None:
        rss = process_rss_mb(meter)
        curve.append((count, rss))
        cells = "  ".join(f"{rss.get(pid, float('nan')):11.1f}" for pid in curve[0][1])
        extra = {pid: mb for pid, mb in rss.items() if pid not in curve[0][1]}
        print(
            f"{count:6d} {time.monotonic() - started:6.0f}  {cells}"
            + (f"  new: {extra}" if extra else ""),
            flush=True,
        )

    try:
        for index in range(args.calls):
            slots.acquire()
            threading.Thread(
                target=play_stream,
                args=(relay.stream_target(), {"inbound": call.caller, "outbound": call.receiver}),
                kwargs={"call_sid": new_sid("CA"), "options": StreamOptions(speed=0)},
                daemon=True,
            ).start()
            if (index + 1) % args.every == 0:
                wait_until_done(index + 1 - args.at_once)
                sample(index + 1)
        wait_until_done(args.calls)
        sample(args.calls)
    finally:
        observer.close()
    half = [point for point in curve if point[0] >= args.calls // 2]
    if len(half) >= 2:
        (first_count, first), (last_count, last) = half[0], half[-1]
        growth = {
            pid: (last.get(pid, 0) - first.get(pid, 0)) / (last_count - first_count) * 100
            for pid in curve[0][1]
        }
        print(
            "growth over the second half, MB per 100 calls: "
            + ", ".join(f"pid {pid} {mb:+.2f}" for pid, mb in growth.items())
        )


if __name__ == "__main__":
    main()
