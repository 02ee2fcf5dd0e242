"""The transcription sink's contract, with a recogniser whose behaviour the test controls."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pytest

from callrelay.asr import SpeechEngine, TrackRecogniser, Transcript
from callrelay.asr.base import answered
from callrelay.call import AudioChunk, CallInfo
from callrelay.redaction.track import RedactMode, TrackRedactor
from callrelay.transcription import TranscriptionSink, TranscriptListener

RATE = 16000
CALL = CallInfo("CA" + "1" * 32, "MZ" + "2" * 32, "AC" + "3" * 32, ("inbound", "outbound"), {}, 0.0)


@dataclass
class LedgerRecogniser(TrackRecogniser):
    """Writes down what it is given; one final per second of audio. Answers at once, or
    (`later`) from a thread of its own once `gate` is open, as a recogniser whose work runs
    elsewhere does."""

    gate: threading.Event
    later: bool = False
    fail: bool = False
    position: int = 0
    calls: list[tuple[str, int]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def accept(self, samples):
        return self._answer(partial(self._accept, len(samples)))

    def skip(self, sample_count):
        return self._answer(partial(self._skip, sample_count))

    def finish(self):
        return self._answer(self._finish)

    def _answer(self, work) -> Future[list[Transcript]]:
        if not self.later:
            return answered(work())
        answer: Future[list[Transcript]] = Future()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

        def run() -> None:
            self.gate.wait(10)
            try:
                result = work()
            except Exception as error:
                self.in_flight -= 1
                answer.set_exception(error)
                return
            self.in_flight -= 1
            answer.set_result(result)

        threading.Thread(target=run, name="asr-remote", daemon=True).start()
        return answer

    def _accept(self, sample_count: int) -> list[Transcript]:
        if self.fail:
            raise RuntimeError("recogniser blew up")
        self.calls.append(("accept", sample_count))
        before, self.position = self.position, self.position + sample_count
        return [
            Transcript(f"second {s}", s, s + 1.0)
            for s in range(before // RATE + 1, self.position // RATE + 1)
        ]

    def _skip(self, sample_count: int) -> list[Transcript]:
        self.calls.append(("skip", sample_count))
        self.position += sample_count
        return []

    def _finish(self) -> list[Transcript]:
        self.calls.append(("finish", 0))
        return [Transcript("the rest", self.position / RATE, self.position / RATE)]


class LedgerEngine(SpeechEngine):
    name = "ledger"
    sample_rate = RATE

    def __init__(self, remote: bool = False) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.remote = remote
        self.recognisers: list[LedgerRecogniser] = []

    def new_recogniser(self, keyterms: Sequence[str] = ()) -> LedgerRecogniser:
        recogniser = LedgerRecogniser(self.gate, later=self.remote)
        self.recognisers.append(recogniser)
        return recogniser


@dataclass
class Listener(TranscriptListener):
    finals: list[tuple[str, str]] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    lags: list[tuple[str, float, float]] = field(default_factory=list)

    def transcript(self, call, track, transcript):
        self.finals.append((track, transcript.text))

    def transcription_ended(self, call):
        self.ended.set()

    def lagging(self, call, track, lag, skipped):
        self.lags.append((track, lag, skipped))


def chunk(track: str, index: int) -> AudioChunk:
    pcm = np.zeros(320, np.int16)
    return AudioChunk(track, index * 20, index * 320, pcm, b"\xff" * 160)  # type: ignore[arg-type]


@pytest.fixture(params=["answers at once", "answers later"])
def engine(request: pytest.FixtureRequest) -> LedgerEngine:
    return LedgerEngine(remote=request.param == "answers later")


def test_audio_is_recognised_in_order_one_call_at_a_time(engine: LedgerEngine) -> None:
    listener = Listener()
    sink = TranscriptionSink(engine, [listener])
    sink.call_started(CALL)
    for i in range(150):  # 3 s per track
        sink.audio(CALL, chunk("inbound", i))
        sink.audio(CALL, chunk("outbound", i))
    sink.call_ended(CALL, "stop")
    assert listener.ended.wait(10)
    caller, receiver = engine.recognisers
    for recogniser in (caller, receiver):
        kinds = [kind for kind, _ in recogniser.calls]
        assert kinds[-1] == "finish" and "skip" not in kinds
        assert sum(n for kind, n in recogniser.calls if kind == "accept") == 150 * 320
        assert recogniser.most_in_flight <= 1  # the next call waits for the last one's answer
    assert [t for track, t in listener.finals if track == "inbound"] == [
        "second 1",
        "second 2",
        "second 3",
        "the rest",
    ]
    assert sink.status()["maxLagSeconds"] == 0 and sink.status()["activeTracks"] == 0


def test_recognition_falling_behind_skips_the_oldest_audio_and_never_blocks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = LedgerEngine(remote=True)
    listener = Listener()
    sink = TranscriptionSink(engine, [listener], max_lag_seconds=1.0)
    sink.call_started(CALL)
    engine.gate.clear()  # the recogniser is stuck
    for i in range(250):  # 5 s of audio while it is stuck: feeding must still return
        sink.audio(CALL, chunk("inbound", i))
    status = sink.status()
    # At most 1 s waits in the queue and at most 1 s is in the stuck worker's hands (taken
    # from that queue); at least the other 3 s were skipped, and are what is behind no more.
    skipped, lag = status["skippedSeconds"], status["maxLagSeconds"]
    assert isinstance(skipped, float) and isinstance(lag, float)
    assert skipped >= 3.0 and 1.0 <= lag <= 2.02
    assert sum(r.getMessage() == "asr_lag" for r in caplog.records) == 1  # logged once
    assert len(listener.lags) == 1  # and told once to the listeners (the console's timeline)
    track, lagged, given_up = listener.lags[0]
    assert track == "inbound" and lagged >= 1.0 and given_up > 0
    engine.gate.set()
    sink.call_ended(CALL, "stop")
    assert listener.ended.wait(10)
    caller = engine.recognisers[0]
    fed = sum(n for kind, n in caller.calls if kind in ("accept", "skip"))
    assert fed == 250 * 320  # skipped audio still counts: later times stay right
    skipped = sum(n for kind, n in caller.calls if kind == "skip")
    accepted = fed - skipped
    assert 3 * RATE <= skipped <= 4 * RATE + 320 and accepted >= RATE


def test_a_failing_recogniser_is_logged_and_the_call_still_ends(
    engine: LedgerEngine, caplog: pytest.LogCaptureFixture
) -> None:
    listener = Listener()
    sink = TranscriptionSink(engine, [listener])
    sink.call_started(CALL)
    engine.recognisers[0].fail = True
    for i in range(10):
        sink.audio(CALL, chunk("inbound", i))
    sink.call_ended(CALL, "stop")
    assert listener.ended.wait(10)
    assert any("recogniser failed" in r.getMessage() for r in caplog.records)
    assert ("inbound", "the rest") in listener.finals


def test_a_final_the_redactor_fails_on_is_withheld_and_the_track_goes_on(
    engine: LedgerEngine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TrackRedactor.final

    def fails_on_second_3(
        redactor: TrackRedactor, transcript: Transcript, now: float
    ) -> list[Transcript]:
        if transcript.text == "second 3":
            raise ValueError("second 3")  # what was said: it must not reach the log either
        return original(redactor, transcript, now)

    monkeypatch.setattr(TrackRedactor, "final", fails_on_second_3)
    listener = Listener()
    sink = TranscriptionSink(engine, [listener], redact=RedactMode.PCI)
    sink.call_started(CALL)
    for i in range(5 * 50):
        sink.audio(CALL, chunk("inbound", i))
    sink.call_ended(CALL, "stop")
    assert listener.ended.wait(10)
    heard = [text for track, text in listener.finals if track == "inbound"]
    assert heard == ["second 1", "second 2", "second 4", "second 5", "the rest"]
    [failed] = [r for r in caplog.records if "redaction_failed" in r.getMessage()]
    assert "second 3" not in failed.getMessage()
