"""`callrelay simulate`: be Twilio for a running relay.

call   one call straight to the relay: the signed `/voice` webhook, then the media stream with
       two audio files as caller and receiver; prints each Socket.IO event it receives as one
       line, waits for the last transcript and ends with a summary.
rest   the fake Twilio REST API: start the relay with TWILIO_API_BASE pointing at it and
       `POST /make-call` plays calls through it.
fuzz   a hostile Media Streams peer: bad input on many connections, then how each was closed.
"""

from __future__ import annotations

import argparse
import sys
import threading
from urllib.parse import urlsplit

import requests

from callrelay.access import read_token_file, token_file
from callrelay.config import Settings, load_settings
from callrelay.simulator.arguments import (
    add_call_arguments,
    add_fuzz_arguments,
    add_rest_arguments,
    stream_options,
)
from callrelay.simulator.audio_source import UnreadableAudio, load_telephone_audio
from callrelay.simulator.call_report import CallPrinter, print_summary
from callrelay.simulator.fake_twilio import FakeTwilio
from callrelay.simulator.fuzz import fuzz_streams
from callrelay.simulator.media_client import (
    StreamReport,
    StreamTarget,
    new_sid,
    play_stream,
)
from callrelay.simulator.observer import RelayObserver, RelayRefused
from callrelay.simulator.twiml_reader import CallScript, TwimlError, read_twiml
from callrelay.twilio.media_stream import Track
from callrelay.twilio.signatures import sign


def _api_token(args: argparse.Namespace, settings: Settings, server: str) -> str | None:
    """--token, else RELAY_API_TOKEN, else the file the relay on `server`'s port saved here."""
    if args.token:
        return str(args.token)
    if settings.relay_api_token is not None:
        return settings.relay_api_token.get_secret_value()
    return read_token_file(token_file(urlsplit(server).port or 80))


def _voice_params(args: argparse.Namespace, settings: Settings, call_sid: str) -> dict[str, str]:
    """What Twilio posts to `/voice` for this call: an inbound call, or a browser's."""
    number = settings.twilio_number or "+15005550006"
    params = {
        "AccountSid": settings.twilio_account_sid or "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": number,
        "Caller": args.from_number,
        "Direction": "inbound",
        "From": args.from_number,
        "To": number,
    }
    if args.client:
        # What Twilio posts to a TwiML App's voice URL for `device.connect({params: {To}})`.
        client = f"client:{args.client}"
        params.update(
            ApplicationSid=settings.twilio_app_sid or "AP" + "0" * 32,
            Called="",
            Caller=client,
            From=client,
            To=args.to,
        )
    return params


class _CallFailed(Exception):
    """`simulate call` cannot go on; the message says why and what to do."""


def _watch(
    args: argparse.Namespace, settings: Settings, server: str, call_sid: str, printer: CallPrinter
) -> RelayObserver | None:
    """The Socket.IO client that prints the call's events (None with --quiet)."""
    if args.quiet:
        return None
    try:
        observer = RelayObserver(
            server, printer.event, call_sid=call_sid, token=_api_token(args, settings, server)
        )
    except RelayRefused as refused:
        raise _CallFailed(
            f"wrong API token: the relay at {server} refused it ({refused}). Pass the one "
            "`callrelay serve` printed with --token, or set RELAY_API_TOKEN"
        ) from None
    except Exception as error:
        raise _CallFailed(f"cannot watch Socket.IO ({error})") from None
    printer.media = observer.counts
    return observer


def _ask_for_twiml(
    args: argparse.Namespace, settings: Settings, server: str, params: dict[str, str]
) -> CallScript:
    """Post the signed `/voice` webhook, as Twilio does when the call comes in."""
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    public = (args.public_url or settings.public_url or server).rstrip("/")
    voice = "/voice?mode=talk" if args.talk else "/voice"
    headers = {"X-Twilio-Signature": sign(token, f"{public}{voice}", params)} if token else {}
    try:
        response = requests.post(f"{server}{voice}", data=params, headers=headers, timeout=10)
    except requests.ConnectionError:
        raise _CallFailed(
            f"no relay answers at {server}; start one with `callrelay serve` (or pass --server)"
        ) from None
    if response.status_code != 200:
        raise _CallFailed(f"/voice answered {response.status_code}: {response.text[:200]}")
    try:
        script = read_twiml(response.text)
    except TwimlError as error:
        raise _CallFailed(f"Twilio would refuse the relay's TwiML: {error}") from None
    if script.stream is None:
        said = " ".join(script.said)
        raise _CallFailed(
            "the TwiML starts no <Stream>; nothing to play"
            + (f" (it says: {said})" if said else "")
        )
    return script


