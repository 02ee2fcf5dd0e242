"""Benchmark: SIGKILL a real server mid-call, again and again; count what the recordings kept.

    callrelay bench kill-recovery [--rounds 20] [--seconds 6]
    (or python -m benchmarks.kill_recovery)

Each round starts `callrelay serve` on one captures folder, streams a call in real time, kills the
server (master and worker, SIGKILL) at a random moment, then checks every WAV as the kill left it
(a valid WAV? how much of what was streamed does it hold?) and once more after the next start
has repaired the folder. Prints kills survived, bytes recovered and the audio lost per kill.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

from benchmarks.meter import ProcessMeter
from callrelay.recording import HEADER_BYTES
from callrelay.simulator.audio_source import default_call_audio, load_telephone_audio
from callrelay.simulator.local_relay import start_relay, stop_relay
from callrelay.simulator.media_client import StreamOptions, StreamReport, new_sid, play_stream
from callrelay.twilio.media_stream import Track

RATE = 16000


def wav_seconds(path: Path) -> float | None:
    """Seconds the header says the WAV holds; None if it is no valid WAV or claims too much."""
    try:
        with wave.open(str(path)) as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
    except (wave.Error, EOFError, OSError):
        return None
    if rate != RATE or HEADER_BYTES + 2 * frames > path.stat().st_size:
        return None
    return float(frames / rate)


def kill_round(
    captures_parent: Path, audio: dict[Track, bytes], kill_after: float, seconds: float
) -> tuple[float, list[float | None]]:
    relay = start_relay(captures_parent, {"ASR_ENGINE": "off"})
    call_sid = new_sid("CA")
    reports: list[StreamReport] = []
    streamer = threading.Thread(
        target=lambda: reports.append(
            play_stream(
                relay.stream_target(), audio, call_sid=call_sid, options=StreamOptions(speed=1)
            )
        )
    )
    streamer.start()
    time.sleep(kill_after)
    pids = ProcessMeter(relay.process.pid).pids()
    killed_at = time.monotonic()
    for pid in reversed(pids):
        os.kill(pid, signal.SIGKILL)
    relay.process.wait(10)
    streamer.join(seconds + 10)
    streamed = min(seconds, killed_at - reports[0].started_at)
    folder = relay.captures / call_sid
    return streamed, [wav_seconds(folder / name) for name in ("caller.wav", "receiver.wav")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    caller, receiver = default_call_audio()
    size = int(8000 * args.seconds)
    audio: dict[Track, bytes] = {
        "inbound": load_telephone_audio(caller)[:size],
        "outbound": load_telephone_audio(receiver)[:size],
    }
    losses: list[float] = []
    invalid = 0
    with tempfile.TemporaryDirectory() as tmp:
        parent = Path(tmp)
        for round_number in range(args.rounds):
            kill_after = rng.uniform(0.5, args.seconds - 0.5)
            streamed, recorded = kill_round(parent, audio, kill_after, args.seconds)
            invalid += sum(r is None for r in recorded)
            losses += [max(0.0, streamed - r) for r in recorded if r is not None]
            print(
                f"round {round_number + 1:2d}: killed {streamed:.2f} s in, WAVs hold "
                + ", ".join("invalid" if r is None else f"{r:.2f} s" for r in recorded)
            )
        # The next start repairs what the kills left; every header must then match its file.
        relay = start_relay(parent, {"ASR_ENGINE": "off"})
        stop_relay(relay)
        wavs = sorted((parent / "captures").glob("*/*.wav"))
        consistent = sum(
            (s := wav_seconds(p)) is not None
            and HEADER_BYTES + round(s * RATE) * 2 == p.stat().st_size
            for p in wavs
        )
        recovered = sum(p.stat().st_size - HEADER_BYTES for p in wavs)
    kills = args.rounds
    print()
    print(f"kills: {kills}; WAVs valid as the kill left them: {2 * kills - invalid}/{2 * kills}")
    print(f"after the next start's repair, headers matching their files: {consistent}/{len(wavs)}")
    print(f"audio recovered: {recovered:,} bytes ({recovered / 2 / RATE:.1f} s of PCM)")
    print(
        "audio lost per kill (streamed - on disk): "
        f"p50 {np.percentile(losses, 50) * 1000:.0f} ms, max {max(losses) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
