"""One track's redaction (pure: no I/O, no clock; the caller says what time it is).

A card number read out in groups comes from the recogniser as several finals, each a
harmless-looking group of digits. So a final that ends in a group of digits is held back
(up to `HOLD_SECONDS`) while the next final may continue the number; once the number is
complete, or cannot be, the held finals and the new one go out together, each masked where it
holds part of a sensitive number. Nothing leaves here unmasked that is later found to be part
of one, so every output sees only masked text; the price is that a final ending in digits
reaches listeners up to `HOLD_SECONDS` later. Partials, which are shown live and replaced, have
every number masked.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from callrelay.asr.base import Redacted, Transcript, Word
from callrelay.redaction.kinds import (
    CARD_WORDS,
    CODE_WORDS,
    SSN_WORDS,
    Kind,
    emails,
    long_as_a_card,
    looks_like_expiry,
    passes_luhn,
    personal_number,
    words_within,
)
from callrelay.redaction.spoken import (
    MISHEARD,
    Run,
    Token,
    read_out,
    reads_digits,
    runs,
    tokens,
)

HOLD_SECONDS = 10.0
"""How long a final ending in digits waits for the rest of a number said in groups."""
MAX_NUMBER_DIGITS = 24
"""The longest number looked for: a card number said with its expiry and code in one breath."""
GAP_WORDS = 4
"""The most words of a final without digits that may be a group of a number misheard."""
GAP_FINALS = 2
"""The most such finals in a row between two groups of one number."""
RECENT_FINALS = 3
"""How many of the track's last finals are read for words that say what a number is."""
CARD_CONTEXT_SECONDS = 60.0
"""After a card number, how long (on the call's timeline) the digits said are taken for its
expiry date and security code."""


class RedactMode(StrEnum):
    OFF = "off"
    PCI = "pci"
    PII = "pii"


@dataclass
class _Final:
    transcript: Transcript
    words: list[Token]
    runs: list[Run]
    masks: dict[int, Kind] = field(default_factory=dict)
    shown_by_itself: dict[int, Kind] = field(default_factory=dict)
    """Its masks before the numbers around it were read: a held final's numbers are read
    again as the chain grows (`415 555` is no number of six but the start of a phone's)."""
    held_at: float = 0.0
    gap: bool = False
    """A few words without digits between two groups of a number, held as a group the
    recogniser misheard (`eight eight eight | hey, hey, hey | one eight eight one`): its
    words count as digits if the next final goes on with the number, else as said."""

    def as_gap(self) -> None:
        said = [index for index, word in enumerate(self.words) if not word.is_filler]
        self.runs = [Run(said[0], said[-1], (MISHEARD * len(said),))]
        self.gap = True

    def not_a_gap(self) -> None:
        self.runs, self.gap = [], False

    @property
    def ends_in_digits(self) -> bool:
        """Whether its last run ends it: nothing said after, or in a final that reads digits
        out, one word (a digit misheard: `five, five sides`)."""
        return bool(self.runs) and self._said_outside(self.runs[-1].last + 1, len(self.words))

    @property
    def starts_in_digits(self) -> bool:
        return bool(self.runs) and self._said_outside(0, self.runs[0].first)

    def said_before(self, run: Run, words: int = 6) -> str:
        """The few words said before `run`: what may say what its number is."""
        return " ".join(w.bare for w in self.words[max(0, run.first - words) : run.first])

    def _said_outside(self, start: int, end: int) -> bool:
        said = sum(not word.is_filler for word in self.words[start:end])
        return said == 0 or (said == 1 and reads_digits(self.words, self.runs))

    def mask(self, run: Run, kind: Kind) -> None:
        for index in range(run.first, run.last + 1):
            self.masks.setdefault(index, kind)

    def masked(self) -> Transcript:
        if not self.masks:
            return self.transcript
        texts: list[str] = []
        words: list[Word] = []
        spans: list[Redacted] = []
        timed = self.transcript.words if len(self.transcript.words) == len(self.words) else None
        index = 0
        while index < len(self.words):
            kind = self.masks.get(index)
            word = self.words[index]
            if kind is None:
                texts.append(word.text)
                words.append(timed[index] if timed else Word(word.text, word.start, word.end, 0))
                index += 1
                continue
            end = index
            while self.masks.get(end + 1) is kind:
                end += 1
            tail = re.search(r"[.,;:!?]+$", self.words[end].text)
            texts.append(kind.label + (tail.group() if tail else ""))
            words.append(Word(kind.label, word.start, self.words[end].end, 0.0))
            spans.append(Redacted(kind.value, word.start, self.words[end].end))
            index = end + 1
        return replace(
            self.transcript,
            text=" ".join(texts),
            words=tuple(words) if self.transcript.words else (),
            redacted=tuple(spans),
        )


