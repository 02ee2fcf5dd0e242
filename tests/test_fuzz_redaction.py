"""Property tests of one track's redaction: whatever a recogniser writes, the redactor lets out
every final it was given, in order, and never fails; a card number read out in groups, however
the groups are cut and written, leaves no digit of it behind."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from callrelay.asr.base import Transcript
from callrelay.redaction.spoken import HOMOPHONES
from callrelay.redaction.track import RedactMode, TrackRedactor

WORDS = ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOCABULARY = [
    *WORDS,
    *HOMOPHONES,
    *(str(n) for n in (0, 7, 12, 45, 2019, 4111, 555, 123456789)),
    "twenty",
    "double",
    "triple",
    "uh",
    "and",
    "-",
    "at",
    "dot",
    "com",
    "ann@example.com",
    "my",
    "card",
    "social",
    "security",
    "number",
    "expires",
    "code",
    "is",
    "thank",
    "you",
    "1-2",
    "0.3.3",
    "4,",
    "five.",
    "?",
    "",
]
finals = st.lists(
    st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=12).map(" ".join),
    min_size=1,
    max_size=8,
)


def run(redactor: TrackRedactor, texts: list[str]) -> list[Transcript]:
    out: list[Transcript] = []
    for number, text in enumerate(texts):
        out += redactor.final(Transcript(text, 2.0 * number, 2.0 * number + 1), float(number))
    out += redactor.expire(len(texts) + 60.0)
    return out + redactor.flush()


@settings(max_examples=300, deadline=None)
@given(texts=finals, mode=st.sampled_from([RedactMode.PCI, RedactMode.PII]))
def test_every_final_goes_out_once_in_order(texts: list[str], mode: RedactMode) -> None:
    out = run(TrackRedactor(mode), texts)
    assert [t.start for t in out] == [2.0 * n for n in range(len(texts))]
    for given_text, sent in zip(texts, out, strict=True):
        assert sent.text == given_text or "[" in sent.text


NUMBERS = {
    "card": ("4539148803436467", ("My card number is", "Sure, it is", "")),
    "amex": ("378282246310005", ("My american express is", "")),
    "ssn": ("531229876", ("My social security number is",)),
    "phone": ("4155552389", ("Call me back on", "My number is")),
}
"""Each sensitive number, and what may be said before it."""


def written(group: str, style: str) -> str:
    """A group of digits as a recogniser may write it."""
    if style == "digits":
        return group
    if style == "commas":
        return ", ".join(group) + ","
    said = " ".join(WORDS[int(d) + 1] if d != "0" else "zero" for d in group)
    if style == "oh":
        return said.replace("zero", "oh")
    return f"uh {said}" if style == "filler" else said


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(NUMBERS)), data=st.data())
def test_a_number_read_out_in_groups_leaves_no_digit_behind(kind: str, data: st.DataObject) -> None:
    """However the groups are cut and written, whatever is said before and after, and with a
    short made-up final between two groups."""
    number, intros = NUMBERS[kind]
    cuts = data.draw(st.lists(st.integers(1, len(number) - 1), max_size=4, unique=True))
    styles = st.sampled_from(["digits", "words", "commas", "oh", "filler"])
    texts = [
        written(number[a:b], data.draw(styles))
        for a, b in pairwise([0, *sorted(cuts), len(number)])
    ]
    texts[0] = f"{data.draw(st.sampled_from(intros))} {texts[0]}".strip()
    if len(texts) > 1 and data.draw(st.booleans()):
        misheard = data.draw(st.sampled_from(["hey hey hey", "okay", "you know"]))
        texts.insert(data.draw(st.integers(1, len(texts) - 1)), misheard)
    texts.append(data.draw(st.sampled_from(["thanks.", "Did you get that?", "Any time.", ""])))
    modes = [RedactMode.PII] if kind in ("ssn", "phone") else [RedactMode.PCI, RedactMode.PII]
    out = " ".join(t.text for t in run(TrackRedactor(data.draw(st.sampled_from(modes))), texts))
    out = out.lower().replace(",", " ")
    assert not any(ch.isdigit() for ch in out), (texts, out)
    assert not set(out.split()) & {*WORDS, "zero"}, (texts, out)


ORDINARY = [
    "We are {n} people.",
    "A table for {n} at {h}, please.",
    "I'm in room {n}",
    "Order {n} items, it costs {n} dollars.",
    "I have been a customer since {year}.",
    "We open at {h} and close at {h}",
    "I'd like {n} tickets for the {h} pm show.",
    "It's {n}",
]


@settings(max_examples=300, deadline=None)
@given(
    said=st.lists(
        st.tuples(
            st.sampled_from(ORDINARY),
            st.integers(1, 99),
            st.integers(1, 12),
            st.integers(1990, 2030),
        ),
        min_size=1,
        max_size=6,
    ),
    mode=st.sampled_from([RedactMode.PCI, RedactMode.PII]),
)
def test_ordinary_numbers_stay(said: list[tuple[str, int, int, int]], mode: RedactMode) -> None:
    """Quantities, times, rooms and years, a few to a sentence, one sentence to a final."""
    texts = [template.format(n=n, h=h, year=year) for template, n, h, year in said]
    assert [t.text for t in run(TrackRedactor(mode), texts)] == texts
