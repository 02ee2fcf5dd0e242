"""What a number or a few words are, by rule: Luhn's check (which cannot tell with a digit
misheard), an expiry date, the lengths that make an SSN, a phone number or another number of
a person's, the lengths that make a card without the check, and emails written or said."""

from __future__ import annotations

import pytest

from callrelay.asr.base import Transcript
from callrelay.redaction.kinds import (
    Kind,
    emails,
    long_as_a_card,
    looks_like_expiry,
    passes_luhn,
    personal_number,
    words_within,
)
from callrelay.redaction.spoken import MISHEARD, Run, tokens


@pytest.mark.parametrize(
    ("digits", "passes"),
    [
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("378282246310005", True),  # an Amex: fifteen digits
        (f"41111111{MISHEARD}1111111", False),  # a digit misheard: the check cannot tell
    ],
)
def test_luhns_check(digits: str, passes: bool) -> None:
    assert passes_luhn(digits) is passes


@pytest.mark.parametrize(("digits", "expiry"), [("0427", True), ("1299", True), ("1327", False)])
def test_an_expiry_is_a_month_then_a_year(digits: str, expiry: bool) -> None:
    assert looks_like_expiry(Run(0, 0, (digits,))) is expiry
    assert not looks_like_expiry(Run(0, 0, (f"0{MISHEARD}27",)))


@pytest.mark.parametrize(
    ("count", "about_ssn", "kind"),
    [
        (5, False, None),
        (6, False, Kind.NUMBER),
        (7, False, Kind.PHONE),
        (9, False, Kind.SSN),
        (10, False, Kind.PHONE),
        (10, True, Kind.SSN),
        (12, True, Kind.SSN),  # a recogniser adds digits: 1234 45 678910 for 123 45 6789
        (12, False, None),
    ],
)
def test_a_persons_number_by_its_length(count: int, about_ssn: bool, kind: Kind | None) -> None:
    assert personal_number(count, about_ssn) is kind


def test_a_card_by_its_length_alone() -> None:
    assert long_as_a_card(12, 1, about_cards=False, about_ssn=False)
    assert long_as_a_card(9, 3, about_cards=False, about_ssn=False)  # read out in groups
    assert not long_as_a_card(9, 3, about_cards=False, about_ssn=True)
    assert long_as_a_card(8, 2, about_cards=True, about_ssn=False)
    assert not long_as_a_card(8, 2, about_cards=False, about_ssn=False)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("write to ann.lee@example.com please", [(2, 2)]),
        ("it's ann dot lee at example dot com thanks", [(1, 7)]),
        ("we met at noon", []),
        ("see you at home dot", []),
    ],
)
def test_emails_written_or_said(text: str, found: list[tuple[int, int]]) -> None:
    assert emails(tokens(Transcript(text, 0.0, 1.0))) == found


def test_the_words_a_stretch_of_characters_covers() -> None:
    text = "Hello, my name is Sarah Johnson."
    start = text.index("Sarah")
    assert words_within(text, start, start + len("Sarah Johnson")) == [4, 5]
