"""ASR_KEYTERMS: a name recognition is told to favour is heard where, without it, the bundled
tiny.en hears something else (a sentence of ours, spoken by eSpeak NG, through the telephone
path)."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from callrelay.asr.whisper import WhisperEngine, bundled_model_path
from callrelay.audio import Upsampler2x, mulaw_encode
from callrelay.config import Settings
from callrelay.simulator.audio_source import frames
from callrelay.speech import Speech

SENTENCE = "Please ask Okonkwo to check the Callrelay dashboard."


def heard(engine: WhisperEngine, pcm: np.ndarray) -> str:
    recogniser = engine.new_recogniser()
    finals = []
    for first in range(0, len(pcm), 960):
        finals += recogniser.accept(pcm[first : first + 960]).result()
    finals += recogniser.finish().result()
    return " ".join(t.text for t in finals if t.is_final)


@pytest.fixture(scope="module")
def sentence_on_the_line() -> np.ndarray:
    samples, rate = Speech().say(SENTENCE)
    narrow = soxr.resample(samples.astype(np.float64) / 32768, rate, 8000)
    mulaw = mulaw_encode(np.clip(np.rint(narrow * 32768), -32768, 32767).astype(np.int16))
    upsampler = Upsampler2x()
    silence = np.zeros(8000, np.int16)
    return np.concatenate([silence, *(upsampler.process_mulaw(f) for f in frames(mulaw)), silence])


def test_a_keyterm_is_heard_that_tiny_en_hears_as_something_else(
    sentence_on_the_line: np.ndarray,
) -> None:
    model = bundled_model_path()
    assert model is not None
    plain = heard(WhisperEngine(model, workers=1), sentence_on_the_line)
    favoured = WhisperEngine(model, workers=1, keyterms=["Okonkwo", "Callrelay"])
    biased = heard(favoured, sentence_on_the_line)
    assert "Callrelay" not in plain, plain  # tiny.en hears "call relay", or worse
    assert "Callrelay" in biased, biased
    assert favoured.describe()["keyterms"] == ["Okonkwo", "Callrelay"]


def test_asr_keyterms_is_a_comma_separated_list() -> None:
    settings = Settings(asr_keyterms=" Okonkwo, Zendesk ,, Kubernetes")
    assert settings.keyterm_list == ["Okonkwo", "Zendesk", "Kubernetes"]


def test_a_call_s_own_keyterms_are_favoured_in_its_recognition(
    sentence_on_the_line: np.ndarray,
) -> None:
    model = bundled_model_path()
    assert model is not None
    engine = WhisperEngine(model, workers=1)
    assert engine.hotwords_with(["Callrelay"]) == "Callrelay"
    recogniser = engine.new_recogniser(["Okonkwo", "Callrelay"])
    finals = []
    for first in range(0, len(sentence_on_the_line), 960):
        finals += recogniser.accept(sentence_on_the_line[first : first + 960]).result()
    finals += recogniser.finish().result()
    assert "Callrelay" in " ".join(t.text for t in finals if t.is_final)
