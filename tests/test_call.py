import numpy as np
import pytest

from callrelay.audio import Upsampler2x
from callrelay.call import (
    LateFrame,
    MediaStreamSession,
    StreamProtocolError,
    StreamState,
    TrackPipeline,
)
from callrelay.close_codes import CloseCode
from callrelay.live_calls import LiveCalls
from callrelay.twilio import media_stream as msg
from tests.helpers import RememberingSink

STREAM = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACCOUNT = "AC" + "3" * 32


def frame(value: int = 0x10) -> bytes:
    return bytes([value]) * 160


def expected_pcm(*payloads: bytes) -> np.ndarray:
    upsampler = Upsampler2x()
    return np.concatenate([upsampler.process_mulaw(p) for p in payloads])


def test_contiguous_frames_make_one_unbroken_track() -> None:
    track = TrackPipeline("inbound")
    chunks = [c for ts in (0, 20, 40) for c in track.accept(ts, frame(ts))]
    assert [c.start_sample for c in chunks] == [0, 320, 640]
    assert not any(c.is_gap for c in chunks)
    assert np.array_equal(
        np.concatenate([c.pcm for c in chunks]), expected_pcm(frame(0), frame(20), frame(40))
    )


def test_first_frame_at_5_ms_is_preceded_by_5_ms_of_silence() -> None:
    chunks = list(TrackPipeline("inbound").accept(5, frame()))
    assert chunks[0].is_gap and len(chunks[0].pcm) == 80
    assert chunks[1].start_sample == 80


def test_gap_in_timestamps_is_filled_with_silence() -> None:
    track = TrackPipeline("outbound")
    list(track.accept(0, frame()))
    chunks = list(track.accept(100, frame()))  # 80 ms (four frames) went missing
    gap, audio = chunks
    assert gap.is_gap and gap.start_sample == 320 and len(gap.pcm) == 80 * 16
    assert audio.start_sample == 1600 and audio.timestamp_ms == 100
    assert track.gap_samples == 640


def test_long_gap_arrives_in_one_second_pieces() -> None:
    track = TrackPipeline("inbound")
    chunks = list(track.accept(3500, frame()))
    assert [len(c.pcm) for c in chunks] == [16000, 16000, 16000, 8000, 320]


def test_timestamp_jitter_within_a_millisecond_is_not_a_gap() -> None:
    track = TrackPipeline("inbound")
    list(track.accept(0, frame()))
    chunks = list(track.accept(21, frame()))
    assert len(chunks) == 1 and chunks[0].start_sample == 320


def test_duplicate_frame_is_refused_as_late() -> None:
    track = TrackPipeline("inbound")
    list(track.accept(0, frame()))
    list(track.accept(20, frame()))
    with pytest.raises(LateFrame):
        list(track.accept(0, frame()))
    assert track.late_frames == 1


def test_overlapping_frame_keeps_only_its_new_part() -> None:
    track = TrackPipeline("inbound")
    list(track.accept(0, frame()))
    chunks = list(track.accept(10, frame()))  # starts 10 ms before the track's end
    assert len(chunks) == 1 and len(chunks[0].pcm) == 160 and track.position == 240


def test_absurd_timestamp_jump_is_an_invalid_frame() -> None:
    with pytest.raises(msg.InvalidMediaMessage, match="jumps"):
        list(TrackPipeline("inbound").accept(10**9, frame()))


def start_text(tracks: tuple[msg.Track, ...] = ("inbound", "outbound")) -> str:
    return msg.start_message(
        stream_sid=STREAM,
        account_sid=ACCOUNT,
        call_sid=CALL,
        tracks=tracks,
        custom_parameters={"k": "v"},
        sequence_number=1,
    )


def media_text(track: msg.Track, timestamp: int, payload: bytes = frame(), seq: int = 2) -> str:
    return msg.media_message(
        stream_sid=STREAM,
        track=track,
        chunk=1,
        timestamp_ms=timestamp,
        payload=payload,
        sequence_number=seq,
    )


