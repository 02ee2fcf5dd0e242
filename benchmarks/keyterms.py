"""Benchmark: `ASR_KEYTERMS`, the names and words recognition is told to favour.

    callrelay bench keyterms
    (or python -m benchmarks.keyterms)

Sentences of our own full of names and products that tiny.en does not know, spoken by eSpeak
NG through the telephone path into the bundled Whisper, once without keyterms and once with
them. Prints how many of the keyterms were recognised, and the word error rate over the
keyterms and over every word. Figures, not pass/fail.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import jiwer
import numpy as np
import soundfile

from benchmarks.redaction import recognised
from callrelay.asr.whisper import WhisperEngine, bundled_model_path
from callrelay.audio import Upsampler2x
from callrelay.simulator.audio_source import frames, load_telephone_audio
from callrelay.speech import Speech

SENTENCES = [
    "Hello, this is Siobhan Nguyen from Zendesk.",
    "I am calling about my Kubernetes cluster on Hetzner.",
    "Please ask Okonkwo to check the Callrelay dashboard.",
    "Our Twilio account uses Flex and Segment.",
    "My manager Aoife Gallagher approved it.",
]
KEYTERMS = [
    "Siobhan", "Nguyen", "Zendesk", "Kubernetes", "Hetzner", "Okonkwo", "Callrelay", "Twilio",
    "Flex", "Segment", "Aoife", "Gallagher",
]  # fmt: skip


def telephone_call(folder: Path) -> np.ndarray:
    speech = Speech()
    pieces = []
    for sentence in SENTENCES:
        samples, rate = speech.say(sentence)
        pieces += [samples, np.zeros(int(1.2 * rate), np.int16)]
    path = folder / "keyterms.wav"
    soundfile.write(path, np.concatenate(pieces), rate)
    upsampler = Upsampler2x()
    return np.concatenate([upsampler.process_mulaw(f) for f in frames(load_telephone_audio(path))])


def words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        pcm = telephone_call(Path(scratch))
    reference = " ".join(SENTENCES)
    wanted = [term.lower() for term in KEYTERMS]
    print("Whisper tiny.en, eSpeak NG speech through the telephone path")
    for keyterms in ([], KEYTERMS):
        engine = WhisperEngine(bundled_model_path() or "", keyterms=keyterms)
        heard = " ".join(t.text for t in recognised(engine, pcm))
        said = words(heard)
        found = sum(1 for term in wanted if term in said)
        missed_terms = 1 - found / len(wanted)
        overall = jiwer.wer(" ".join(words(reference)), " ".join(said))
        label = f"with {len(keyterms)} keyterms" if keyterms else "without keyterms"
        print(
            f"  {label:<20} keyterms recognised {found}/{len(wanted)} "
            f"(error {missed_terms:.0%}), WER over every word {overall:.0%}"
        )
        print(f"    {heard}")


if __name__ == "__main__":
    main()
