"""Redaction of one track's finals: a card number, an SSN or a phone number said in groups
across several finals is masked in every one of them (the finals that may begin one are held
until it is complete or cannot be); emails are masked; ordinary numbers stay."""

from __future__ import annotations

import pytest

from callrelay.asr.base import Transcript, Word
from callrelay.redaction.kinds import Kind
from callrelay.redaction.track import RedactMode, TrackRedactor

PCI, PII = RedactMode.PCI, RedactMode.PII


def final(text: str, start: float = 0.0) -> Transcript:
    return Transcript(text=text, start=start, end=start + 1.0)


def said(redactor: TrackRedactor, *finals: str, now: float = 0.0) -> list[str]:
    """What leaves the redactor, in order, once all of `finals` were said (1 s apart)."""
    out: list[str] = []
    for number, text in enumerate(finals):
        out += [t.text for t in redactor.final(final(text, 2.0 * number), now + number)]
    return out + [t.text for t in redactor.flush()]


@pytest.mark.parametrize(
    "groups",
    [
        ("4539", "1488", "0343", "6467."),
        ("My card number is 4539", "1488", "0343", "6467, thanks."),
        ("4, 5, 3, 9,", "1, 4, 8, 8,", "0, 3, 4, 3,", "6, 4, 6, 7."),
        (
            "four five three nine",
            "one four eight eight",
            "oh three four three",
            "six four six seven",
        ),
        ("It's 4111 1111 1111 1111.",),
    ],
)
def test_a_card_number_said_in_groups_is_masked_in_every_final(groups: tuple[str, ...]) -> None:
    out = said(TrackRedactor(PCI), *groups)
    assert len(out) == len(groups)
    assert all("[card number]" in text for text in out), out
    assert not any(ch.isdigit() for text in out for ch in text), out


def test_a_number_is_named_by_all_of_it_not_by_its_first_groups() -> None:
    # With pii, 4539 1488 alone would be a phone number, 4539 14 a number of six digits.
    assert said(TrackRedactor(PII), "4539 14", "88", "0343", "6467.") == (
        ["[card number]"] * 3 + ["[card number]."]
    )
    assert said(TrackRedactor(PII), "Call me on 415 555", "0100.") == [
        "Call me on [phone]",
        "[phone].",
    ]


def test_nothing_of_a_card_number_leaves_before_it_is_complete() -> None:
    redactor = TrackRedactor(PCI)
    assert redactor.final(final("4539"), 0.0) == []
    assert redactor.final(final("1488", 2), 1.0) == []
    assert redactor.final(final("0343", 4), 2.0) == []
    out = redactor.final(final("6467.", 6), 3.0)
    assert [t.text for t in out] == ["[card number]"] * 3 + ["[card number]."]


def test_a_number_that_stops_short_of_a_card_goes_out_as_said() -> None:
    assert said(TrackRedactor(PCI), "My order number is 4567", "thanks a lot.") == [
        "My order number is 4567",
        "thanks a lot.",
    ]


def test_a_held_final_goes_out_when_its_number_does_not_go_on() -> None:
    redactor = TrackRedactor(PCI, hold_seconds=10)
    assert redactor.final(final("The code on the box is 4567"), 100.0) == []
    assert redactor.expire(105.0) == []
    [out] = redactor.expire(110.0)
    assert out.text == "The code on the box is 4567" and out.redacted == ()


@pytest.mark.parametrize(
    "text",
    [
        "I'd like two tickets for the 3 pm show.",
        "I'm in room 2.",
        "Order 15 items, it costs 49 dollars.",
        "We open at 9 and close at 5.",
        "It was 2019 when I moved.",
    ],
)
def test_ordinary_numbers_stay(text: str) -> None:
    assert said(TrackRedactor(PII), text) == [text]


def test_a_card_s_expiry_and_security_code_said_after_it_are_masked() -> None:
    out = said(
        TrackRedactor(PCI),
        "5555 5555 5555 4444.",
        "It expires oh four twenty seven.",
        "And the security code is 123.",
    )
    assert out == [
        "[card number].",
        "It expires [expiry].",
        "And the security code is [security code].",
    ]


def test_a_social_security_number_in_three_finals_is_masked_with_pii_only() -> None:
    groups = ("My social is 123", "45", "6789.")
    assert said(TrackRedactor(PII), *groups) == [
        "My social is [ssn]",
        "[ssn]",
        "[ssn].",
    ]
    assert said(TrackRedactor(PCI), *groups) == list(groups)


