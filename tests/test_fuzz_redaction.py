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
CARD = "4539148803436467"


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


def written(group: str, as_words: bool, commas: bool) -> str:
    if as_words:
        return " ".join(WORDS[int(d) + (1 if d != "0" else 0)] for d in group)
    return ", ".join(group) if commas else group


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=len(CARD) - 1), max_size=5, unique=True),
    styles=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=6, max_size=6),
    before=st.sampled_from(["", "My card number is", "Sure, it is", "uh"]),
    after=st.sampled_from(["", "thanks.", "Did you get that?"]),
    mode=st.sampled_from([RedactMode.PCI, RedactMode.PII]),
)
def test_a_card_read_out_in_groups_leaves_no_digit_behind(
    cuts: list[int],
    styles: list[tuple[bool, bool]],
    before: str,
    after: str,
    mode: RedactMode,
) -> None:
    edges = [0, *sorted(cuts), len(CARD)]
    groups = [CARD[a:b] for a, b in pairwise(edges)]
    texts = [written(g, *style) for g, style in zip(groups, styles, strict=False)]
    texts[0] = f"{before} {texts[0]}".strip()
    if after:
        texts.append(after)
    out = " ".join(t.text for t in run(TrackRedactor(mode), texts)).lower()
    assert not any(ch.isdigit() for ch in out), (texts, out)
    assert not any(word in out.replace(",", " ").split() for word in WORDS), (texts, out)
