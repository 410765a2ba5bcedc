"""Free-text scanning: recall on planted PII, PII-free text left alone, only spans replaced."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from evals.pii_text import ENTITIES, covered, generate
from server.config import PiiConfig
from server.errors import ConfigError
from server.pii.engine import PiiEngine, engine_settings
from server.pii.scan import Scanner


def test_recall_on_planted_pii_is_at_least_095_per_entity(scanner: Scanner) -> None:
    positives, _ = generate(per_entity=300, negatives=0, seed=101)
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    texts = [sentence.text for sentence in positives]
    for sentence, detections in zip(positives, scanner.find_many(texts), strict=True):
        spans = [(d.start, d.end) for d in detections]
        for planted in sentence.planted:
            total[planted.entity] += 1
            found[planted.entity] += covered(planted, spans)
    recall = {entity: found[entity] / total[entity] for entity in ENTITIES}
    assert all(value >= 0.95 for value in recall.values()), recall


def test_at_least_90_percent_of_pii_free_sentences_come_back_unchanged(scanner: Scanner) -> None:
    _, negatives = generate(per_entity=0, negatives=1000, seed=202)
    changed = [
        s.text for s, found in zip(negatives, scanner.find_many([s.text for s in negatives]), strict=True) if found
    ]
    assert 1 - len(changed) / len(negatives) >= 0.90, changed[:10]


def test_one_string_and_a_batch_find_the_same_spans(scanner: Scanner) -> None:
    positives, negatives = generate(per_entity=20, negatives=50, seed=303)
    texts = [s.text for s in positives + negatives]
    assert scanner.find_many(texts) == [scanner.find(text) for text in texts]


def test_only_the_detected_spans_are_replaced(scanner: Scanner) -> None:
    text = "Ticket #4821: please call +44 20 7946 0958 or write to ada@example.com before 2024-03-01."
    masked, detections = scanner.replace(text, lambda span, entity: f"<{entity}>")
    assert masked == "Ticket #4821: please call <PHONE_NUMBER> or write to <EMAIL_ADDRESS> before 2024-03-01."
    assert [d.entity for d in detections] == ["PHONE_NUMBER", "EMAIL_ADDRESS"]


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("card 4111 1111 1111 1112 declined", "CREDIT_CARD"),  # fails Luhn: masked anyway
        ("card 4111.1111.1111.1111", "CREDIT_CARD"),
        ("mastercard 2221000000000009", "CREDIT_CARD"),
        ("amex 3782 822463 10005", "CREDIT_CARD"),
        ("call (415) 555-0123", "PHONE_NUMBER"),  # a fictional 555 number: masked anyway
        ("tel 06.12.34.56.78", "PHONE_NUMBER"),
        ("mobile 4155550123", "PHONE_NUMBER"),
        ("+81 3-1234-5678", "PHONE_NUMBER"),
        ("SSN 078-05-1120", "US_SSN"),
        ("ssn: 123456789", "US_SSN"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN_CODE"),
        ("pay to BH67BMAG00001299123456 today", "IBAN_CODE"),
        ("from fe80::1ff:fe23:4567:890a", "IP_ADDRESS"),
        ("from 10.0.0.1", "IP_ADDRESS"),
        ("mail JANE.DOE+x@corp.example.co.uk", "EMAIL_ADDRESS"),
    ],
)
def test_pii_in_the_formats_people_write_is_found(scanner: Scanner, text: str, entity: str) -> None:
    assert [d.entity for d in scanner.find(text)] == [entity]


@pytest.mark.parametrize(
    "text",
    [
        "Order 12345678 shipped on 2024-03-01 for $1,234.56.",
        "Upgraded to 10.4.2 on 12.05.2023 at 14:05.",
        "Invoice INV-2024-000123 due 03/04/2024.",
        "Tracking number 1Z999AA10123456784.",
        "Population 38 412 264, extensions 2000-2999.",
        "ISBN 978-3-16-148410-0, 12.5% off.",
        "Ticket #48213 closed after 3 days.",
        "Reach out to the team lead.",
    ],
)
def test_look_alikes_are_left_alone(scanner: Scanner, text: str) -> None:
    assert scanner.find(text) == []


def test_overlapping_detections_are_masked_as_their_union(scanner: Scanner) -> None:
    text = "number 2221 0012 3456 7890 on file"
    [detection] = scanner.find(text)
    assert text[detection.start : detection.end] == "2221 0012 3456 7890"


def test_strings_holding_nul_are_scanned_on_their_own(scanner: Scanner) -> None:
    texts = ["a\x00b ada@example.com", "bob@example.com", "nothing"]
    found = scanner.find_many(texts)
    assert [len(f) for f in found] == [1, 1, 0]
    assert texts[0][found[0][0].start : found[0][0].end] == "ada@example.com"


def test_without_a_ner_model_no_ner_runs(engine: PiiEngine) -> None:
    assert engine.settings.ner_model is None and not engine.ner_enabled
    assert "PERSON" not in engine.entities
    assert type(engine.analyzer.nlp_engine).__name__ == "NoOpNlpEngine"


def test_a_ner_model_directory_that_is_not_there_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pii\.ner_model"):
        engine_settings(PiiConfig(ner_model="models/en_core_web_sm"), str(tmp_path))


def test_an_unknown_phone_region_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"pii\.phone_regions.*XX"):
        engine_settings(PiiConfig(phone_regions=("US", "XX")))


def test_the_analyzer_uses_the_column_name_as_context(engine: PiiEngine) -> None:
    plain = engine.analyze("223-45-6788")
    with_context = engine.analyze("223-45-6788", context=["ssn"])
    assert [r.entity_type for r in with_context] == ["US_SSN"]
    assert max(r.score for r in with_context) > max(r.score for r in plain)
