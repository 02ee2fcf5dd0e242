"""The options of `callrelay simulate`'s commands, and what they mean for a stream."""

from __future__ import annotations

import argparse
from pathlib import Path

from callrelay.simulator.audio_source import default_call_audio
from callrelay.simulator.media_client import StreamOptions

DEFAULT_SERVER = "http://127.0.0.1:6000"
TRANSCRIPTS_TIMEOUT_SECONDS = 60.0
"""How long `call` waits after the stream for the relay's last transcript."""


def _dtmf(text: str) -> tuple[str, float]:
    digit, _, at = text.partition("@")
    if len(digit) != 1 or not at:
        raise argparse.ArgumentTypeError("DTMF is DIGIT@SECONDS, e.g. 5@2.5")
    return digit, float(at)


def stream_options(args: argparse.Namespace) -> StreamOptions:
    return StreamOptions(
        speed=args.speed,
        silence=args.silence,
        drop_rate=args.drop,
        jitter_ms=args.jitter,
        dtmf=tuple(args.dtmf),
        seed=args.seed,
    )


def _add_audio_options(parser: argparse.ArgumentParser) -> None:
    caller, receiver = default_call_audio()
    audio = parser.add_argument_group("audio (default: the bundled 30 s demo call)")
    audio.add_argument(
        "--caller", type=Path, default=caller, help="inbound track: any WAV, FLAC or OGG file"
    )
    audio.add_argument("--receiver", type=Path, default=receiver, help="outbound track")
    delivery = parser.add_argument_group("delivery")
    delivery.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="1 = real time (default), 10 = ten times faster, 0 = as fast as the relay reads",
    )
    delivery.add_argument(
        "--silence",
        choices=("continuous", "skip"),
        default="continuous",
        help="send silent frames (continuous) or leave them out (skip), as some calls do",
    )
    delivery.add_argument("--drop", type=float, default=0.0, help="share of frames lost, 0-1")
    delivery.add_argument("--jitter", type=float, default=0.0, help="burst delay up to this, ms")
    delivery.add_argument(
        "--dtmf",
        type=_dtmf,
        action="append",
        default=[],
        metavar="DIGIT@SECONDS",
        help="send a DTMF digit at a time into the call, e.g. 5@2.5 (repeatable)",
    )
    delivery.add_argument("--seed", type=int, default=1, help="for --drop and --jitter")


def add_call_arguments(parser: argparse.ArgumentParser) -> None:
    """`simulate call`'s options."""
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"the relay (default {DEFAULT_SERVER})"
    )
    parser.add_argument(
        "--public-url", help="the public URL Twilio signs (default PUBLIC_URL, else --server)"
    )
    parser.add_argument(
        "--from", dest="from_number", default="+14155550100", help="the caller's number"
    )
    parser.add_argument(
        "--client",
        metavar="IDENTITY",
        help="be a browser's Voice SDK call instead: From=client:IDENTITY through the TwiML App",
    )
    parser.add_argument(
        "--to",
        default="+14155550111",
        help="with --client: the number the browser dials (default %(default)s)",
    )
    parser.add_argument(
        "--talk",
        action="store_true",
        help="ask for a talk-mode call (<Connect><Stream>): the caller's side only, and what "
        "clients `play` into it is heard, checked and its marks echoed",
    )
    parser.add_argument("--token", help="the relay's API token, to watch Socket.IO")
    parser.add_argument("--quiet", action="store_true", help="do not watch Socket.IO")
    parser.add_argument("--json", action="store_true", help="print each event as one JSON line")
    parser.add_argument(
        "--wait",
        type=float,
        default=TRANSCRIPTS_TIMEOUT_SECONDS,
        help="seconds to wait for the last transcript after the call (default %(default)s)",
    )
    _add_audio_options(parser)


def add_rest_arguments(parser: argparse.ArgumentParser) -> None:
    """`simulate rest`'s options."""
    parser.add_argument(
        "--port", type=int, default=6100, help="loopback port to listen on (default 6100)"
    )
    _add_audio_options(parser)


def add_fuzz_arguments(parser: argparse.ArgumentParser) -> None:
    """`simulate fuzz`'s options."""
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"the relay (default {DEFAULT_SERVER})"
    )
    parser.add_argument("--public-url", help="the public URL Twilio signs")
    parser.add_argument("--messages", type=int, default=3000, help="bad messages to send")
    parser.add_argument("--threads", type=int, default=4, help="connections at once")
    parser.add_argument("--seed", type=int, default=1)
