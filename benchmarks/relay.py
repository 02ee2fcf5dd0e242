"""Benchmark: the relay's cost per call and its frame latency, beside a minimal relay.

    callrelay bench relay [--calls 5,20,40] [--seconds 20] [--listeners per-call|one|none]
                          [--workers N[,N...]] [--core-share F] [--ramp]
                          [--baseline | --no-baseline] [--server URL] [--webhooks off|slow|down]
    (or python -m benchmarks.relay)

For each N it starts the server (`callrelay serve`, recognition off, recording on; or targets
`--server`), plays N simultaneous two-track Twilio streams at real-time pace and has one
Socket.IO listener per call, subscribed by callSid (`--listeners one`: one listener following
every call; `none`: no listener), and prints per N: frames sent / received / lost, frame
latency (due at the simulated Twilio -> `media_in`/`media_out` at the listener) p50 / p95 /
p99 / max, the server's
cores (every process, from /proc), cores per call, the load generator's own cores, and the
server's RSS in all and per call. With `--baseline` (the default) every N runs again against a
minimal relay written here (aiohttp + python-socketio's AsyncServer: Twilio JSON, base64,
mu-law, upsampling, a raw file per track, an emit to the call's room), in the same run, and
the cost of ours is shown as a ratio to it. `--ramp` raises N until p99 passes 50 ms or a
frame is lost, then narrows down the largest N within that. `--workers 1,2` runs each in turn
and prints how the second scales beside the first; `--core-share 0.3` limits each server
process to 0.3 of a core (core_limit.py), a simulated box of WORKERS slower cores that leaves
the load generator cores of its own. `--webhooks slow` posts every call's events to a
receiver that takes 10 s to answer each (the relay's 5 s timeout ends each try, so every
delivery is retried); `--webhooks down` to a port where nothing listens.

The load generator is one asyncio process: messages are formatted from pre-encoded payloads,
and the listeners speak Socket.IO's WebSocket protocol directly, reading only each event's
name, callSid and timestamp, never the audio. Loopback only. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.server
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.core_limit import CoreLimit
from benchmarks.meter import ProcessMeter, percentile
from callrelay.access import generate_token
from callrelay.simulator.audio_source import frames, load_telephone_audio
from callrelay.simulator.local_relay import free_port, start_relay, stop_relay

TEST_AUDIO = Path(__file__).resolve().parents[1] / "tests" / "data" / "call"
FRAME_SECONDS = 0.02
P99_TARGET_MS = 50.0
TRACKS = ("inbound", "outbound")
MEDIA_EVENTS = {"media_in": "inbound", "media_out": "outbound"}


# The load generator.


def call_payloads() -> dict[str, list[str]]:
    """Each track's 20 ms frames of the synthetic call, base64 once."""
    audio = {
        "inbound": load_telephone_audio(TEST_AUDIO / "caller.flac"),
        "outbound": load_telephone_audio(TEST_AUDIO / "receiver.flac"),
    }
    longest = max(len(a) for a in audio.values()) // 160
    return {
        track: [base64.b64encode(f).decode("ascii") for f in frames(mulaw, longest)]
        for track, mulaw in audio.items()
    }


@dataclass
class CallLoad:
    call_sid: str
    stream_sid: str
    started: float = 0.0
    """time.monotonic() when frame 0 was due."""
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRACKS, 0))
    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRACKS, 0))
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    listening: bool = True
    failures: list[str] = field(default_factory=list)


async def play_call(
    session: Any, ws_url: str, call: CallLoad, payloads: dict[str, list[str]], seconds: float
) -> None:
    """One Twilio stream: connected, start, two media messages every 20 ms, stop."""
    ws = await session.ws_connect(ws_url, headers={"User-Agent": "Twilio.TmeWs/1.0"})
    sid = call.stream_sid
    await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC" + "0" * 32,
            "streamSid": sid,
            "callSid": call.call_sid,
            "tracks": list(TRACKS),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {},
        },
        "streamSid": sid,
    }
    await ws.send_str(json.dumps(start))
    count = int(seconds / FRAME_SECONDS)
    length = len(payloads["inbound"])
    sequence = 1
    call.started = time.monotonic() + 0.05
    for index in range(count):
        delay = call.started + index * FRAME_SECONDS - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        timestamp = 5 + 20 * index
        for track in TRACKS:
            sequence += 1
            payload = payloads[track][index % length]
            await ws.send_str(
                f'{{"event":"media","sequenceNumber":"{sequence}","media":{{"track":"{track}",'
                f'"chunk":"{index + 1}","timestamp":"{timestamp}","payload":"{payload}"}},'
                f'"streamSid":"{sid}"}}'
            )
            call.sent[track] += 1
    await ws.send_str(
        json.dumps(
            {
                "event": "stop",
                "sequenceNumber": str(sequence + 1),
                "stop": {"accountSid": "AC" + "0" * 32, "callSid": call.call_sid},
                "streamSid": sid,
            }
        )
    )
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.receive(), 5)
    await ws.close()


