"""The PII vocabulary every other module shares: entity names, their short labels, a column's
classification, and the one error masking raises.

This module imports nothing heavy (no Presidio, no spaCy), so the state store, the policy layer and
`describe` can use these names without paying for the detection engine.

Entity names follow Presidio's where Presidio has one (EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD,
IBAN_CODE, US_SSN, IP_ADDRESS, PERSON, LOCATION); the rest are Bastion's own. `FREE_TEXT` is not an
entity of a value but of a column: its values are prose that may contain any entity, so they are
scanned and only the detected spans replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.errors import BastionError

EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD = "CREDIT_CARD"
IBAN_CODE = "IBAN_CODE"
US_SSN = "US_SSN"
IP_ADDRESS = "IP_ADDRESS"
PERSON = "PERSON"
LOCATION = "LOCATION"
DATE_OF_BIRTH = "DATE_OF_BIRTH"
PASSPORT = "PASSPORT"
TAX_ID = "TAX_ID"
BANK_ACCOUNT = "BANK_ACCOUNT"
FREE_TEXT = "FREE_TEXT"

#: the value `pii.columns` uses to say "this column holds no PII, whatever its name or values say"
NONE = "NONE"

#: entity -> the short label a hashed value carries (`email:5f2c9a1e3b`), so that an agent reading a
#: masked result still knows what kind of value it is looking at
LABELS: dict[str, str] = {
    EMAIL_ADDRESS: "email",
    PHONE_NUMBER: "phone",
    CREDIT_CARD: "card",
    IBAN_CODE: "iban",
    US_SSN: "ssn",
    IP_ADDRESS: "ip",
    PERSON: "name",
    LOCATION: "address",
    DATE_OF_BIRTH: "dob",
    PASSPORT: "passport",
    TAX_ID: "taxid",
    BANK_ACCOUNT: "account",
    FREE_TEXT: "text",
}

#: every entity Bastion knows; `pii.columns` and policies may name only these (or NONE)
KNOWN_ENTITIES: frozenset[str] = frozenset(LABELS)

#: the entities the free-text scanner finds by pattern (no NER model needed)
PATTERN_ENTITIES: tuple[str, ...] = (CREDIT_CARD, IBAN_CODE, US_SSN, PHONE_NUMBER, EMAIL_ADDRESS, IP_ADDRESS)

#: found only by a spaCy NER model, when the operator configures one (`pii.ner_model`)
NER_ENTITIES: tuple[str, ...] = (PERSON, LOCATION)


def label_for(entity: str | None) -> str:
    """The hash label of an entity; `pii` for a value masked without a known entity."""
    if entity is None:
        return "pii"
    return LABELS.get(entity, entity.lower())


Source = Literal["override", "name", "comment", "type", "sample", "none"]


@dataclass(frozen=True)
class ColumnClassification:
    """What one column holds, decided once per catalog scan and kept in the state store.

    `entity` is None when the column holds no PII. `evidence` says why, in words an operator can
    check ("name matches 'email'", "87/100 sampled values are PHONE_NUMBER (mean score 0.71)");
    it never quotes a value. `fingerprint` identifies the column's definition (type, comment,
    override, classifier version) at the time it was classified: when the catalog's fingerprint
    differs, the stored result is stale and the column is classified again.
    """

    database: str
    schema: str
    table: str
    column: str
    entity: str | None
    confidence: float
    evidence: str
    source: Source
    fingerprint: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.schema, self.table, self.column)

    @property
    def is_pii(self) -> bool:
        return self.entity is not None


class MaskingFailed(BastionError):
    """Masking could not be completed, so the result is withheld: no unmasked value ever leaves.

    The message names the column and the kind of failure, never a value."""

    code = "masking_failed"
