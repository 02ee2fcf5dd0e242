"""`python -m callrelay.simulator`: be Twilio for a running relay.

call   a call straight to the relay: the signed `/voice` webhook, then the media stream with
       two audio files as caller and receiver; prints progress and the Socket.IO events.
rest   the fake Twilio REST API; start the relay with TWILIO_API_BASE pointing at it and
       `POST /make-call` plays calls through it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

import requests

from callrelay.access import read_token_file
from callrelay.config import load_settings
from callrelay.simulator.audio_source import default_call_audio, load_telephone_audio
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.media_client import (
    StreamOptions,
    StreamTarget,
    new_sid,
    play_stream,
)
from callrelay.simulator.observer import RelayObserver
from callrelay.simulator.twiml_reader import read_twiml
from callrelay.twilio.signatures import sign


def _dtmf(text: str) -> tuple[str, float]:
    digit, _, at = text.partition("@")
    if len(digit) != 1 or not at:
        raise argparse.ArgumentTypeError("DTMF is DIGIT@SECONDS, e.g. 5@2.5")
    return digit, float(at)


def _stream_options(args: argparse.Namespace) -> StreamOptions:
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
    parser.add_argument("--caller", type=Path, default=caller, help="inbound track audio file")
    parser.add_argument("--receiver", type=Path, default=receiver, help="outbound track audio file")
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="1 = real time, 10 = ten times faster, 0 = as fast as possible",
    )
    parser.add_argument(
        "--silence",
        choices=("continuous", "skip"),
        default="continuous",
        help="send silent frames (continuous) or leave them out (skip)",
    )
    parser.add_argument("--drop", type=float, default=0.0, help="share of frames to drop")
    parser.add_argument("--jitter", type=float, default=0.0, help="max burst delay in ms")
    parser.add_argument(
        "--dtmf",
        type=_dtmf,
        action="append",
        default=[],
        help="send a DTMF digit at a time, e.g. 5@2.5 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=1)


def _print_event(name: str, data: Any) -> None:
    print(f"  <- {name} {json.dumps(data)}", flush=True)


def run_call(args: argparse.Namespace) -> int:
    settings = load_settings()
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    server = args.server.rstrip("/")
    public = (args.public_url or settings.public_url or server).rstrip("/")
    call_sid = new_sid("CA")
    account_sid = settings.twilio_account_sid or "AC" + "0" * 32
    params = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": settings.twilio_number or "+15005550006",
        "Caller": args.from_number,
        "Direction": "inbound",
        "From": args.from_number,
        "To": settings.twilio_number or "+15005550006",
    }
    headers = {"X-Twilio-Signature": sign(token, f"{public}/voice", params)} if token else {}
    print(f"-> POST {server}/voice  (CallSid {call_sid})", flush=True)
    response = requests.post(f"{server}/voice", data=params, headers=headers, timeout=10)
    if response.status_code != 200:
        print(f"/voice answered {response.status_code}: {response.text[:200]}", file=sys.stderr)
        return 1
    script = read_twiml(response.text)
    if script.stream is None:
        print("the TwiML starts no <Stream>; nothing to play", file=sys.stderr)
        return 1
    stream_url = script.stream.url
    connect_url = server.replace("http", "ws", 1) + "/stream"
    print(f"   TwiML streams {','.join(script.stream.tracks)} to {stream_url}", flush=True)
    api_token = (
        args.token
        or (settings.relay_api_token.get_secret_value() if settings.relay_api_token else None)
        or read_token_file()
    )
    observer = (
        None
        if args.quiet
        else RelayObserver(server, _print_event, call_sid=call_sid, token=api_token)
    )
    audio = {
        "inbound": load_telephone_audio(args.caller),
        "outbound": load_telephone_audio(args.receiver),
    }

    def progress(done: float, total: float) -> None:
        print(f"   streaming {done:5.1f} / {total:.1f} s", flush=True)

    report = play_stream(
        StreamTarget(connect_url, stream_url, token),
        {track: audio[track] for track in script.stream.tracks},
        call_sid=call_sid,
        account_sid=account_sid,
        custom_parameters=script.stream.parameters,
        options=_stream_options(args),
        progress=progress,
    )
    if observer is not None:
        observer.ended.wait(10)
        observer.close()
        print(f"   Socket.IO events: {dict(observer.counts)}")
    print(
        f"done: {report.frames_sent} frames sent, {report.frames_dropped} dropped, "
        f"{report.frames_skipped_silent} silent skipped, {report.seconds:.1f} s"
        + (f", server closed {report.server_closed}" if report.server_closed else "")
    )
    for warning in report.warnings[:5]:
        print("   warning:", warning)
    return 0 if report.server_closed is None else 1


def run_rest(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.twilio_account_sid is None or settings.twilio_auth_token is None:
        print(
            "the fake REST API needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (any values of "
            "the right shape; the relay must use the same)",
            file=sys.stderr,
        )
        return 2
    fake = FakeTwilio(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        api_key=settings.twilio_api_key,
        api_secret=(
            settings.twilio_api_secret.get_secret_value() if settings.twilio_api_secret else None
        ),
        caller_audio=load_telephone_audio(args.caller),
        receiver_audio=load_telephone_audio(args.receiver),
        stream_options=_stream_options(args),
        port=args.port,
    ).start()
    print(
        f"fake Twilio REST API on {fake.base_url}; start the relay with "
        f"TWILIO_API_BASE={fake.base_url}",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m callrelay.simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    call = commands.add_parser("call", help="stream a call to a running relay")
    call.add_argument("--server", default="http://127.0.0.1:6000", help="the relay's URL")
    call.add_argument(
        "--public-url", help="the public URL Twilio would sign (default PUBLIC_URL or --server)"
    )
    call.add_argument("--from", dest="from_number", default="+14155550100")
    call.add_argument("--quiet", action="store_true", help="do not watch Socket.IO")
    call.add_argument(
        "--token",
        help="the relay's API token, to watch Socket.IO (default "
        "RELAY_API_TOKEN or the .callrelay-token file the relay wrote)",
    )
    _add_audio_options(call)
    call.set_defaults(run=run_call)
    rest = commands.add_parser("rest", help="run the fake Twilio REST API")
    rest.add_argument("--port", type=int, default=6100)
    _add_audio_options(rest)
    rest.set_defaults(run=run_rest)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
