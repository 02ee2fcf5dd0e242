"""TwiML for calls the relay handles, built with the twilio library's `VoiceResponse`."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from twilio.twiml.voice_response import Connect, Start, VoiceResponse

PAUSE_SECONDS = 600


def stream_url(public_base: str, call_sid: str | None = None) -> str:
    """The `<Stream>` URL for a public http(s) base: https -> wss, http -> ws, path /stream,
    then /<CallSid> when known.

    Twilio only dials wss://; plain ws:// is for the simulator on loopback. The CallSid in the
    path lets a load balancer send a call's stream and its listeners to the same host (hash
    on it); Twilio refuses a query string there (error 31920), a path it keeps.
    """
    parts = urlsplit(public_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/stream" + (f"/{call_sid}" if call_sid else "")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def stream_twiml(
    stream: str,
    *,
    dial: str | None = None,
    caller_id: str | None = None,
    parameters: Mapping[str, str] | None = None,
) -> str:
    """`<Start><Stream track="both_tracks">`, then a `<Dial>` to bridge a party or a long pause.

    `<Start>` (not `<Connect>`) because only it streams both tracks; with a `<Dial>`, inbound is
    the party Twilio called and outbound the dialled party.
    """
    response = VoiceResponse()
    start = Start()
    stream_verb = start.stream(url=stream, track="both_tracks")
    for name, value in (parameters or {}).items():
        stream_verb.parameter(name=name, value=value)
    response.append(start)
    if dial:
        response.dial(dial, caller_id=caller_id)
    else:
        response.pause(length=PAUSE_SECONDS)
    return str(response)


def talk_twiml(
    stream: str, talk_parameter: str, parameters: Mapping[str, str] | None = None
) -> str:
    """`<Connect><Stream>`: the one stream Twilio takes audio back on, carrying the caller's
    side only (the relay is the other party; nothing after it runs until the stream ends).
    `talk_parameter` marks the stream as one the relay asked to be bidirectional."""
    response = VoiceResponse()
    connect = Connect()
    stream_verb = connect.stream(url=stream)
    stream_verb.parameter(name=talk_parameter, value="1")
    for name, value in (parameters or {}).items():
        stream_verb.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again later."


def busy_twiml() -> str:
    """A call the relay cannot carry: said so politely, then hung up."""
    return say_and_hang_up(BUSY_MESSAGE)


def say_and_hang_up(message: str) -> str:
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)