def run_call(args: argparse.Namespace) -> int:
    """One call: its audio and the relay's token checked first, then the webhook, then the
    stream, then the summary. Nothing reaches the relay before the inputs are good."""
    settings = load_settings()
    server = args.server.rstrip("/")
    call_sid = new_sid("CA")
    printer = CallPrinter(as_json=args.json)
    observer = None
    try:
        audio: dict[Track, bytes] = {
            "inbound": load_telephone_audio(args.caller),
            "outbound": load_telephone_audio(args.receiver),
        }
        transcribing = _relay_transcribes(server)
        observer = _watch(args, settings, server, call_sid, printer)
        params = _voice_params(args, settings, call_sid)
        printer.say(f"call {call_sid} from {params['From']}: POST {server}/voice")
        script = _ask_for_twiml(args, settings, server, params)
    except (UnreadableAudio, _CallFailed) as error:
        if observer is not None:
            observer.close()
        print(f"callrelay simulate: {error}", file=sys.stderr)
        return 1
    report = _stream_call(args, settings, server, script, audio, params, printer, observer)
    transcripts_complete = True
    if observer is not None:
        observer.ended.wait(10)
        if transcribing:
            transcripts_complete = observer.transcription_ended.wait(args.wait)
        observer.completed.wait(10)  # the call's analytics, once it is complete
        observer.close()
    print_summary(
        printer, report, settings, observer is not None, transcribing, transcripts_complete
    )
    return 0 if report.server_closed is None else 1


def _stream_call(
    args: argparse.Namespace,
    settings: Settings,
    server: str,
    script: CallScript,
    audio: dict[Track, bytes],
    params: dict[str, str],
    printer: CallPrinter,
    observer: RelayObserver | None,
) -> StreamReport:
    """Play the call's media stream as the TwiML asked for it, printing progress."""
    assert script.stream is not None
    if script.dial:
        printer.say(f"TwiML dials {script.dial} (caller ID {script.caller_id or 'unset'})")
    stream_url = script.stream.url
    # The TwiML names the public URL Twilio would dial (and sign); this connects to the relay
    # itself, at the same /stream path (with the call's SID, when the TwiML carries it).
    connect_url = server.replace("http", "ws", 1) + "/stream" + stream_url.rsplit("/stream", 1)[1]
    printer.say(f"TwiML streams {' and '.join(script.stream.tracks)} to {stream_url}")

    def progress(done: float, total: float) -> None:
        if done and observer is not None:
            printer.say(
                f"         streamed {done:5.1f} / {total:.1f} s; media relayed: "
                + printer.media_counts()
            )

    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    return play_stream(
        StreamTarget(connect_url, stream_url, token),
        {track: audio[track] for track in script.stream.tracks},
        call_sid=params["CallSid"],
        account_sid=params["AccountSid"],
        custom_parameters=script.stream.parameters,
        options=stream_options(args),
        progress=progress,
        bidirectional=script.stream.bidirectional,
    )


def _relay_transcribes(server: str) -> bool:
    """Whether the relay at `server` transcribes (its `GET /`); `_CallFailed` if none answers."""
    try:
        health = requests.get(f"{server}/", timeout=10).json()
    except requests.ConnectionError:
        raise _CallFailed(
            f"no relay answers at {server}; start one with `callrelay serve` (or pass --server)"
        ) from None
    except (requests.RequestException, ValueError):
        return False
    return bool(isinstance(health, dict) and health.get("asr", {}).get("engine", "off") != "off")