async def listen(
    session: Any,
    base_url: str,
    token: str,
    calls: dict[str, CallLoad],
    follow: str | None,
    result: LoadResult,
    done: asyncio.Event,
    connected: asyncio.Event,
) -> None:
    """A Socket.IO client over its WebSocket transport, by hand: the Engine.IO open, the
    Socket.IO connect with `auth`, pongs; for each audio event only its name, callSid and
    timestamp are read. A client following one call names it in the URL too, where a
    balancer hashing on the call can read it."""
    url = base_url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    if follow is not None:
        url += f"&callSid={follow}"
    ws = await session.ws_connect(url, max_msg_size=0)
    opened = await ws.receive_str()
    if not opened.startswith("0"):
        result.failures.append(f"engine.io open: {opened[:80]}")
        return
    auth: dict[str, Any] = {"token": token}
    if follow is not None:
        auth["callSid"] = follow
    await ws.send_str("40" + json.dumps(auth))
    answer = await ws.receive_str()
    if not answer.startswith("40"):
        result.failures.append(f"socket.io connect refused: {answer[:120]}")
        return
    connected.set()
    latencies = result.latencies_ms
    while not done.is_set():
        try:
            message = await asyncio.wait_for(ws.receive(), 0.5)
        except TimeoutError:
            continue
        if message.type != 1:  # aiohttp.WSMsgType.TEXT
            break
        text: str = message.data
        now = time.monotonic()
        if text == "2":
            await ws.send_str("3")
            continue
        if not text.startswith('42["media_'):
            continue
        track = MEDIA_EVENTS[text[4 : text.index('"', 4)]]
        at = text.index('"callSid":"') + 11
        call = calls.get(text[at : at + 34])
        if call is None:
            continue
        at = text.index('"timestamp":', at) + 12
        end = text.index(",", at)
        frame = (int(text[at:end]) - 5) // 20
        latencies.append((now - call.started - frame * FRAME_SECONDS) * 1000)
        call.received[track] += 1
    await ws.close()