class TrackRedactor:
    def __init__(self, mode: RedactMode, hold_seconds: float = HOLD_SECONDS) -> None:
        self.mode = mode
        self.hold_seconds = hold_seconds
        self._held: list[_Final] = []
        self._card_until = float("-inf")
        self._number_until = float("-inf")
        """After an SSN or a phone number (pii): until when a group of digits is its rest."""
        self._number_kind = Kind.PHONE
        self._recent: deque[str] = deque(maxlen=RECENT_FINALS)
        """What the last few finals said: "my card number is", said just before the digits,
        tells what they are."""

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def pass_on(self, transcript: Transcript, now: float) -> list[Transcript]:
        """What to send on now for a transcript from the recogniser: a partial masked at
        once; for a final, the finals that are ready, masked, in order."""
        if not transcript.is_final:
            return [self.partial(transcript)]
        return self.final(transcript, now)

    def final(self, transcript: Transcript, now: float) -> list[Transcript]:
        """The finals to send now, masked, in order: none while this one is held."""
        said = tokens(transcript)
        final = _Final(transcript, said, read_out(said, runs(said)), held_at=now)
        self._mask_said_within(final)
        final.shown_by_itself = dict(final.masks)
        if self._may_be_a_gap(final):
            final.as_gap()
            self._held.append(final)
            return []
        if not final.starts_in_digits:
            self._undo_gaps()
        chain = [*self._held, final]
        self._mask_numbers(chain)
        if final.ends_in_digits and self._may_continue(chain):
            self._held.append(final)
            return []
        self._held = []
        self._recent.extend(" ".join(w.bare for w in f.words) for f in chain)
        return [f.masked() for f in chain]

    def _may_be_a_gap(self, final: _Final) -> bool:
        said = sum(not word.is_filler for word in final.words)
        gaps = len(self._held) - len(self._held_before_gaps())
        return (
            not final.runs
            and 1 <= said <= GAP_WORDS
            and bool(self._held)
            and gaps < GAP_FINALS
            and self._may_continue(self._held)
        )

    def _held_before_gaps(self) -> list[_Final]:
        held = list(self._held)
        while held and held[-1].gap:
            held.pop()
        return held

    def _undo_gaps(self) -> None:
        """The held finals that were taken for misheard groups are said as they are: what
        came after them did not go on with the number."""
        for final in self._held[len(self._held_before_gaps()) :]:
            final.not_a_gap()

    def expire(self, now: float) -> list[Transcript]:
        """The held finals, if the first has waited its time: the number did not go on."""
        if not self._held or now - self._held[0].held_at < self.hold_seconds:
            return []
        return self.flush()

    def flush(self) -> list[Transcript]:
        """Every held final (the track ended)."""
        self._undo_gaps()
        held, self._held = self._held, []
        return [f.masked() for f in held]

    def partial(self, transcript: Transcript) -> Transcript:
        """A partial with every number in it masked, and whatever else a final would be."""
        said = tokens(transcript)
        final = _Final(transcript, said, read_out(said, runs(said)))
        self._mask_said_within(final)
        for run in final.runs:
            if len(run.digits) >= 2:
                final.mask(run, Kind.NUMBER)
        return final.masked()

    # Finding what is sensitive.

    def _mask_said_within(self, final: _Final) -> None:
        """What one final shows by itself: emails, names and places (pii), and digits after a
        keyword that says what they are (an expiry date, a security code)."""
        if self.mode is RedactMode.PII:
            for entity in final.transcript.entities:
                kind = Kind.NAME if entity.kind == "name" else Kind.ADDRESS
                for index in words_within(final.transcript.text, entity.start, entity.end):
                    final.masks.setdefault(index, kind)
            for first, last in emails(final.words):
                for index in range(first, last + 1):
                    final.masks.setdefault(index, Kind.EMAIL)
        for run in final.runs:
            before = final.said_before(run)
            if re.search(r"expir|\bexp\b|valid (thru|through|until)", before):
                if 3 <= len(run.digits) <= 6:
                    final.mask(run, Kind.EXPIRY)
            elif CODE_WORDS.search(before) and 3 <= len(run.digits) <= 4:
                final.mask(run, Kind.CODE)

    def _mask_numbers(self, chain: Sequence[_Final]) -> None:
        for final in chain:
            final.masks = dict(final.shown_by_itself)
        for segment in _segments(chain):
            self._mask_segment(segment, chain)

    def _mask_segment(self, segment: list[tuple[_Final, Run]], chain: Sequence[_Final]) -> None:
        """One number (its runs, across finals): a card if a stretch of it is one, else, by
        how many digits it has, a card, an SSN or a phone number; digits soon after a card
        are its expiry and code."""
        context = self._context(chain)
        digits = "".join(run.digits for _, run in segment)
        kind = None
        card = _longest(segment, lambda d: 13 <= len(d) <= 19 and passes_luhn(d))
        about_cards = bool(CARD_WORDS.search(context))
        about_ssn = bool(SSN_WORDS.search(context))
        an_ssn = self.mode is RedactMode.PII and about_ssn and len(digits) <= 12
        long_enough = long_as_a_card(len(digits), len(segment), about_cards, about_ssn)
        if card is None and long_enough and not an_ssn:
            card = segment
        if card is not None:
            for final, run in card:
                final.mask(run, Kind.CARD)
            self._card_until = card[-1][0].transcript.end + CARD_CONTEXT_SECONDS
        elif self.mode is RedactMode.PII:
            kind = personal_number(len(digits), about_ssn)
            if kind is not None:
                self._number_until = segment[-1][0].transcript.end + CARD_CONTEXT_SECONDS
                self._number_kind = kind
        for final, run in segment:
            if kind is not None:
                final.mask(run, kind)
            elif card is not None and run.digits:  # said on from the card, in one breath
                final.mask(run, _after_a_card(run))
            elif final.transcript.start <= self._card_until and 3 <= len(run.digits) <= 6:
                final.mask(run, Kind.EXPIRY if looks_like_expiry(run) else Kind.CODE)
            elif final.transcript.start <= self._number_until and 3 <= len(run.digits) <= 6:
                final.mask(run, self._number_kind)  # the rest of a number the last one began

    def _may_continue(self, chain: Sequence[_Final]) -> bool:
        """Whether the digits at the end of the chain could still grow into something to mask."""
        segments = _segments(chain)
        if not segments:
            return False
        last = segments[-1]
        digits = "".join(run.digits for _, run in last)
        kinds = {final.masks.get(run.first) for final, run in last}
        # What is said after a complete card, near it, is masked as its expiry or code. Even
        # one digit may begin a card (`Sure, it is 4`); a shorter number passes Luhn's check
        # one time in ten, and nine digits (heard, not misheard) are an SSN's only where the
        # call speaks of one.
        complete = (
            len(digits) >= 19
            or (len(digits) >= 16 and passes_luhn(digits))
            or kinds <= {Kind.EXPIRY, Kind.CODE}
            or (
                kinds <= {Kind.SSN}
                and len(digits.replace(MISHEARD, "")) >= 9
                and bool(SSN_WORDS.search(self._context(chain)))
            )
        )
        return not complete

    def _context(self, chain: Sequence[_Final]) -> str:
        """The track's last finals and the chain: where words say what a number is."""
        return " ".join([*self._recent, *(w.bare for f in chain for w in f.words)])