def run_rest(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.twilio_account_sid is None or settings.twilio_auth_token is None:
        print(
            "callrelay simulate rest: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (any values "
            "of the right shape, e.g. AC followed by 32 hex digits); the relay must use the "
            "same ones",
            file=sys.stderr,
        )
        return 2
    try:
        fake = FakeTwilio(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            api_key=settings.twilio_api_key,
            api_secret=(
                settings.twilio_api_secret.get_secret_value()
                if settings.twilio_api_secret
                else None
            ),
            caller_audio=load_telephone_audio(args.caller),
            receiver_audio=load_telephone_audio(args.receiver),
            stream_options=stream_options(args),
            port=args.port,
        ).start()
    except OSError as error:
        print(
            f"callrelay simulate rest: cannot listen on port {args.port}: {error}", file=sys.stderr
        )
        return 1
    print(
        f"fake Twilio REST API on {fake.base_url}\n"
        f"  start the relay with TWILIO_API_BASE={fake.base_url}, the same TWILIO_ACCOUNT_SID "
        "and TWILIO_AUTH_TOKEN, a TWILIO_NUMBER and PUBLIC_URL=<the relay's own URL>;\n"
        "  then POST /make-call on the relay. Ctrl-C stops.",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()
    return 0


def run_fuzz(args: argparse.Namespace) -> int:
    settings = load_settings()
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    url = args.server.rstrip("/").replace("http", "ws", 1) + "/stream"
    public = (args.public_url or settings.public_url or args.server).rstrip("/")
    signed = public.replace("http", "ws", 1) + "/stream"
    report = fuzz_streams(
        StreamTarget(url, signed, token), args.messages, threads=args.threads, seed=args.seed
    )
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(report.close_codes.items()))
    print(
        f"sent {report.messages} bad messages on {report.connections} connections; "
        f"closed by the relay with {codes or 'nothing'}"
        + (f"; {report.refused_handshakes} handshakes refused" if report.refused_handshakes else "")
    )
    return 0 if report.connections and not report.refused_handshakes else 1


def add_commands(parser: argparse.ArgumentParser) -> None:
    """The `simulate` sub-commands, on `parser`."""
    commands = parser.add_subparsers(dest="simulation", required=True, metavar="COMMAND")
    call = commands.add_parser(
        "call",
        help="stream one call to a running relay and print what its clients see",
        description="Be Twilio for one inbound call: post the signed /voice webhook, read the "
        "TwiML, open /stream and play the caller and receiver audio, while a Socket.IO client "
        "prints every event. Waits for the last transcript, then prints a summary.",
        epilog="environment: TWILIO_AUTH_TOKEN (signs the requests, as the relay checks them), "
        "RELAY_API_TOKEN (to watch Socket.IO; else the .callrelay-token file the relay wrote "
        "in this folder), PUBLIC_URL, TWILIO_ACCOUNT_SID, TWILIO_NUMBER, CAPTURES_DIR (for the "
        "paths in the summary)",
    )
    add_call_arguments(call)
    call.set_defaults(run=run_call)

    rest = commands.add_parser(
        "rest",
        help="run a fake Twilio REST API that plays the calls the relay places",
        description="A fake of api.twilio.com on loopback: Calls.create answers 201 with a Call "
        "resource, then plays the call against the relay (status callbacks, the signed /voice "
        "webhook, the media stream); Status=completed hangs up. Errors are Twilio's JSON.",
        epilog="environment (required): TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN; optional: "
        "TWILIO_API_KEY and TWILIO_API_SECRET. The relay must run with the same values and "
        "TWILIO_API_BASE=http://127.0.0.1:PORT.",
    )
    add_rest_arguments(rest)
    rest.set_defaults(run=run_rest)

    fuzz = commands.add_parser(
        "fuzz",
        help="send bad Media Streams input to a running relay",
        description="A hostile Media Streams peer: garbage, binary frames, media before start, "
        "bad base64, absurd timestamps, oversized frames, floods, each on a signed connection. "
        "Prints how the relay closed each connection.",
        epilog="environment: TWILIO_AUTH_TOKEN (to sign), PUBLIC_URL",
    )
    add_fuzz_arguments(fuzz)
    fuzz.set_defaults(run=run_fuzz)


def main(argv: list[str] | None = None) -> int:
    """`python -m callrelay.simulator`, the same as `callrelay simulate`."""
    parser = argparse.ArgumentParser(
        prog="callrelay simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_commands(parser)
    args = parser.parse_args(argv)
    return int(args.run(args))