async def run_load(
    base_url: str, token: str, calls: int, seconds: float, listeners: str
) -> LoadResult:
    import aiohttp

    payloads = call_payloads()
    loads = {
        sid: CallLoad(sid, "MZ" + os.urandom(16).hex())
        for sid in ("CA" + os.urandom(16).hex() for _ in range(calls))
    }
    result = LoadResult()
    done = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        everyone: list[str | None] = [None]
        follows = everyone if listeners == "one" else [] if listeners == "none" else list(loads)
        ready = [asyncio.Event() for _ in follows]
        clients = [
            asyncio.create_task(
                listen(session, base_url, token, loads, follow, result, done, event)
            )
            for follow, event in zip(follows, ready, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 60)
        ws_url = base_url.replace("http", "ws", 1) + "/stream"
        streams = []
        # Calls start in another order than their listeners connected: behind a round-robin
        # balancer, a call's listener is then on its stream's process only by chance.
        order = list(loads.values())
        random.Random(calls).shuffle(order)
        for index, call in enumerate(order):
            url = f"{ws_url}/{call.call_sid}"  # as the relay's TwiML names it
            streams.append(asyncio.create_task(play_call(session, url, call, payloads, seconds)))
            if index % 10 == 9:
                await asyncio.sleep(FRAME_SECONDS / 2)  # not every call on the same 20 ms tick
        outcomes = await asyncio.gather(*streams, return_exceptions=True)
        result.failures += [repr(o) for o in outcomes if isinstance(o, BaseException)]
        deadline = time.monotonic() + (10 if follows else 0)
        while time.monotonic() < deadline and any(c.received != c.sent for c in loads.values()):
            await asyncio.sleep(0.05)
        done.set()
        outcomes = await asyncio.gather(*clients, return_exceptions=True)
        result.failures += [repr(o) for o in outcomes if isinstance(o, BaseException)]
    result.listening = bool(follows)
    result.sent = sum(sum(c.sent.values()) for c in loads.values())
    result.received = sum(sum(c.received.values()) for c in loads.values())
    return result


# The baseline: a minimal relay, as a user would write one in an afternoon.


def serve_baseline(port: int, captures: Path, token: str) -> None:
    import socketio
    from aiohttp import WSMsgType, web

    from callrelay.audio import Upsampler2x

    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: Any, auth: Any) -> bool:
        if not isinstance(auth, dict) or auth.get("token") != token:
            return False
        await sio.enter_room(sid, auth.get("callSid") or "all")
        return True

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        call_sid = ""
        files: dict[str, Any] = {}
        upsamplers: dict[str, Upsampler2x] = {}
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            event = data.get("event")
            if event == "start":
                call_sid = data["start"]["callSid"]
                folder = captures / call_sid
                folder.mkdir(parents=True, exist_ok=True)
                for track in data["start"]["tracks"]:
                    files[track] = (folder / f"{track}.raw").open("wb")
                    upsamplers[track] = Upsampler2x()
            elif event == "media":
                media = data["media"]
                track = media["track"]
                pcm = upsamplers[track].process_mulaw(base64.b64decode(media["payload"]))
                files[track].write(pcm.tobytes())
                await sio.emit(
                    "media_in" if track == "inbound" else "media_out",
                    {
                        "callSid": call_sid,
                        "streamSid": data["streamSid"],
                        "timestamp": int(media["timestamp"]),
                        "audio": base64.b64encode(pcm.tobytes()).decode("ascii"),
                    },
                    to=[call_sid, "all"],
                )
            elif event == "stop":
                break
        for file in files.values():
            file.close()
        await ws.close()
        return ws

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/stream/{call_sid}", stream)
    app.router.add_get("/", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


@dataclass
class Server:
    name: str
    url: str
    token: str
    pids: list[int]
    stop: Any


def start_ours(tmp: Path, extra_env: dict[str, str]) -> Server:
    """`callrelay serve`; with WORKERS above 1, a redis-server of its own beside it."""
    env = {"ASR_ENGINE": "off", "MAX_CALLS": "10000", **extra_env}
    redis = None
    if env.get("WORKERS", "1") != "1" and "REDIS_URL" not in env:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("WORKERS above 1 needs redis-server (apt-get install redis-server)")
        port = free_port()
        redis = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
    relay = start_relay(tmp, env)

    def stop() -> None:
        stop_relay(relay)
        if redis is not None:
            redis.kill()
            redis.wait()

    return Server("callrelay", relay.url, relay.api_token, [relay.process.pid], stop)


def start_baseline(tmp: Path) -> Server:
    import requests

    port = free_port()
    token = generate_token()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.relay", "--serve-baseline", str(port), str(tmp), token],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(url + "/", timeout=2).ok:
                break
        time.sleep(0.05)

    def stop() -> None:
        process.terminate()
        process.wait(10)

    return Server("baseline", url, token, [process.pid], stop)


@dataclass
class Row:
    server: str
    calls: int
    result: LoadResult
    server_cores: float
    generator_cores: float
    rss_mb: float
    idle_rss_mb: float
    process_cores: list[float]
    """Each of the server's processes, busiest first."""

    @property
    def lost(self) -> int:
        return self.result.sent - self.result.received if self.result.listening else 0

    @property
    def p99(self) -> float:
        return percentile(self.result.latencies_ms, 99)

    def line(self, baseline: Row | None) -> str:
        lat = self.result.latencies_ms
        per_call = self.server_cores / self.calls
        ratio = f"{per_call / (baseline.server_cores / baseline.calls):5.2f}x" if baseline else ""
        return (
            f"{self.server:<9} {self.calls:5d} {self.result.sent:8d} {self.result.received:8d} "
            f"{self.lost:6d} {percentile(lat, 50):7.1f} {percentile(lat, 95):7.1f} "
            f"{percentile(lat, 99):7.1f} {max(lat, default=float('nan')):7.1f} "
            f"{self.server_cores:6.2f} {per_call:7.4f} {ratio:>6} {self.generator_cores:5.2f} "
            f"{self.rss_mb:7.0f} {(self.rss_mb - self.idle_rss_mb) / self.calls:6.2f}"
        )


HEADER = (
    "server    calls     sent recvd     lost     p50     p95     p99     max  cores cores/c "
    " ratio   gen  RSS MB MB/call"
)


SETTLED_CORES = 0.02
"""A server is idle once its processes together take less than this."""


def wait_until_idle(meter: ProcessMeter, timeout: float = 60.0) -> None:
    """A server answers before all of its processes have finished starting (the others are
    still importing and loading): the load begins once they are idle."""
    deadline = time.monotonic() + timeout
    before = meter.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = meter.cpu_seconds()
        if (now - before) / 0.5 < SETTLED_CORES:
            return
        before = now


def measure(server: Server, calls: int, seconds: float, listeners: str) -> Row:
    meter = ProcessMeter(*server.pids)
    wait_until_idle(meter)
    idle_rss = meter.rss_mb()
    generator_before = _own_cpu()
    server_before = meter.cpu_by_process()
    started = time.monotonic()
    result = asyncio.run(run_load(server.url, server.token, calls, seconds, listeners))
    wall = time.monotonic() - started
    rss = meter.peak_rss_mb
    meter.rss_mb()
    server_after = meter.cpu_by_process()
    process_cores = sorted(
        ((seconds - server_before.get(pid, 0.0)) / wall for pid, seconds in server_after.items()),
        reverse=True,
    )
    return Row(
        server.name,
        calls,
        result,
        sum(process_cores),
        (_own_cpu() - generator_before) / wall,
        max(rss, meter.peak_rss_mb),
        idle_rss,
        process_cores,
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(
    target_pids: list[int],
    servers: list[str],
    calls: int,
    seconds: float,
    listeners: str,
    target: str | None,
    extra_env: dict[str, str],
    core_share: float | None = None,
) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for name in servers:
        with tempfile.TemporaryDirectory(prefix="callrelay-bench-") as tmp:
            if target is not None:
                token = os.environ.get("RELAY_API_TOKEN", "")
                server = Server("callrelay", target, token, target_pids, lambda: None)
            elif name == "baseline":
                server = start_baseline(Path(tmp))
            else:
                server = start_ours(Path(tmp), extra_env)
            limit = CoreLimit(core_share) if core_share else None
            try:
                if limit is not None:
                    limit.apply(ProcessMeter(*server.pids).pids())
                rows[name] = measure(server, calls, seconds, listeners)
            finally:
                server.stop()
                if limit is not None:
                    limit.remove()
    return rows


SLOW_RECEIVER_SECONDS = 10.0


def webhook_receiver(slow: bool) -> dict[str, str]:
    """The server's webhook settings: a receiver here that answers each delivery after
    `SLOW_RECEIVER_SECONDS` (`slow`), or a loopback port where nothing listens."""
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    if not slow:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # closed again: connections to it are refused
        return {"WEBHOOK_URL": f"http://127.0.0.1:{port}/hooks", "WEBHOOK_SECRET": secret}

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(SLOW_RECEIVER_SECONDS)
            with contextlib.suppress(OSError):
                self.send_response(204)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return {
        "WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hooks",
        "WEBHOOK_SECRET": secret,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="5,20,40", help="comma-separated loads")
    parser.add_argument("--seconds", type=float, default=20.0, help="each call's length")
    parser.add_argument(
        "--listeners",
        choices=("per-call", "one", "none"),
        default="per-call",
        help="one listener per call (default), one following every call, or none",
    )
    parser.add_argument("--ramp", action="store_true", help="raise N until p99 > 50 ms or loss")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--workers",
        default="1",
        help="the server's WORKERS, or several, comma-separated, each in turn and their "
        "scaling beside the first (above 1: with a redis-server)",
    )
    parser.add_argument(
        "--core-share",
        type=float,
        help="limit each server process to this share of a core (a cgroup each; needs root): "
        "a simulated box of WORKERS slower cores, with the rest left to the load generator",
    )
    parser.add_argument("--server", help="a running relay to target (RELAY_API_TOKEN its token)")
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="--server's process, to meter (repeatable: each host's)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the server (repeatable)",
    )
    parser.add_argument(
        "--webhooks",
        choices=("off", "slow", "down"),
        default="off",
        help="post each call's events to a receiver that takes 10 s to answer, or to none",
    )
    parser.add_argument("--serve-baseline", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        port, captures, token = args.serve_baseline
        serve_baseline(int(port), Path(captures), token)
        return
    extra_env = dict(item.split("=", 1) for item in args.env)
    if args.webhooks != "off":
        extra_env.update(webhook_receiver(slow=args.webhooks == "slow"))
    servers = ["callrelay"] + (["baseline"] if args.baseline and not args.server else [])
    loads = [int(n) for n in args.calls.split(",")]
    listeners = {
        "per-call": "one listener per call",
        "one": "one listener following every call",
        "none": "no listener",
    }[args.listeners]
    print(
        f"{args.seconds:.0f} s calls, both tracks in real time, {listeners}; "
        f"latency in ms, frame due -> listener; RSS per call beyond the idle server"
    )
    if args.core_share:
        print(
            f"each server process limited to {args.core_share:g} of a core (a simulated box "
            f"of WORKERS such cores; Redis and the load generator not limited)"
        )
    sweeps: dict[int, Sweep] = {}
    for workers in [int(n) for n in args.workers.split(",")]:
        env = {**extra_env, **({"WORKERS": str(workers)} if workers != 1 else {})}
        print(f"WORKERS={workers}")
        print(HEADER)
        sweeps[workers] = sweep(args, loads, servers, env)
    if len(sweeps) > 1:
        print_scaling(sweeps, args.ramp)


@dataclass
class Sweep:
    rows: dict[int, Row] = field(default_factory=dict)
    """Ours, by load."""
    carried: int | None = None
    """With --ramp: the largest load within p99 <= 50 ms and no loss."""


def within_target(row: Row) -> bool:
    return row.p99 <= P99_TARGET_MS and not row.lost


def sweep(args: Any, loads: list[int], servers: list[str], env: dict[str, str]) -> Sweep:
    """Each load of `loads` in turn; with --ramp, from the first load up by a quarter until a
    load misses the target, then halving the step between the last load within it and the
    first past it, down to 5%."""
    found = Sweep()
    calls: int | None = loads[0]
    index, failed = 0, None
    while calls is not None:
        rows = run(
            args.server_pid,
            servers,
            calls,
            args.seconds,
            args.listeners,
            args.server,
            env,
            args.core_share,
        )
        print_rows(rows, servers)
        ours = found.rows[calls] = rows["callrelay"]
        if not args.ramp:
            index += 1
            calls = loads[index] if index < len(loads) else None
            continue
        if within_target(ours):
            found.carried = max(found.carried or 0, calls)
        else:
            failed = min(failed or calls, calls)
        low = found.carried or 0
        if failed is None:
            calls = calls + max(5, calls // 4)
        elif failed - low > max(1, round(low * 0.05)):
            calls = (low + failed) // 2 if low else max(1, failed // 2)
        else:
            calls = None
    if args.ramp:
        print(
            f"ramp: the largest load within p99 <= {P99_TARGET_MS:.0f} ms and no loss: "
            f"{found.carried or 'none'} calls"
        )
    return found


def print_rows(rows: dict[str, Row], servers: list[str]) -> None:
    baseline = rows.get("baseline")
    for name in servers:
        print(rows[name].line(baseline if name != "baseline" else None), flush=True)
        if len(rows[name].process_cores) > 2:
            busy = [f"{cores:.2f}" for cores in rows[name].process_cores if cores >= 0.01]
            print(f"    cores of each process, busiest first: {' '.join(busy)}")
        for failure in rows[name].result.failures[:3]:
            print(f"    failure: {failure}")


def print_scaling(sweeps: dict[int, Sweep], ramp: bool) -> None:
    """Each WORKERS beside the first: the calls it carried (--ramp), and its cores per call
    where both ran the same load."""
    first_workers, first = next(iter(sweeps.items()))
    print(f"scaling, beside WORKERS={first_workers}:")
    for workers, other in list(sweeps.items())[1:]:
        parts = [f"WORKERS={workers}:"]
        if ramp and first.carried and other.carried:
            parts.append(
                f"carries {other.carried / first.carried:.2f}x the calls "
                f"({other.carried} / {first.carried})"
            )
        common = sorted(set(first.rows) & set(other.rows))
        for calls in common[-1:] if ramp else common:
            mine, theirs = other.rows[calls], first.rows[calls]
            per_call = (mine.server_cores / calls) / (theirs.server_cores / calls)
            parts.append(f"cores per call at {calls} calls {per_call:.2f}x")
        if ramp and first.carried and other.carried:
            mine, theirs = other.rows[other.carried], first.rows[first.carried]
            per_call = (mine.server_cores / mine.calls) / (theirs.server_cores / theirs.calls)
            parts.append(f"at the loads each carried {per_call:.2f}x")
        print(f"  {parts[0]} {'; '.join(parts[1:])}")


if __name__ == "__main__":
    main()
