"""Presidio, built without downloads, once per process.

`AnalyzerEngine()` with no arguments loads (and, if missing, downloads) a spaCy model and registers
every predefined recognizer for dozens of countries; here that is a bug. This module builds the
engine from explicit parts instead:

- the NLP engine is Presidio's `NoOpNlpEngine` (no tokens, no model) unless `pii.ner_model` names
  a spaCy model *directory*, which is then loaded from disk (never by name: Presidio would try to
  download a model name it cannot find);
- the registry holds only the recognizers for the entities Bastion masks (`recognizers.py`), with
  phone regions from `pii.phone_regions`;
- email domains are checked against tldextract's bundled suffix list, never fetched.

Building is slow (importing Presidio pulls in spaCy: about 1-2 s, measured in BENCHMARKS.md), so
`get_engine` builds lazily on first use and caches per (regions, NER model); the time taken is kept
on the engine (`build_seconds`) and logged.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.config import PiiConfig
from server.errors import ConfigError
from server.pii.model import LOCATION, NER_ENTITIES, PATTERN_ENTITIES, PERSON

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult

log = logging.getLogger(__name__)

#: results below this score are not PII (Presidio's "very weak" patterns score 0.05)
DEFAULT_THRESHOLD = 0.4


@dataclass(frozen=True)
class EngineSettings:
    regions: tuple[str, ...]
    #: an absolute spaCy model directory, or None for the no-op NLP engine
    ner_model: str | None


def engine_settings(config: PiiConfig, base_dir: str = ".") -> EngineSettings:
    """The part of the configuration the engine depends on; ConfigError for a phone region
    libphonenumber does not know or an NER model directory that is not there."""
    import phonenumbers

    regions = tuple(dict.fromkeys(region.upper() for region in config.phone_regions))
    unknown = [region for region in regions if region not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        raise ConfigError(f"pii.phone_regions: unknown region(s) {', '.join(unknown)} (use ISO 3166 codes like US, GB)")
    ner_model = None
    if config.ner_model:
        path = Path(config.ner_model)
        if not path.is_absolute():
            path = Path(base_dir) / path
        if not (path / "config.cfg").is_file():
            raise ConfigError(
                f"pii.ner_model: {path} is not a spaCy model directory (no config.cfg there)",
                hint="Install a model package and point at its directory; Bastion never downloads one.",
            )
        ner_model = str(path.resolve())
    return EngineSettings(regions=regions or ("US",), ner_model=ner_model)


class PiiEngine:
    """The Presidio analyzer plus direct access to its recognizers for the fast scanner."""

    def __init__(self, settings: EngineSettings) -> None:
        started = time.perf_counter()
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
        from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, UsSsnRecognizer

        from server.pii.phones import PhoneShapeRecognizer
        from server.pii.recognizers import (
            CardShapeRecognizer,
            IbanShapeRecognizer,
            IpShapeRecognizer,
            OfflineEmailRecognizer,
            SsnContextRecognizer,
            warm_up,
        )

        self.settings = settings
        #: role -> recognizer; the scanner calls them by role, the analyzer through its registry
        self.recognizers: dict[str, EntityRecognizer] = {
            "email": OfflineEmailRecognizer(),
            "card": CreditCardRecognizer(),
            "card_shape": CardShapeRecognizer(),
            "ssn": UsSsnRecognizer(),
            "ssn_context": SsnContextRecognizer(),
            "iban": IbanShapeRecognizer(),
            "ip": IpShapeRecognizer(),
            "phone": PhoneShapeRecognizer(regions=settings.regions),
        }
        nlp_engine = self._nlp_engine(settings)
        recognizers: list[Any] = list(self.recognizers.values())
        self.ner_enabled = settings.ner_model is not None
        if self.ner_enabled:
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer

            recognizers.append(SpacyRecognizer(supported_entities=[PERSON, LOCATION]))
        registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
        with warnings.catch_warnings():
            # Presidio warns that a lemma enhancer cannot read context *from the text* under the
            # no-op engine; Bastion passes context explicitly (the column name), which it can use
            warnings.simplefilter("ignore", UserWarning)
            self.analyzer: AnalyzerEngine = AnalyzerEngine(
                registry=registry,
                nlp_engine=nlp_engine,
                supported_languages=["en"],
                default_score_threshold=DEFAULT_THRESHOLD,
                context_aware_enhancer=LemmaContextAwareEnhancer(context_matching_mode="whole_word"),
            )
        self.entities: tuple[str, ...] = PATTERN_ENTITIES + (NER_ENTITIES if self.ner_enabled else ())
        warm_up(settings.regions)
        self.build_seconds = time.perf_counter() - started
        log.info("PII engine built in %.2f s (NER %s)", self.build_seconds, "on" if self.ner_enabled else "off")

    @staticmethod
    def _nlp_engine(settings: EngineSettings) -> Any:
        if settings.ner_model is None:
            from presidio_analyzer.nlp_engine import NoOpNlpEngine

            engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        else:
            from presidio_analyzer.nlp_engine import SpacyNlpEngine

            # a directory that exists: Presidio loads it with spacy.load and downloads nothing
            engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": settings.ner_model}])
        engine.load()
        return engine

    def analyze(
        self,
        text: str,
        *,
        context: list[str] | None = None,
        entities: tuple[str, ...] | None = None,
        score_threshold: float = DEFAULT_THRESHOLD,
    ) -> list[RecognizerResult]:
        """Presidio's full analysis (context words raise the score of matching recognizers)."""
        return self.analyzer.analyze(
            text,
            language="en",
            entities=list(entities or self.entities),
            context=context,
            score_threshold=score_threshold,
        )


_lock = threading.Lock()
_engines: dict[EngineSettings, PiiEngine] = {}


def get_engine(config: PiiConfig, base_dir: str = ".") -> PiiEngine:
    """The engine for this configuration, built on first use and shared afterwards."""
    settings = engine_settings(config, base_dir)
    engine = _engines.get(settings)
    if engine is not None:
        return engine
    with _lock:
        engine = _engines.get(settings)
        if engine is None:
            engine = _engines[settings] = PiiEngine(settings)
    return engine
