"""Keyterms: names, products and account words recognition is told to favour (`ASR_KEYTERMS`
for every call, a call's own `keyterms` on `/make-call`, carried to the stream as a
`<Parameter>`). Pure."""

from __future__ import annotations

MAX_KEYTERMS = 50
MAX_KEYTERM_CHARACTERS = 50
KEYTERM_PARAMETER = "keyterms"
"""The stream's `<Parameter>` carrying a call's own keyterms, comma-separated."""


def keyterm_list(text: str) -> list[str]:
    """Keyterms written comma-separated (`ASR_KEYTERMS`, a call's `keyterms`); ValueError
    names what is wrong with them."""
    terms = [term.strip() for term in text.split(",") if term.strip()]
    if len(terms) > MAX_KEYTERMS:
        raise ValueError(f"at most {MAX_KEYTERMS} keyterms")
    for term in terms:
        if len(term) > MAX_KEYTERM_CHARACTERS or not term.isprintable():
            raise ValueError(f"a keyterm is printable text of at most {MAX_KEYTERM_CHARACTERS}")
    return terms
