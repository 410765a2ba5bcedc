"""Free-text PII recall: Bastion's scanner against Presidio's own recognizers, on planted PII.

`python -m evals.bench.pii_recall` prints a Markdown section for BENCHMARKS.md. The sentences come
from `evals/pii_text.py` (seeded). A planted value counts as found when every letter and digit of it
lies inside a detected span; a PII-free sentence counts as unchanged when nothing is detected in it.

The baseline is what an integration of Presidio alone would run: an `AnalyzerEngine` on the no-op NLP
engine with Presidio's predefined recognizers for the same six entities (its `PhoneRecognizer` with
the same regions; its email recognizer with the offline suffix list, since the stock one would try to
download), at the same score threshold (0.4).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from evals.pii_text import ENTITIES, Sentence, covered, generate
from server.config import PiiConfig

PER_ENTITY = 400
NEGATIVES = 1000
SEED = 7


@dataclass
class Side:
    name: str
    found: Counter[str] = field(default_factory=Counter)
    unchanged: int = 0
    #: microseconds per sentence, positives and negatives
    positive_us: float = 0.0
    negative_us: float = 0.0


@dataclass
class RecallFigures:
    build_s: float
    totals: Counter[str]
    negatives: int
    bastion: Side
    presidio: Side


def presidio_baseline(config: PiiConfig) -> object:
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    from server.pii.recognizers import OfflineEmailRecognizer

    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    recognizers = [
        OfflineEmailRecognizer(),
        PhoneRecognizer(supported_regions=config.phone_regions),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
    ]
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


def _run(side: Side, find: object, positives: list[Sentence], negatives: list[Sentence]) -> None:
    started = time.perf_counter()
    for sentence in positives:
        spans = find(sentence.text)  # type: ignore[operator]
        for planted in sentence.planted:
            if covered(planted, spans):
                side.found[planted.entity] += 1
    side.positive_us = (time.perf_counter() - started) / len(positives) * 1e6
    started = time.perf_counter()
    for sentence in negatives:
        if not find(sentence.text):  # type: ignore[operator]
            side.unchanged += 1
    side.negative_us = (time.perf_counter() - started) / len(negatives) * 1e6


def measure(config: PiiConfig | None = None) -> RecallFigures:
    config = config or PiiConfig()
    started = time.perf_counter()
    from server.pii.engine import PiiEngine, engine_settings

    engine = PiiEngine(engine_settings(config))  # imports Presidio and spaCy (first use in the process)
    build_s = time.perf_counter() - started
    from server.pii.scan import Scanner

    scanner = Scanner(engine)
    positives, negatives = generate(PER_ENTITY, NEGATIVES, SEED)
    totals = Counter(planted.entity for sentence in positives for planted in sentence.planted)

    bastion = Side("Bastion scanner")
    _run(bastion, lambda text: [(d.start, d.end) for d in scanner.find(text)], positives, negatives)

    analyzer = presidio_baseline(config)
    presidio = Side("Presidio recognizers alone")

    def presidio_find(text: str) -> list[tuple[int, int]]:
        return [(r.start, r.end) for r in analyzer.analyze(text, language="en", score_threshold=0.4)]  # type: ignore[attr-defined]

    _run(presidio, presidio_find, positives, negatives)
    return RecallFigures(build_s, totals, len(negatives), bastion, presidio)


def overall(side: Side, totals: Counter[str]) -> float:
    return sum(side.found.values()) / sum(totals.values())


def report(figures: RecallFigures) -> str:
    totals = figures.totals
    lines = [
        f"Sentences from `evals/pii_text.py` (seed {SEED}): {sum(totals.values())} planted values in "
        f"{PER_ENTITY * len(ENTITIES)} sentences, {figures.negatives} PII-free sentences (order numbers, amounts, "
        "dates, versions, tracking ids...). Target: recall >= 0.95 per entity, >= 90% of PII-free sentences "
        "unchanged.",
        "",
        "| | " + " | ".join(ENTITIES) + " | all | unchanged | µs/sentence (PII / none) |",
        "|---|" + "---|" * (len(ENTITIES) + 3),
    ]
    for side in (figures.bastion, figures.presidio):
        recalls = " | ".join(f"{side.found[e] / totals[e]:.3f}" for e in ENTITIES)
        lines.append(
            f"| {side.name} | {recalls} | {overall(side, totals):.3f} | "
            f"{side.unchanged / figures.negatives:.1%} | {side.positive_us:.0f} / {side.negative_us:.0f} |"
        )
    lines += [
        "",
        f"Building the engine once per process (importing Presidio and spaCy, setting up the recognizers, "
        f"warming tldextract and libphonenumber): {figures.build_s:.2f} s.",
    ]
    return "\n".join(lines)


def main() -> None:
    figures = measure()
    print(report(figures))
    gaps = [e for e in ENTITIES if figures.bastion.found[e] / figures.totals[e] < 0.95]
    if gaps or figures.bastion.unchanged / figures.negatives < 0.9:
        print(f"\nBELOW TARGET: {gaps or 'unchanged share'}")
    _ = statistics  # imported for callers that aggregate several runs


if __name__ == "__main__":
    main()
