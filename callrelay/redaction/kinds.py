"""What a number or a few words are, by rule (pure): a card number, its expiry date or code,
an SSN, a phone number, an email; and the words that say so nearby. `track.py` decides which
digits form one number; these say what it is."""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum

from callrelay.redaction.spoken import Run, Token


class Kind(StrEnum):
    CARD = "card number"
    EXPIRY = "expiry"
    CODE = "security code"
    SSN = "ssn"
    PHONE = "phone"
    EMAIL = "email"
    NAME = "name"
    ADDRESS = "address"
    NUMBER = "number"
    """A number in a partial: every one is masked there, whatever it turns out to be; with
    `pii`, a number of six digits in a final (an account or member number, a PIN)."""

    @property
    def label(self) -> str:
        return f"[{self.value}]"


def long_as_a_card(count: int, groups: int, about_cards: bool, about_ssn: bool) -> bool:
    """Besides a stretch that passes Luhn's check: since a recogniser drops and mishears digits
    (`zero three four three` as `0.3.3`), any 12 or more said in a row, 9 or more in three
    groups or more (read out with pauses) unless the call speaks of social security, or 8 or
    more where it speaks of cards. Masking a long account number, or a phone number read out
    in groups, is the price."""
    return (
        count >= 12
        or (count >= 9 and groups >= 3 and not about_ssn)
        or (about_cards and count >= 8)
    )


def personal_number(count: int, about_ssn: bool) -> Kind | None:
    """With `pii`, a number by its length: 9 digits (8 to 12 where the call speaks of social
    security: a recogniser adds and drops digits) an SSN, 7 to 11 a phone number, 6 some other
    number of a person's (an account, a PIN, or one of those above with digits dropped)."""
    if count == 9 or (about_ssn and 8 <= count <= 12):
        return Kind.SSN
    if 7 <= count <= 11:
        return Kind.PHONE
    if count == 6:
        return Kind.NUMBER
    return None


def passes_luhn(digits: str) -> bool:
    if not digits.isdigit():
        return False  # a digit misheard: the check cannot tell
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def looks_like_expiry(run: Run) -> bool:
    digits = run.digits
    return len(digits) == 4 and digits.isdigit() and 1 <= int(digits[:2]) <= 12


CARD_WORDS = re.compile(r"\bcard\b|credit|debit|\bvisa\b|mastercard|master card|\bamex\b")
SSN_WORDS = re.compile(r"social|security number|\bssn\b")
CODE_WORDS = re.compile(r"security code|\bcvv|\bcvc|\bcsc\b|verification (code|number)|card code")
TOP_LEVEL = {"com", "org", "net", "io", "co", "uk", "edu", "gov", "us", "de", "fr", "ca", "info"}


def emails(words: Sequence[Token]) -> list[tuple[int, int]]:
    """Emails written (`ann@example.com`) or said (`ann at example dot com`): their words."""
    found = []
    for index, word in enumerate(words):
        if "@" in word.text:
            found.append((index, index))
        elif word.bare == "at" and index > 0:
            end = index + 1
            while end + 2 < len(words) and words[end + 1].bare == "dot":
                end += 2  # `dot` and the word after it
            if end > index + 1 and words[end].bare in TOP_LEVEL:
                start = index - 1
                while start >= 2 and words[start - 1].bare == "dot":
                    start -= 2
                found.append((start, min(end, len(words) - 1)))
    return found


def words_within(text: str, start: int, end: int) -> list[int]:
    """The indices of the words (as `str.split` cuts them) that overlap characters
    `start`..`end` of `text`."""
    return [
        index
        for index, word in enumerate(re.finditer(r"\S+", text))
        if word.start() < end and word.end() > start
    ]
