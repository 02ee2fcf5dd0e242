"""REDACT=pii: people's names and street addresses masked, found by presidio with spaCy's
small English model (offline), in the recognition process beside the recogniser."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from callrelay.asr.base import Entity, Transcript
from callrelay.asr.entity_engine import EntityTaggingEngine
from callrelay.asr.whisper import WhisperEngine, bundled_model_path
from callrelay.audio import Upsampler2x, mulaw_encode
from callrelay.redaction.entities import EntityFinder
from callrelay.redaction.track import RedactMode, TrackRedactor
from callrelay.simulator.audio_source import frames
from callrelay.speech import Speech


@pytest.fixture(scope="module")
def finder() -> EntityFinder:
    return EntityFinder()


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("My name is Sarah Johnson.", [("name", "Sarah Johnson")]),
        (
            "I live at 42 Baker Street in London.",
            [("address", "42 Baker Street"), ("address", "London")],
        ),
        ("I'd like two tickets for the three o'clock show.", []),
    ],
)
def test_names_and_places_are_found_in_text(
    finder: EntityFinder, text: str, found: list[tuple[str, str]]
) -> None:
    assert [(e.kind, text[e.start : e.end]) for e in finder.find(text)] == found


def test_names_and_places_found_are_masked_with_pii_only() -> None:
    text = "Thanks Sarah, we ship to 42 Baker Street."
    transcript = Transcript(
        text, 0.0, 2.0, entities=(Entity("name", 7, 12), Entity("address", 25, 41))
    )
    [masked] = TrackRedactor(RedactMode.PII).final(transcript, 0.0)
    assert masked.text == "Thanks [name], we ship to [address]."
    [kept] = TrackRedactor(RedactMode.PCI).final(transcript, 0.0)
    assert kept.text == text


def test_a_recogniser_s_finals_carry_the_names_said() -> None:
    model = bundled_model_path()
    assert model is not None
    samples, rate = Speech().say("Hello, my name is Sarah Johnson.")
    narrow = soxr.resample(samples.astype(np.float64) / 32768, rate, 8000)
    mulaw = mulaw_encode(np.clip(np.rint(narrow * 32768), -32768, 32767).astype(np.int16))
    upsampler = Upsampler2x()
    pcm = np.concatenate([upsampler.process_mulaw(f) for f in frames(mulaw + bytes(8000))])
    engine = EntityTaggingEngine(WhisperEngine(model, workers=1), EntityFinder())
    recogniser = engine.new_recogniser()
    finals = []
    for first in range(0, len(pcm), 960):
        finals += recogniser.accept(pcm[first : first + 960]).result()
    finals += recogniser.finish().result()
    [final] = [t for t in finals if t.is_final]
    assert [(e.kind, final.text[e.start : e.end]) for e in final.entities] == [
        ("name", "Sarah Johnson")
    ], final.text
    [masked] = TrackRedactor(RedactMode.PII).final(final, 0.0)
    assert "Sarah" not in masked.text and "[name]" in masked.text