def _after_a_card(run: Run) -> Kind:
    """What digits said on from a card number, with no pause, are: its expiry date, its
    security code, or more of it."""
    if looks_like_expiry(run):
        return Kind.EXPIRY
    return Kind.CODE if 3 <= len(run.digits) <= 4 else Kind.CARD


def _segments(chain: Sequence[_Final]) -> list[list[tuple[_Final, Run]]]:
    """The chain's runs grouped into numbers: runs next to each other in one final (nothing
    but fillers between), or the run that ends one final and the one that starts the next."""
    segments: list[list[tuple[_Final, Run]]] = []
    previous: tuple[_Final, Run] | None = None
    for final in chain:
        for position, run in enumerate(final.runs):
            if previous is None:
                joins = False
            elif previous[0] is final:
                joins = _only_fillers(final.words, previous[1].last + 1, run.first)
            else:
                joins = (
                    position == 0
                    and previous[0].ends_in_digits
                    and previous[1] is previous[0].runs[-1]
                    and final.starts_in_digits
                )
            if joins:
                segments[-1].append((final, run))
            else:
                segments.append([(final, run)])
            previous = (final, run)
    return segments


def _only_fillers(words: Sequence[Token], start: int, end: int) -> bool:
    return all(word.is_filler for word in words[start:end])


def _longest(
    segment: list[tuple[_Final, Run]], wanted: Callable[[str], bool]
) -> list[tuple[_Final, Run]] | None:
    """The longest stretch of whole runs whose digits `wanted(digits)` accepts."""
    best: list[tuple[_Final, Run]] | None = None
    for first in range(len(segment)):
        digits = ""
        for last in range(first, len(segment)):
            digits += segment[last][1].digits
            if len(digits) > MAX_NUMBER_DIGITS:
                break
            if wanted(digits) and (best is None or last + 1 - first > len(best)):
                best = segment[first : last + 1]
    return best