def stop_text() -> str:
    return msg.stop_message(
        stream_sid=STREAM, account_sid=ACCOUNT, call_sid=CALL, sequence_number=99
    )


def new_session() -> tuple[MediaStreamSession, RememberingSink, LiveCalls]:
    sink, registry = RememberingSink(), LiveCalls()
    return MediaStreamSession([sink], registry), sink, registry


def test_a_whole_stream_reaches_the_sinks_in_order() -> None:
    session, sink, registry = new_session()
    session.receive(msg.connected_message())
    session.receive(start_text())
    assert (session.state, len(registry.active())) == (StreamState.STREAMING, 1)
    for ts in (0, 20, 40):
        session.receive(media_text("inbound", ts))
        session.receive(media_text("outbound", ts))
    session.receive(msg.dtmf_message(stream_sid=STREAM, digit="7", sequence_number=9))
    session.receive(stop_text())
    assert session.state is StreamState.ENDED and registry.active() == []
    assert sink.started[0].custom_parameters == {"k": "v"}
    assert sink.digits == ["7"]
    assert sink.ended[0][1] == "stop"
    assert len(sink.track_pcm("inbound")) == len(sink.track_pcm("outbound")) == 960


def test_tracks_are_padded_to_end_together() -> None:
    session, sink, _ = new_session()
    session.receive(start_text())
    session.receive(media_text("inbound", 0))
    session.receive(media_text("inbound", 20))
    session.receive(media_text("outbound", 0))
    session.close("disconnected")
    assert len(sink.track_pcm("inbound")) == len(sink.track_pcm("outbound")) == 640
    assert sink.ended[0][1] == "disconnected"


def test_close_is_reported_to_sinks_once() -> None:
    session, sink, _ = new_session()
    session.receive(start_text())
    session.close("disconnected")
    session.close("disconnected")
    assert len(sink.ended) == 1


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (media_text("inbound", 0), CloseCode.PROTOCOL_ERROR),
        (stop_text(), CloseCode.PROTOCOL_ERROR),
        ("{oops", CloseCode.INVALID_PAYLOAD),
        (b"\x00\x01", CloseCode.UNSUPPORTED_DATA),
    ],
)
def test_protocol_breaks_before_start_close_the_stream(first: str | bytes, code: int) -> None:
    session, sink, _ = new_session()
    with pytest.raises(StreamProtocolError) as caught:
        session.receive(first)
    assert caught.value.close_code == code
    assert sink.started == []


def test_duplicate_start_closes_the_stream() -> None:
    session, _, _ = new_session()
    session.receive(start_text())
    with pytest.raises(StreamProtocolError, match="second start"):
        session.receive(start_text())


def test_a_stream_whose_url_names_its_call_takes_only_that_call() -> None:
    sink, registry = RememberingSink(), LiveCalls()
    named = MediaStreamSession([sink], registry, call_sid=CALL)
    named.receive(start_text())
    assert named.call is not None and named.call.call_sid == CALL
    other = MediaStreamSession([sink], registry, call_sid="CA" + "9" * 32)
    with pytest.raises(StreamProtocolError, match="the stream URL for CA9") as caught:
        other.receive(start_text())
    assert caught.value.close_code == 1008 and len(sink.started) == 1


def test_bad_media_frames_are_dropped_counted_and_the_call_goes_on() -> None:
    session, sink, _ = new_session()
    session.receive(start_text(("inbound",)))
    session.receive(media_text("inbound", 0))
    bad_base64 = media_text("inbound", 20).replace('"payload": "', '"payload": "*')
    session.receive(bad_base64)
    session.receive(media_text("outbound", 20))  # not a declared track
    session.receive(media_text("inbound", 0))  # duplicate
    session.receive(media_text("inbound", 20))
    assert session.problems.counts == {"invalid_media": 1, "undeclared_track": 1, "late_frame": 1}
    assert len(sink.track_pcm("inbound")) == 640


