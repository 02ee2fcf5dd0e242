"""What several test modules share: credentials, the relay as a process, test audio, waiting."""

from __future__ import annotations

import base64
import csv
import itertools
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import soundfile
from simple_websocket import Client, ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Request

from callrelay.audio import Upsampler2x
from callrelay.call import AudioChunk, CallInfo, CallSink
from callrelay.simulator import local_relay
from callrelay.simulator.audio_source import frames, load_telephone_audio
from callrelay.simulator.conversation import Conversation, build_conversation
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.local_relay import RunningRelay
from callrelay.simulator.media_client import StreamOptions, StreamReport, new_sid, play_stream
from callrelay.twilio import media_stream as msg

ACCOUNT_SID = "AC" + "5" * 32
AUTH_TOKEN = "test-auth-token-0123456789"
API_KEY = "SK" + "6" * 32
API_SECRET = "test-api-secret-0123456789abcdef"  # 32 characters, as Twilio makes them
APP_SID = "AP" + "7" * 32
TWILIO_NUMBER = "+15005550006"
RELAY_TOKEN = "test-relay-api-token-0123456789"

start_relay = partial(local_relay.start_relay, api_token=RELAY_TOKEN)
"""The relay as `callrelay serve`, with the token the tests know."""


HUNG_SECONDS = 180.0
"""How long a test waits for an event before it calls the relay hung: transcription on a busy
2-core machine takes many times longer than on a quiet one, and a test waits on the event."""


