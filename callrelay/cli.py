"""`callrelay`: the one command-line tool.

callrelay serve                  run the relay (what `python app.py` does)
callrelay simulate call|rest|fuzz   be Twilio for a running relay
callrelay bench NAME [...]       run a benchmark (figures, not pass/fail)
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from callrelay import __version__

if TYPE_CHECKING:
    from callrelay.config import Settings

BENCHMARKS = {
    "relay": "the relay's cost per call and frame latency, beside a minimal relay",
    "transcription": "live transcription through the real relay: WER, final latency, CPU",
    "audio-path": "the per-frame mu-law to 16 kHz path: quality, cost, delay",
    "kill-recovery": "SIGKILL a real server mid-call, again and again: what the WAVs kept",
    "soak": "many calls in a row: does any server process's memory creep?",
    "webhook-outage": "an hour of a webhook receiver's outage, compressed: outbox and lag",
    "recording-formats": "a 10-minute call kept as WAV, FLAC and Opus: size and CPU",
    "store-upload": "a 10-minute call stored in S3-compatible storage: time and CPU",
    "redaction": "redaction on a test set of our own through Whisper: recall, precision, cost",
    "keyterms": "ASR_KEYTERMS: names recognised with and without them",
}


def serve(args: argparse.Namespace) -> int:
    """Check what can be checked before anything starts (settings, folders, ports), then run
    the server; each problem is one line naming what to change."""
    import logging

    from pydantic import SecretStr

    from callrelay.access import generate_token
    from callrelay.config import ConfigError, load_settings
    from callrelay.logs import configure_logging, log_event

    overrides = {name: value for name in ("host", "port") if (value := getattr(args, name))}
    try:
        settings = load_settings(**overrides)
    except ConfigError as error:
        print(f"callrelay: {error}", file=sys.stderr)
        return 2
    refusal = _why_not_start(settings)
    if refusal is not None:
        message, code = refusal
        print(f"callrelay: {message}", file=sys.stderr)
        return code
    if settings.worker_count > 1:
        # prometheus-client's multiprocess mode is configured by this variable only: set before
        # it is first imported, and fresh at every start (an earlier run's files would count).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="callrelay-metrics-")
    made_token = None
    if settings.relay_api_token is None:
        # The one place a token is made: the relay itself only ever checks the one it is given.
        made_token = generate_token()
        settings = settings.model_copy(update={"relay_api_token": SecretStr(made_token)})
    configure_logging(
        settings.log_file, settings.log_level, settings.secrets(), settings.worker_count
    )
    log_event(
        logging.getLogger("callrelay.server"),
        "server_starting",
        version=__version__,
        host=settings.host,
        port=settings.port,
        captures=str(settings.captures_dir),
        callingConfigured=not settings.calling_missing(),
    )
    from callrelay.web.server import run_server

    def ready(web: object) -> None:
        banner = _banner(settings, _token_line(settings, made_token), web)
        print(banner, file=sys.stderr, flush=True)

    run_server(settings, ready)
    return 0


def _why_not_start(settings: Settings) -> tuple[str, int] | None:
    """What stops the relay before it starts, and the exit code (2: configuration, 1: the
    machine); None when nothing does."""
    for name, folder in (
        ("CAPTURES_DIR", settings.captures_dir),
        ("LOG_FILE", settings.log_file.parent),
    ):
        problem = _unwritable(folder)
        if problem:
            return f"invalid configuration: {name}: {problem}", 2
    for port in (settings.port, settings.browser_port):
        in_use = _port_in_use(settings.host, port) if port else None
        if in_use:
            console = ", or CONSOLE_PORT for the console's" if port != settings.port else ""
            return (
                f"cannot listen on {settings.host}:{port}: {in_use}. Another callrelay may be "
                f"running there: stop it, or pick another port with PORT=6001 (or --port "
                f"6001){console}.",
                1,
            )
    return None


def _token_line(settings: Settings, made_token: str | None) -> str:
    """Once the relay listens: save a token made for this run (a relay that failed to start
    leaves the running one's file alone), and say what the token is."""
    from callrelay.access import token_file, write_token_file

    if made_token is None:
        return "the one in RELAY_API_TOKEN"
    saved = token_file(settings.port)
    line = f"{made_token}\n{'':24}(made for this run"
    try:
        write_token_file(made_token, saved)
        line += f", saved to {saved}, readable by you only"
    except OSError:
        pass
    return line + "; set RELAY_API_TOKEN to choose your own)"


def _unwritable(folder: Path) -> str | None:
    """Why the relay could not write files in `folder`, or None when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return f"cannot write to {folder} ({error.strerror or error})"
    return None


def _port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on, or None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return "the port is in use"
            return error.strerror or str(error)
    return None


def command_name() -> str:
    """How to type `callrelay` here: the bare name when the shell finds this one, else its
    path (a venv that is not activated: `.venv/bin/callrelay`)."""
    script = Path(sys.executable).parent / "callrelay"
    found = shutil.which("callrelay")
    if found and Path(found).resolve() == script.resolve():
        return "callrelay"
    if script.exists():
        try:
            return str(script.relative_to(Path.cwd()))
        except ValueError:
            return str(script)
    return f"{sys.executable} -m callrelay"


def _banner(settings: Settings, token_line: str, web: object) -> str:
    """What the console says once the relay takes calls: where, the token, what next.
    A token made for this run is printed here only (never into the log file); a configured one
    is never printed."""
    from callrelay.web.app import WebRelay

    assert isinstance(web, WebRelay)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    listening = f"{base}" + (" (all interfaces)" if host != settings.host else "")
    console = f"http://{host}:{settings.console_base_port}/console"
    if settings.browser_port:
        console += f" (port {settings.port} is one browsers refuse)"
    asr = web.relay.transcription.status() if web.relay.transcription else {"engine": "off"}
    engine = str(asr.get("engine"))
    if "model" in asr:
        engine += f", {asr['model']}"
    public = settings.public_url or "not set: Twilio cannot reach this relay until PUBLIC_URL is"
    processes = []
    if settings.worker_count > 1:
        shared = settings.shared_recognition_processes
        recognition = (
            f", sharing {shared} recognition process{'es' if shared > 1 else ''}" if shared else ""
        )
        processes = [f"  server processes      {settings.worker_count}{recognition}, through Redis"]
    return "\n".join(
        [
            "",
            f"callrelay {__version__} is ready on {listening}",
            f"  console               {console}",
            f"  Twilio media streams  {base.replace('http', 'ws', 1)}/stream",
            f"  public URL            {public}",
            f"  speech recognition    {engine}",
            *processes,
            f"  recordings            {settings.captures_dir}/<CallSid>/, log {settings.log_file}",
            f"  API token             {token_line}",
            "",
            "Next, in another terminal: simulate a call and watch its events",
            f"    {command_name()} simulate call",
            "Ctrl-C stops the relay (calls in progress are ended and saved first).",
            "",
        ]
    )


def bench(args: argparse.Namespace) -> int:
    module = importlib.import_module("benchmarks." + args.benchmark.replace("-", "_"))
    sys.argv = [f"callrelay bench {args.benchmark}", *args.arguments]
    module.main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from callrelay.simulator import cli as simulator_cli

    parser = argparse.ArgumentParser(
        prog="callrelay",
        description="Live phone calls on the web: Twilio Media Streams in; 16 kHz audio, "
        "live transcripts, recordings and logs out, over Socket.IO.",
        epilog="Start with `callrelay serve`, then `callrelay simulate call` in another "
        "terminal. `callrelay COMMAND --help` tells more.",
    )
    parser.add_argument("--version", action="version", version=f"callrelay {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    server = commands.add_parser(
        "serve",
        help="run the relay",
        description="Run the relay: HTTP, the /stream WebSocket Twilio connects to, and "
        "Socket.IO, on one port. Configured from the environment or a .env file (see the "
        "README's configuration table); no setting is needed to start.",
    )
    server.add_argument("--host", help="address to listen on (default HOST, else 0.0.0.0)")
    server.add_argument("--port", type=int, help="port to listen on (default PORT, else 6000)")
    server.set_defaults(run=serve)

    simulate = commands.add_parser(
        "simulate",
        help="be Twilio for a running relay: a call, the REST API, a fuzzer",
        description=simulator_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulator_cli.add_commands(simulate)

    benchmark = commands.add_parser(
        "bench",
        help="run a benchmark from a checkout (figures, not pass/fail)",
        description="Benchmarks print figures for this machine; each has its own --help.\n\n"
        + "\n".join(f"  {name:<15} {what}" for name, what in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    benchmark.add_argument("benchmark", choices=sorted(BENCHMARKS), metavar="NAME")
    benchmark.add_argument("arguments", nargs=argparse.REMAINDER, help="the benchmark's options")
    benchmark.set_defaults(run=bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    on_gevent = arguments[:1] == ["serve"] or arguments[:2] == ["bench", "webhook-outage"]
    if on_gevent and not {"-h", "--help"} & set(arguments):
        # The server is gevent's: sockets, threads and locks must be patched before anything
        # else imports them (gevent warns, and misbehaves, when patched late).
        from gevent import monkey

        monkey.patch_all()
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.run(args))


def serve_main() -> None:
    """`python app.py`: `callrelay serve`."""
    sys.exit(main(["serve"]))


if __name__ == "__main__":
    sys.exit(main())
