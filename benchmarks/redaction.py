"""Benchmark: redaction on a test set of our own, through the bundled Whisper.

    callrelay bench redaction [--mode pii]
    (or python -m benchmarks.redaction)

Calls spoken by eSpeak NG: card numbers, social security numbers, phone numbers and emails
said in several ways (digits in groups with pauses, inside sentences, with their expiry and
code), and calls with ordinary numbers that must stay (a quantity, a time, a room). Each call
goes the way a caller's audio goes in the relay: 8 kHz mu-law, the relay's upsampler, the
Whisper engine with its segmenter (finals as the relay gets them), then one track's redactor.

Prints, per kind, the recall (a sensitive number or email is caught when no group of its
digits, as digits or as words, and no part of the email is left in any final) and the
precision (the share of masked stretches said where something sensitive was), and the time
the redactor takes per final. Loopback only, nothing downloaded. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile
import soxr

from callrelay.asr import load_engine
from callrelay.asr.base import Transcript
from callrelay.audio import Upsampler2x
from callrelay.call import AudioChunk
from callrelay.config import Settings
from callrelay.recording_masks import DelayedMasking
from callrelay.redaction.entities import EntityFinder
from callrelay.redaction.track import RedactMode, TrackRedactor
from callrelay.simulator.audio_source import frames, load_telephone_audio
from callrelay.speech import Speech

PAUSE_SECONDS = 1.2
"""Between two things said: a caller reading groups of digits pauses about this long."""


@dataclass(frozen=True)
class Said:
    text: str = ""
    """Words spoken by eSpeak NG."""
    digits: str = ""
    """Then digits spoken by a person (cut from `counting.flac`), one after another."""
    kind: str | None = None
    """What is sensitive in it (`card`, `ssn`, `phone`, `email`), or None."""


def card(*groups: str, text: str = "") -> list[Said]:
    return [Said(text if i == 0 else "", g, "card") for i, g in enumerate(groups)]


CALLS: dict[str, list[Said]] = {
    "card in four groups": [
        Said("Hi, I would like to pay my bill."),
        *card("4539", "1488", "5343", "6467", text="My card number is"),
        Said("Thank you."),
    ],
    "card, no words before": [*card("4111", "1111", "1111", "1111"), Said("That is all.")],
    "card, expiry and code": [
        *card("5555", "5555", "5555", "4444", text="The card is"),
        Said("It expires oh four twenty seven.", kind="card"),
        Said("and the security code is", "731", "card"),
    ],
    "card in one breath": [Said("It is", "4539148853436467", "card"), Said("Thanks.")],
    "card in two halves": [*card("45391488", "53436467", text="Card number"), Said("That's it.")],
    "card in words": [
        Said("Sure, it is four zero one two", kind="card"),
        Said("eight eight eight eight", kind="card"),
        Said("eight eight eight eight", kind="card"),
        Said("one eight eight one", kind="card"),
        Said("Is that okay?"),
    ],
    "code, then the card": [
        Said("The security code is", "382", "card"),
        *card("4916", "3385", "6274", "8912", text="and the number is"),
        Said("Thanks."),
    ],
    "amex": card("3782", "822463", "1115", text="My american express is"),
    "ssn in groups": [
        Said("My social security number is", "123", "ssn"),
        Said("", "45", "ssn"),
        Said("", "6789", "ssn"),
        Said("Did you get that?"),
    ],
    "ssn at once": [Said("It is", "531229876", "ssn"), Said("I think.")],
    "phone in groups": [
        Said("You can call me back on", "415", "phone"),
        Said("", "555", "phone"),
        Said("", "2389", "phone"),
        Said("any time."),
    ],
    "phone at once": [Said("My number is", "2124567891", "phone"), Said("Thanks.")],
    "email": [Said("My email is ann dot lee at example dot com.", kind="email")],
    "name": [Said("Hello, my name is Sarah Johnson.", kind="name"), Said("Thank you.")],
    "address": [Said("Please send it to 42 Baker Street in London.", kind="address")],
    "ordinary numbers": [
        Said("I'd like", "2", None),
        Said("tickets for the show at", "3", None),
        Said("I am in room", "4", None),
        Said("We ordered", "15", None),
        Said("items, and the shop opens at", "9", None),
        Said("I have been a customer since twenty nineteen."),
    ],
    "ordinary numbers, a table": [
        Said("A table for", "4", None),
        Said("at", "8", None),
        Said("please. We are", "6", None),
        Said("people, and", "2", None),
        Said("of them are children."),
    ],
}
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SAID_WORDS = {
    "email": ("lee", "example"),
    "name": ("sarah", "johnson"),
    "address": ("baker", "london"),
}
"""What must not be left of the sensitive things that are not numbers."""
DIGIT_GAP_SECONDS = 0.12
"""Between the digits of one group."""


def digit_voice(engine: object) -> dict[str, np.ndarray]:
    """Each digit 1 to 9 as a person said it: `counting.flac` (the test data's recording of
    "one two ... ten"), cut at the word times Whisper gives, faded in and out."""
    path = Path(__file__).parent.parent / "tests" / "data" / "real" / "counting.flac"
    pcm, rate = soundfile.read(path, dtype="int16")
    [counted] = recognised(engine, pcm)
    clips = {}
    for word in counted.words[:9]:
        clip = pcm[int(word.start * rate) : int(word.end * rate)].astype(np.float32)
        fade = np.linspace(0, 1, min(160, len(clip) // 4))
        clip[: len(fade)] *= fade
        clip[len(clip) - len(fade) :] *= fade[::-1]
        clips[word.text.strip(".,")] = clip.astype(np.int16)
    return clips


def spoken_call(
    speech: Speech, digits: dict[str, np.ndarray], said: list[Said], folder: Path
) -> tuple[np.ndarray, list[float]]:
    """The call as the relay records it (16 kHz, through the telephone path), and where each
    thing said starts (s)."""
    rate = 16000
    pieces, starts, position = [np.zeros(rate // 2, np.int16)], [], 0.5
    for item in said:
        starts.append(position)
        if item.text:
            samples, speech_rate = speech.say(item.text)
            pieces.append(soxr.resample(samples, speech_rate, rate).astype(np.int16))
            pieces.append(np.zeros(int(0.2 * rate), np.int16))
        for digit in item.digits:
            pieces += [digits[digit], np.zeros(int(DIGIT_GAP_SECONDS * rate), np.int16)]
        pieces.append(np.zeros(int(PAUSE_SECONDS * rate), np.int16))
        position = sum(len(p) for p in pieces) / rate
    path = folder / "call.wav"
    soundfile.write(path, np.concatenate(pieces), rate)
    upsampler = Upsampler2x()
    pcm = np.concatenate([upsampler.process_mulaw(f) for f in frames(load_telephone_audio(path))])
    return pcm, starts


def recognised(engine: object, pcm: np.ndarray) -> list[Transcript]:
    recogniser = engine.new_recogniser()  # type: ignore[attr-defined]
    finals: list[Transcript] = []
    for first in range(0, len(pcm), 960):
        finals += [t for t in recogniser.accept(pcm[first : first + 960]).result() if t.is_final]
    return finals + [t for t in recogniser.finish().result() if t.is_final]


def said_at(said: list[Said], starts: list[float], moment: float) -> Said:
    """What was being said at `moment` (s): the last thing that had started by then."""
    index = max(0, int(np.searchsorted(starts, moment + 0.3, side="right")) - 1)
    return said[index]


def masked_energy(pcm: np.ndarray, out: list[Transcript]) -> list[tuple[float, float]]:
    """The level (dBFS) of each masked stretch as said and as the recorder keeps it: the
    call's audio through the recorder's own masking, in 20 ms chunks."""
    masking = DelayedMasking()
    for transcript in out:
        for span in transcript.redacted:
            masking.mask(int(span.start * 16000), int(span.end * 16000))
    kept = []
    for first in range(0, len(pcm), 320):
        chunk = AudioChunk("inbound", first // 16, first, pcm[first : first + 320], b"")
        kept += masking.push(chunk)
    kept += masking.drain()
    recorded = np.concatenate([chunk.pcm for chunk in kept])
    levels = []
    for span in (span for transcript in out for span in transcript.redacted):
        first, last = int(span.start * 16000), int(span.end * 16000)
        levels.append((_dbfs(pcm[first:last]), _dbfs(recorded[first:last])))
    return levels


def _dbfs(samples: np.ndarray) -> float:
    power = float(np.mean((samples.astype(np.float64) / 32768) ** 2)) if len(samples) else 0.0
    return 10 * float(np.log10(power + 1e-12))


def left_of_it(kind: str, texts: list[str]) -> bool:
    """Whether anything of a number (a digit, or a digit said as a word), or of an email (its
    words), is left unmasked in the finals said while it was."""
    said = " ".join(re.sub(r"\[[a-z ]+\]", " ", text.lower()) for text in texts)
    if kind in SAID_WORDS:
        return any(word in said for word in SAID_WORDS[kind])
    return bool(re.search(r"\d", said)) or any(re.search(rf"\b{w}\b", said) for w in WORDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("pci", "pii"), default="pii")
    parser.add_argument("--model", help="a CTranslate2 Whisper model folder (default: tiny.en)")
    args = parser.parse_args()
    engine = load_engine(Settings(asr_engine="whisper", whisper_model=args.model))
    assert engine is not None
    speech = Speech()
    digits = digit_voice(engine)
    finder = EntityFinder() if args.mode == "pii" else None
    find_seconds = 0.0
    caught: dict[str, list[bool]] = {}
    true_spans = false_spans = finals_seen = 0
    energy: list[tuple[float, float]] = []
    redact_seconds = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        for name, said in CALLS.items():
            pcm, starts = spoken_call(speech, digits, said, Path(scratch))
            finals = recognised(engine, pcm)
            if finder is not None:
                started = time.perf_counter()
                finals = [replace(t, entities=finder.find(t.text)) for t in finals]
                find_seconds += time.perf_counter() - started
            redactor = TrackRedactor(RedactMode(args.mode))
            out: list[Transcript] = []
            for number, final in enumerate(finals):
                started = time.perf_counter()
                out += redactor.final(final, float(number))
                redact_seconds += time.perf_counter() - started
            out += redactor.flush()
            finals_seen += len(finals)
            texts = [t.text for t in out]
            missed = []
            for kind in sorted({i.kind for i in said if i.kind}):
                if args.mode == "pci" and kind != "card":
                    continue
                during = [t.text for t in out if said_at(said, starts, t.start).kind == kind]
                caught.setdefault(kind, []).append(bool(during) and not left_of_it(kind, during))
                if not caught[kind][-1]:
                    missed.append(kind)
            energy += masked_energy(pcm, out)
            for span in (span for transcript in out for span in transcript.redacted):
                if said_at(said, starts, span.start).kind:
                    true_spans += 1
                else:
                    false_spans += 1
            print(f"  {name:<28} {' | '.join(texts)}")
            if missed:
                print(f"  {'':<28} missed: {', '.join(missed)}")
    print(
        f"\nREDACT={args.mode}; Whisper {args.model or 'tiny.en'}; numbers said by a person "
        "(counting.flac), "
        "the rest by eSpeak NG; through the telephone path"
    )
    for kind, results in caught.items():
        print(f"  recall {kind:<6} {sum(results)}/{len(results)}")
    masked = true_spans + false_spans
    print(f"  precision {true_spans}/{masked} masked stretches were sensitive")
    if energy:
        before, after = (float(np.median([e[i] for e in energy])) for i in (0, 1))
        print(
            f"  audio over the masked stretches, median: {before:.1f} dBFS as said, "
            f"{after:.1f} dBFS as recorded ({len(energy)} stretches)"
        )
    if finder is not None:
        print(
            f"  names and places (presidio, in the recognition process) per final "
            f"{1000 * find_seconds / max(1, finals_seen):.1f} ms"
        )
    print(f"  redaction per final {1e6 * redact_seconds / max(1, finals_seen):.0f} us "
          f"({finals_seen} finals)")  # fmt: skip


if __name__ == "__main__":
    main()