def wait_for(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    """Check `predicate()` until it holds, for state kept in another process (a file, a log);
    fail the test when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def wait_until_recorded(relay: RunningRelay, call_sid: str, seconds: float) -> None:
    """Wait until the relay has recorded `seconds` of the call's caller track: a point in the
    call that the relay has reached, not one the test's clock guesses."""
    path = relay.captures / call_sid / "caller.wav"
    wanted = 44 + int(seconds * 16000) * 2

    def recorded() -> bool:
        try:
            return path.stat().st_size >= wanted
        except OSError:
            return False

    wait_for(recorded, timeout=seconds + 30)


def wait_until_ended(relay: RunningRelay, call_sid: str, timeout: float = 30.0) -> None:
    """Wait until the relay has ended the call's stream: its recordings are final and its
    history says so (`stream_ended` in `call.jsonl`), however long a busy machine takes."""
    log = relay.captures / call_sid / "call.jsonl"

    def ended() -> bool:
        try:
            return '"event": "stream_ended"' in log.read_text()
        except OSError:
            return False

    wait_for(ended, timeout=timeout)


def callrelay(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the `callrelay` command as a user would; `env` adds to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "callrelay", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


# Test audio: the repository's own (tests/data).

DATA = Path(__file__).resolve().parent / "data"
CALL_DIR = DATA / "call"
"""A synthetic two-party call with exact turns."""
REAL_DIR = DATA / "real"
"""Real human speech with reference transcripts."""


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """A mono PCM16 test file's samples and rate."""
    samples, rate = soundfile.read(str(path), dtype="int16")
    assert samples.ndim == 1
    return samples, rate


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A recording the relay wrote, read strictly as a mono PCM16 WAV."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return data.astype(np.int16), wav.getframerate()


def synthetic_call() -> tuple[Path, Path]:
    """The synthetic call's caller and receiver files."""
    return CALL_DIR / "caller.flac", CALL_DIR / "receiver.flac"


def real_speech_call() -> Conversation:
    """Every real clip, alternating between caller and receiver."""
    with (REAL_DIR / "transcripts.tsv").open() as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    return build_conversation([(REAL_DIR / row["file"], row["transcript"]) for row in rows])


SECONDS = 4


def call_audio(seconds: float = SECONDS) -> dict[msg.Track, bytes]:
    """The first `seconds` of the synthetic call, as Twilio would send each track."""
    caller, receiver = synthetic_call()
    size = int(8000 * seconds)
    return {
        "inbound": load_telephone_audio(caller)[:size],
        "outbound": load_telephone_audio(receiver)[:size],
    }


def expected_pcm(mulaw: bytes) -> np.ndarray:
    """What the relay must make of a track, frame by frame."""
    upsampler = Upsampler2x()
    return np.concatenate([upsampler.process_mulaw(f) for f in frames(mulaw)])


def decode(event: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(event["audio"]), dtype="<i2")


# Talking to a relay.


def stream_call(
    relay: RunningRelay,
    audio: dict[msg.Track, bytes],
    options: StreamOptions,
    call_sid: str | None = None,
    hang_up: threading.Event | None = None,
) -> StreamReport:
    return play_stream(
        relay.stream_target(),
        audio,
        call_sid=call_sid or new_sid("CA"),
        options=options,
        custom_parameters={"campaign": "e2e"},
        hang_up=hang_up,
    )


def raw_stream(relay: RunningRelay) -> Client:
    return Client.connect(relay.ws_url, headers=relay.stream_headers())


def raw_call(relay: RunningRelay, call_sid: str, stream_sid: str) -> Client:
    """A Twilio stream opened by hand, past `connected` and `start`, for tests that misbehave."""
    ws = raw_stream(relay)
    ws.send(msg.connected_message())
    ws.send(
        msg.start_message(
            stream_sid=stream_sid,
            account_sid="AC" + "0" * 32,
            call_sid=call_sid,
            tracks=("inbound", "outbound"),
            custom_parameters={},
            sequence_number=1,
        )
    )
    return ws


def one_frame_then_stop(ws: Client, call_sid: str, stream_sid: str, spoil: bool = False) -> int:
    """On a call opened with `raw_call`: one inbound frame (with `spoil`, one whose payload is
    not base64), then `stop`; the close code the server ended the socket with."""
    media = msg.media_message(
        stream_sid=stream_sid,
        track="inbound",
        chunk=1,
        timestamp_ms=5,
        payload=b"\xff" * 160,
        sequence_number=2,
    )
    ws.send(media.replace('"payload": "', '"payload": "!!!') if spoil else media)
    ws.send(
        msg.stop_message(
            stream_sid=stream_sid,
            account_sid="AC" + "0" * 32,
            call_sid=call_sid,
            sequence_number=3,
        )
    )
    return closed_with(ws)


def closed_with(ws: Client, timeout: float = 5) -> int:
    """The close code the server ended the socket with (-1 if it stayed open)."""
    try:
        while ws.receive(timeout=timeout) is not None:
            pass
    except ConnectionClosed:
        return int(ws.close_reason)
    return -1


class RawClient:
    """A WebSocket client with nothing between the test and the frames (wsproto, one socket)."""

    def __init__(self, relay: RunningRelay) -> None:
        url = urlsplit(relay.ws_url)
        assert url.hostname and url.port
        self.sock = socket.create_connection((url.hostname, url.port), timeout=5)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [(k.encode(), v.encode()) for k, v in relay.stream_headers().items()]
        self.sock.sendall(
            self.ws.send(Request(host=url.netloc, target=url.path, extra_headers=headers))
        )
        assert isinstance(self.next_event(), AcceptConnection)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def next_event(self, timeout: float = 5.0) -> Event | None:
        """The next event from the server; None when the connection has ended (EOF)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.ws.events():
                return event
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(4096)
            if not data:
                return None
            self.ws.receive_data(data)


# The call pipeline without sockets.


@dataclass
class RememberingSink(CallSink):
    """A sink that keeps what it hears."""

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


# A real Redis server.


@dataclass
class RedisServer:
    """`redis-server` on a loopback port of its own, with nothing saved to disk."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (.ci/run installs Debian's redis-server)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    return probe.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(answers, timeout=10)
        return self

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def simulated_twilio(seconds: float, speed: float) -> FakeTwilio:
    """The Twilio simulator, started, playing the first `seconds` of the synthetic call on each
    call it is asked to place (at `speed`; 0 is flat out)."""
    audio = call_audio(seconds)
    return FakeTwilio(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        api_key=API_KEY,
        api_secret=API_SECRET,
        caller_audio=audio["inbound"],
        receiver_audio=audio["outbound"],
        stream_options=StreamOptions(speed=speed),
    ).start()


def calling_settings(fake: FakeTwilio) -> dict[str, str]:
    """A relay's environment for placing calls through `fake` (and browsers through the App)."""
    return {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_KEY": API_KEY,
        "TWILIO_API_SECRET": API_SECRET,
        "TWILIO_APP_SID": APP_SID,
        "TWILIO_NUMBER": TWILIO_NUMBER,
        "TWILIO_API_BASE": fake.base_url,
        "PUBLIC_URL": "http://127.0.0.1:{port}",
    }
