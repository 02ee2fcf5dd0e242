"""A transcript as words with times, and the digits each word says (pure).

Speech engines write numbers every way people say them: `4539`, `4, 5, 3, 9`, `four five three
nine`, `oh seven eight`, `double five`, `twenty seven`. Here each word of a transcript gets the
digits it stands for, so that a number is found however it was written; a run is a stretch of
words that say digits one after another (fillers such as "uh" and dashes do not break it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from callrelay.asr.base import Transcript, Word

UNITS = {
    "zero": 0, "oh": 0, "o": 0, "nought": 0, "one": 1, "two": 2, "three": 3, "four": 4,
    "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {
    "twenty": 2, "thirty": 3, "forty": 4, "fifty": 5, "sixty": 6, "seventy": 7, "eighty": 8,
    "ninety": 9,
}  # fmt: skip
REPEATS = {"double": 2, "triple": 3}
HOMOPHONES = {"for": "4", "to": "2", "too": "2", "won": "1", "ate": "8"}
"""Words a recogniser writes for a digit (`one for` for `one four`): digits only next to one."""
FILLERS = {"uh", "um", "er", "erm", "ah", "-", "\N{EN DASH}", "\N{EM DASH}", "and"}
"""Words said between the groups of one number that do not end it."""
MISHEARD = "?"
"""A digit the recogniser wrote as another word (`five sides five` for `five five five`)."""
_EDGES = re.compile(r"^[\"'(\[]+|[\"')\].,;:!?]+$")
_NUMERAL = re.compile(r"\+?\d+(?:[-/.]\d+)*")


@dataclass(frozen=True)
class Token:
    """One word of a transcript as said: its text as written, its times, and its digits."""

    text: str
    start: float
    end: float
    digits: str = ""
    tens: bool = False
    """A tens word (`twenty`): a unit said after it joins it (`twenty seven` is 27)."""
    repeat: int = 0
    """`double` (2) or `triple` (3): the digit said next, that many times."""
    sounds_like: str = ""
    """The digit a word sounds like (`for`): it is that digit next to another."""

    @property
    def bare(self) -> str:
        return _EDGES.sub("", self.text).lower()

    @property
    def is_filler(self) -> bool:
        return self.bare in FILLERS or not self.bare


def tokens(transcript: Transcript) -> list[Token]:
    """The transcript's words with their times: the engine's own word times where it gave
    them for every word, else the words spread evenly over the transcript's time."""
    written = transcript.text.split()
    if transcript.words and len(transcript.words) == len(written):
        timed: Sequence[Word] = transcript.words
    else:
        step = (transcript.end - transcript.start) / max(1, len(written))
        timed = [
            Word(text, transcript.start + i * step, transcript.start + (i + 1) * step, 0.0)
            for i, text in enumerate(written)
        ]
    return [said(text, word.start, word.end) for text, word in zip(written, timed, strict=True)]


def said(text: str, start: float, end: float) -> Token:
    bare = _EDGES.sub("", text).lower()
    if _NUMERAL.fullmatch(bare):
        return Token(text, start, end, re.sub(r"\D", "", bare))
    if bare in UNITS:
        return Token(text, start, end, str(UNITS[bare]))
    if bare in TEENS:
        return Token(text, start, end, str(TEENS[bare]))
    if bare in TENS:
        return Token(text, start, end, str(TENS[bare] * 10), tens=True)
    if bare in REPEATS:
        return Token(text, start, end, repeat=REPEATS[bare])
    return Token(text, start, end, sounds_like=HOMOPHONES.get(bare, ""))


@dataclass(frozen=True)
class Run:
    """Words in a row of one transcript that say digits: `first`..`last` (indices into its
    tokens), and the digits they say, in groups as they were said."""

    first: int
    last: int
    groups: tuple[str, ...]

    @property
    def digits(self) -> str:
        return "".join(self.groups)


def runs(words: Sequence[Token]) -> list[Run]:
    """Every run of digit words, in order."""
    found: list[Run] = []
    index = 0
    while index < len(words):
        if not _starts_digits(words, index):
            index += 1
            continue
        first, groups, index = index, [], index
        last = index
        while index < len(words):
            word = words[index]
            if word.sounds_like and index == first:
                groups.append(word.sounds_like)  # `for one`: before a digit
            elif word.repeat and index + 1 < len(words) and len(words[index + 1].digits) == 1:
                groups.append(words[index + 1].digits * word.repeat)
                last = index = index + 1
            elif word.tens and index + 1 < len(words) and _unit(words[index + 1]):
                groups.append(word.digits[0] + words[index + 1].digits)
                last = index = index + 1
            elif word.digits:
                groups.append(word.digits)
                last = index
            elif word.sounds_like and (index + 1 == len(words) or words[index + 1].digits):
                groups.append(word.sounds_like)  # `one for eight`, or `one for` at the end
                last = index
            elif not (word.is_filler and _starts_digits(words, index + 1)):
                break
            index += 1
        found.append(Run(first, last, _grouped(groups)))
        index = last + 1
    return found


def _starts_digits(words: Sequence[Token], index: int) -> bool:
    if index >= len(words):
        return False
    word = words[index]
    if word.sounds_like:
        return index + 1 < len(words) and bool(words[index + 1].digits)
    return bool(word.digits) or (word.repeat > 0 and index + 1 < len(words))


def _unit(word: Token) -> bool:
    return len(word.digits) == 1 and not word.tens


def _grouped(digits: list[str]) -> tuple[str, ...]:
    """Single digits said one after another are one group (`4 5 3 9`, or `4, 5, 3, 9` as
    Whisper may write it, is `4539`); a numeral of several digits or a spoken pair (`twenty
    seven`) is a group of its own."""
    groups: list[str] = []
    singles = ""
    for digit_text in digits:
        if len(digit_text) == 1:
            singles += digit_text
            continue
        if singles:
            groups.append(singles)
            singles = ""
        groups.append(digit_text)
    if singles:
        groups.append(singles)
    return tuple(groups)


def reads_digits(words: Sequence[Token], found: Sequence[Run]) -> bool:
    """Whether a transcript is mostly digits (at least two, and half its words): someone
    reading a number out, where a word that is not a digit is more likely one misheard."""
    said = [word for word in words if not word.is_filler]
    in_runs = sum(run.last + 1 - run.first for run in found)
    return in_runs >= 2 and 2 * in_runs >= len(said)


def read_out(words: Sequence[Token], found: list[Run]) -> list[Run]:
    """The runs of a transcript that reads digits out, where one word between two runs
    (`five sides five`) is taken for a digit the recogniser misheard: the runs join, that word
    counting as one digit unknown (`MISHEARD`). Other transcripts' runs are as found."""
    if len(found) < 2 or not reads_digits(words, found):
        return found
    joined = [found[0]]
    for run in found[1:]:
        previous = joined[-1]
        between = [w for w in words[previous.last + 1 : run.first] if not w.is_filler]
        if len(between) == 1:
            groups = (*previous.groups, MISHEARD, *run.groups)
            joined[-1] = Run(previous.first, run.last, groups)
        else:
            joined.append(run)
    return joined
