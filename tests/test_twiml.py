import pytest

from callrelay.simulator.twiml_reader import TwimlError, read_twiml
from callrelay.twilio.twiml import stream_twiml, stream_url


def test_stream_url_is_wss_for_an_https_public_url() -> None:
    assert stream_url("https://abc.ngrok.app") == "wss://abc.ngrok.app/stream"
    assert stream_url("https://example.com/relay/") == "wss://example.com/relay/stream"
    assert stream_url("http://127.0.0.1:6000") == "ws://127.0.0.1:6000/stream"
    call_sid = "CA" + "0" * 32
    assert stream_url("https://h/relay", call_sid) == f"wss://h/relay/stream/{call_sid}"


def test_voice_twiml_streams_both_tracks_then_pauses() -> None:
    twiml = stream_twiml("wss://abc.ngrok.app/stream")
    assert twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Start>'
        '<Stream track="both_tracks" url="wss://abc.ngrok.app/stream" /></Start>'
        '<Pause length="600" /></Response>'
    )
    script = read_twiml(twiml)
    assert script.stream is not None and script.stream.tracks == ("inbound", "outbound")
    assert script.dial is None and script.pause_seconds == 600


def test_voice_twiml_can_bridge_a_second_party() -> None:
    script = read_twiml(
        stream_twiml(
            "wss://h/stream",
            dial="+14155550111",
            caller_id="+14155550100",
            parameters={"team": "a"},
        )
    )
    assert script.dial == "+14155550111" and script.pause_seconds == 0
    assert script.stream is not None and script.stream.parameters == {"team": "a"}


@pytest.mark.parametrize(
    ("twiml", "code"),
    [
        ("<Response><Start><Stream url='https://h/s'/></Start></Response>", "31922"),
        ("<Response><Start><Stream url='wss://h/s?token=1'/></Start></Response>", "31920"),
        (
            "<Response><Connect><Stream url='wss://h/s' track='both_tracks'/></Connect></Response>",
            "31941",
        ),
        ("<Response><Start>", "12100"),
    ],
)
def test_twiml_twilio_would_refuse_is_refused_with_its_code(twiml: str, code: str) -> None:
    with pytest.raises(TwimlError, match=code):
        read_twiml(twiml)