def test_unknown_events_are_ignored() -> None:
    session, _sink, _ = new_session()
    session.receive(start_text())
    session.receive('{"event": "future-thing", "streamSid": "MZ"}')
    assert session.state is StreamState.STREAMING
    assert session.unknown_events == {"future-thing"}


def test_media_for_another_stream_is_dropped() -> None:
    session, sink, _ = new_session()
    session.receive(start_text())
    session.receive(media_text("inbound", 0).replace(STREAM, "MZ" + "9" * 32))
    assert session.problems.counts == {"wrong_stream_sid": 1} and sink.chunks == []


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stream_texts(stream_sid: str, frames_per_track: int) -> list[str]:
    """A whole two-track stream of the test call, under its own StreamSid."""
    texts = [start_text()] + [
        media_text(track, 20 * i) for i in range(frames_per_track) for track in TRACKS
    ]
    return [text.replace(STREAM, stream_sid) for text in [*texts, stop_text()]]


TRACKS: tuple[msg.Track, ...] = ("inbound", "outbound")


def test_a_new_stream_of_an_ended_call_resumes_its_timeline() -> None:
    sink, registry, clock = RememberingSink(), LiveCalls(), Clock()
    for texts in (stream_texts("MZ" + "a" * 32, 3), stream_texts("MZ" + "b" * 32, 2)):
        session = MediaStreamSession([sink], registry, clock)
        for text in texts:
            session.receive(text)
        clock.now += 2.5  # the second stream starts 2.5 s after the first
    first, second = sink.started
    assert (first.offset_ms, first.resumed) == (0, False)
    assert (second.offset_ms, second.resumed) == (2500, True)
    second_chunks = [c for c in sink.chunks if c.track == "inbound"][3:]
    assert [c.start_sample for c in second_chunks] == [40000, 40320]
    assert [c.timestamp_ms for c in second_chunks] == [2500, 2520]


def test_a_resumed_stream_never_starts_inside_audio_the_call_already_has() -> None:
    sink, registry, clock = RememberingSink(), LiveCalls(), Clock()
    for texts in (stream_texts("MZ" + "a" * 32, 50), stream_texts("MZ" + "b" * 32, 1)):
        session = MediaStreamSession([sink], registry, clock)
        for text in texts:
            session.receive(text)
        clock.now += 0.2  # 1 s of audio arrived within 0.2 s (a burst)
    assert sink.started[1].offset_ms == 1000


def test_a_stream_alongside_a_live_one_is_placed_but_not_a_resumption() -> None:
    sink, registry, clock = RememberingSink(), LiveCalls(), Clock()
    first = MediaStreamSession([sink], registry, clock)
    first.receive(start_text())
    clock.now += 1.0
    second = MediaStreamSession([sink], registry, clock)
    second.receive(start_text().replace(STREAM, "MZ" + "c" * 32))
    assert (sink.started[1].offset_ms, sink.started[1].resumed) == (1000, False)
    assert len(registry.active()) == 2


def test_the_registry_forgets_the_oldest_ended_calls_only() -> None:
    registry = LiveCalls(remembered_calls=2)
    sink, clock = RememberingSink(), Clock()
    live = MediaStreamSession([sink], registry, clock)
    live.receive(start_text())
    for n in range(3):
        other = MediaStreamSession([sink], registry, clock)
        other.receive(start_text().replace(CALL, f"CA{n:032d}").replace(STREAM, f"MZ{n:032d}"))
        other.close("stop")
    clock.now += 1.0
    again = MediaStreamSession([sink], registry, clock)
    again.receive(start_text().replace(STREAM, "MZ" + "d" * 32))
    assert sink.started[-1].offset_ms == 1000  # the live call was kept
    forgotten = MediaStreamSession([sink], registry, clock)
    forgotten.receive(start_text().replace(CALL, f"CA{0:032d}").replace(STREAM, "MZ" + "e" * 32))
    assert sink.started[-1].offset_ms == 0