def test_an_ssn_the_recogniser_wrote_with_more_digits_is_still_an_ssn() -> None:
    groups = ("My social security number is 1, 2, 3, 4.", "4, 5,", "6 7 8 9 10")
    assert said(TrackRedactor(PII), *groups) == [
        "My social security number is [ssn].",
        "[ssn],",
        "[ssn]",
    ]
    assert said(TrackRedactor(PCI), *groups)[1:] == ["[card number],", "[card number]"]


def test_phone_numbers_are_masked_with_pii() -> None:
    assert said(TrackRedactor(PII), "Call me on 415 555", "0100 please.") == [
        "Call me on [phone]",
        "[phone] please.",
    ]


def test_a_number_of_six_digits_is_masked_with_pii() -> None:
    assert said(TrackRedactor(PII), "My member number is 482913.") == [
        "My member number is [number]."
    ]
    assert said(TrackRedactor(PII), "five, three, four", "one, two, three.", "Okay.") == [
        "[number]",
        "[number].",
        "Okay.",
    ]
    assert said(TrackRedactor(PCI), "My member number is 482913.") == [
        "My member number is 482913."
    ]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Write to ann.lee@example.com please.", "Write to [email] please."),
        ("It's ann dot lee at example dot com.", "It's [email]."),
    ],
)
def test_emails_written_or_said_are_masked_with_pii(text: str, masked: str) -> None:
    assert said(TrackRedactor(PII), text) == [masked]
    assert said(TrackRedactor(PCI), text) == [text]


def test_masked_words_keep_their_times_for_the_recordings() -> None:
    words = tuple(
        Word(text, 1.0 + i, 1.8 + i, 0.9)
        for i, text in enumerate(["Card", "4111", "1111", "1111", "1111."])
    )
    transcript = Transcript("Card 4111 1111 1111 1111.", 1.0, 5.8, words=words)
    [out] = TrackRedactor(PCI).final(transcript, 0.0)
    assert out.text == "Card [card number]."
    assert [w.text for w in out.words] == ["Card", "[card number]"]
    [masked] = out.redacted
    assert (masked.kind, masked.start, masked.end) == (Kind.CARD.value, 2.0, 5.8)


def test_partials_show_no_number() -> None:
    redactor = TrackRedactor(PCI)
    partial = Transcript("my card is 4539 14", 0.0, 1.0, is_final=False)
    assert redactor.partial(partial).text == "my card is [number]"
    assert redactor.partial(final("room 2 please")).text == "room 2 please"


def test_the_last_group_of_a_phone_number_said_after_a_pause_is_masked_too() -> None:
    out = said(TrackRedactor(PII), "Call me on 415 555", "0100, thank you.", "2389.")
    assert out == ["Call me on [phone]", "[phone], thank you.", "[phone]."]


def test_a_word_misheard_among_digits_read_out_does_not_end_the_number() -> None:
    out = said(TrackRedactor(PCI), "4539", "one sides eight eight", "0343", "6467.")
    assert out == ["[card number]"] * 3 + ["[card number]."]
    assert said(TrackRedactor(PII), "Room 2 or 3.") == ["Room 2 or 3."]


def test_a_word_that_sounds_like_a_digit_is_one_beside_digits() -> None:
    out = said(TrackRedactor(PCI), "4539", "one for eight eight", "0343", "6467.")
    assert out == ["[card number]"] * 3 + ["[card number]."]
    assert said(TrackRedactor(PCI), "A table for 4 at 8, please.") == [
        "A table for 4 at 8, please."
    ]


@pytest.mark.parametrize("misheard", [("hey hey hey",), ("hey hey hey", "hey, hey")])
def test_short_finals_between_two_groups_are_masked_when_the_number_goes_on(
    misheard: tuple[str, ...],
) -> None:
    out = said(TrackRedactor(PCI), "4539", "1488", *misheard, "0343 6467.")
    assert out == ["[card number]"] * (2 + len(misheard)) + ["[card number]."]


def test_three_short_finals_in_a_row_end_a_number() -> None:
    finals = ("4539", "1488", "hey", "you", "there", "6467.")
    assert said(TrackRedactor(PCI), *finals) == list(finals)


def test_a_short_final_after_a_number_goes_out_as_said_when_the_number_does_not_go_on() -> None:
    finals = ("My order is 4539 1488", "thank you", "goodbye.")
    assert said(TrackRedactor(PCI), *finals) == list(finals)
    assert said(TrackRedactor(PCI), "My order is 4539 1488", "thank you") == [
        "My order is 4539 1488",
        "thank you",
    ]
