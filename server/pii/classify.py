"""Column classification rules: what a column holds, from its name, comment, type and values.

The order is the order of trust, and the first rule that decides wins:

1. **override** (`pii.columns`): the operator said so; `NONE` means not PII whatever else says.
2. **type**: `inet`/`cidr` hold IP addresses; `boolean` and `uuid` hold no PII whatever the name
   (`email_verified boolean` is not an email).
3. **name**: tokens of the column name in any naming style (`email`, `e_mail`, `emailAddress`,
   `EMAIL_ADDR`, `phone_no`, `msisdn`, `dob`, `cc_number`...). A name rule only counts for a type
   that can hold the entity: a phone or an SSN may be stored as a number, a birth date as a date, an
   email only as text. Tokens such as `id`, `count`, `verified`, `hash` or `template` veto it
   (`email_template_id` is not an email).
4. **comment**: the same rules on the words of the column's comment.
5. **type, again**: numbers, dates, times, intervals and binary data without a name or comment
   hint hold no PII (an `amount numeric` or an `order_no bigint` is not a phone).
6. **sample** (text-like columns only): up to `pii.sample_size` non-null values through Presidio
   with the column's name as context. An entity is accepted when at least 60% of the sampled values
   are covered by it (80% of the value's characters) at a score of 0.5 or more. Otherwise the
   column is FREE_TEXT (its values will be scanned and only spans replaced) when its values are long
   prose (median length over 60, mostly with spaces), when it holds JSON with PII inside, or when
   20% or more of its values contain some PII; or when its name says notes, comments, description...

`ColumnFacts` is everything a decision needs; `decide_without_sample` and `decide_from_sample` are pure
functions of it, so the rules are tested without a database.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.pii.model import (
    BANK_ACCOUNT,
    CREDIT_CARD,
    DATE_OF_BIRTH,
    EMAIL_ADDRESS,
    FREE_TEXT,
    IBAN_CODE,
    IP_ADDRESS,
    LOCATION,
    NONE,
    PASSPORT,
    PERSON,
    PHONE_NUMBER,
    TAX_ID,
    US_SSN,
    Source,
)

#: bump when the rules change: stored classifications of an older version are redone
CLASSIFIER_VERSION = 1

ACCEPT_SHARE = 0.6
COVER_SHARE = 0.8
MIN_SCORE = 0.5
MIXED_SHARE = 0.2
FREE_TEXT_MEDIAN = 60


@dataclass(frozen=True)
class Decision:
    entity: str | None
    confidence: float
    evidence: str
    source: Source


@dataclass(frozen=True)
class ColumnFacts:
    schema: str
    table: str
    column: str
    data_type: str
    comment: str | None = None
    #: the `pii.columns` value for this column, if any (an entity name or NONE)
    override: str | None = None


# --- names ---------------------------------------------------------------------------------------

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_TRAILING_DIGITS = re.compile(r"(?<=[a-z])\d+$")


def name_tokens(name: str) -> list[str]:
    """`emailAddress` -> [email, address]; `IPAddr2` -> [ip, addr]; `e-mail` -> [e, mail]."""
    spaced = _ACRONYM.sub(r"\1_\2", _CAMEL.sub(r"\1_\2", name))
    return [_TRAILING_DIGITS.sub("", token) for token in _SPLIT.split(spaced.lower()) if token]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_VETO = _words(
    "id ids uuid count cnt num_of verified verify is has enabled flag status type template sent at "
    "opt optin optout hash hashed sha md5 length len domain format valid validated confirmed bounce "
    "bounced provider preference pref prefs consent policy version ver mac url link token key secret "
    "salt encrypted enc masked"
)
_PERSON_HOLDERS = _words(
    "customer contact person employee patient holder cardholder account owner member author recipient "
    "sender billing shipping applicant student client buyer guest passenger traveler traveller "
    "emergency beneficiary signer parent spouse manager"
)
_PERSON_TABLES = re.compile(
    r"(?i)(customer|user|person|people|employee|staff|contact|patient|member|student|client|applicant|author|"
    r"guest|passenger|lead|account_holder|cardholder)s?$"
)
#: words that name a column of prose ("text" and "content" are left out: `amount_text` is not prose)
_FREE_TEXT_WORDS = _words(
    "note notes comment comments description desc body message messages remark remarks feedback "
    "details memo transcript summary reason bio about narrative"
)


def _has(tokens: Sequence[str], *words: str) -> bool:
    return any(word in tokens for word in words)


def _entity_by_words(tokens: list[str], table: str | None) -> tuple[str, str] | None:
    """(entity, the rule that matched) for a name's or a comment's tokens, or None."""
    compact = "".join(tokens)
    if (
        _has(tokens, "ip", "ipv4", "ipv6", "ipaddr", "ipaddress")
        or "ipaddress" in compact
        or (_has(tokens, "remote", "client") and _has(tokens, "addr", "address"))
    ):
        return IP_ADDRESS, "ip address"
    if "email" in compact or (_has(tokens, "mail") and (_has(tokens, "e") or len(tokens) == 1)):
        return EMAIL_ADDRESS, "email"
    if (
        "phone" in compact
        or "telefon" in compact
        or _has(tokens, "tel", "telephone", "mobile", "cell", "cellphone", "msisdn", "fax", "whatsapp", "handy", "sms")
    ):
        return PHONE_NUMBER, "phone"
    if _has(tokens, "ssn") or "socialsecurity" in compact or "socsec" in compact:
        return US_SSN, "social security number"
    if _has(tokens, "iban") or "iban" in compact:
        return IBAN_CODE, "iban"
    if (
        "creditcard" in compact
        or "cardnumber" in compact
        or "cardno" in compact
        or "ccnum" in compact
        or _has(tokens, "pan")
        or (_has(tokens, "cc", "card") and _has(tokens, "number", "no", "num", "nr"))
    ):
        return CREDIT_CARD, "card number"
    if "bankaccount" in compact or (_has(tokens, "account", "acct") and _has(tokens, "bank", "routing")):
        return BANK_ACCOUNT, "bank account"
    if "passport" in compact:
        return PASSPORT, "passport"
    if "taxid" in compact or "taxnumber" in compact or "taxno" in compact or _has(tokens, "tin", "itin", "nif"):
        return TAX_ID, "tax id"
    if (
        _has(tokens, "dob")
        or "birthdate" in compact
        or "dateofbirth" in compact
        or "birthday" in compact
        or "bornon" in compact
        or (_has(tokens, "birth") and _has(tokens, "date", "day"))
    ):
        return DATE_OF_BIRTH, "birth date"
    if (
        _has(tokens, "firstname", "lastname", "fullname", "surname", "forename", "fname", "lname", "givenname")
        or any(
            part in compact for part in ("firstname", "lastname", "fullname", "givenname", "familyname", "middlename")
        )
        or "maidenname" in compact
        or (_has(tokens, "name") and (_has(tokens, "first", "last", "full", "given", "family", "middle", "maiden")))
        or (_has(tokens, "name") and any(token in _PERSON_HOLDERS for token in tokens))
        or (tokens == ["name"] and table is not None and _PERSON_TABLES.search(table) is not None)
    ):
        return PERSON, "person name"
    if _has(tokens, "address", "addr", "street", "zip", "zipcode", "postcode", "postal", "postalcode") or any(
        part in compact for part in ("streetaddress", "zipcode", "postcode", "postalcode", "addressline")
    ):
        return LOCATION, "postal address"
    return None


# --- types ---------------------------------------------------------------------------------------

_TEXT_TYPES = re.compile(
    r"(?i)^(text|character varying|varchar|character|char|bpchar|citext|name|json|jsonb|xml|clob)\b"
)
_NUMBER_TYPES = re.compile(
    r"(?i)^(smallint|integer|bigint|int\d?|numeric|decimal|real|double precision|float\d?|money)\b"
)
_DATE_TYPES = re.compile(r"(?i)^(date|timestamp|time|interval)\b")
_NEVER_TYPES = re.compile(r"(?i)^(boolean|bool|uuid)\b")
_ADDRESS_TYPES = re.compile(r"(?i)^(inet|cidr)\b")
_BINARY_TYPES = re.compile(r"(?i)^(bytea|blob|bit)\b")

#: entities a number column can hold (a phone or a card stored as digits)
_NUMERIC_ENTITIES = frozenset({PHONE_NUMBER, US_SSN, CREDIT_CARD, BANK_ACCOUNT, TAX_ID, LOCATION, IBAN_CODE})


def type_kind(data_type: str) -> str:
    """text | number | date | never | inet | binary | other (arrays, enums, composites: sampled as text)."""
    base = data_type.strip()
    if base.endswith("[]"):
        return "other"
    for kind, pattern in (
        ("never", _NEVER_TYPES),
        ("inet", _ADDRESS_TYPES),
        ("text", _TEXT_TYPES),
        ("number", _NUMBER_TYPES),
        ("date", _DATE_TYPES),
        ("binary", _BINARY_TYPES),
    ):
        if pattern.match(base):
            return kind
    if base.upper() in ("TEXT", "") or "CHAR" in base.upper() or "CLOB" in base.upper():  # SQLite affinities
        return "text"
    if "INT" in base.upper():
        return "number"
    return "other"


def _type_allows(entity: str, kind: str) -> bool:
    if kind in ("text", "other"):
        return True
    if kind == "number":
        return entity in _NUMERIC_ENTITIES
    if kind == "date":
        return entity == DATE_OF_BIRTH
    if kind == "binary":
        return False
    return False


# --- decisions -----------------------------------------------------------------------------------


def decide_without_sample(facts: ColumnFacts) -> Decision | None:
    """The decision the name, comment, type or an override make on their own; None when only a
    sample of values can tell."""
    if facts.override is not None:
        entity = None if facts.override == NONE else facts.override
        return Decision(entity, 1.0, f"pii.columns says {facts.override}", "override")
    kind = type_kind(facts.data_type)
    if kind == "never":
        return Decision(None, 0.95, f"type {facts.data_type} holds no PII", "type")
    if kind == "inet":
        return Decision(IP_ADDRESS, 0.95, f"type {facts.data_type} holds IP addresses", "type")
    tokens = name_tokens(facts.column)
    hit = _entity_by_words(tokens, facts.table)
    own_words = set(hit[1].split()) if hit is not None else set()  # the "id" of "tax id" vetoes nothing
    vetoed = [token for token in tokens if token in _VETO and token not in own_words]
    if hit is not None and not vetoed and _type_allows(hit[0], kind):
        return Decision(hit[0], 0.9, f"name {facts.column!r} matches {hit[1]}", "name")
    if facts.comment:
        comment_tokens = name_tokens(facts.comment)
        comment_hit = _entity_by_words(comment_tokens, None)
        if comment_hit is not None and _type_allows(comment_hit[0], kind):
            return Decision(comment_hit[0], 0.8, f"comment mentions {comment_hit[1]}", "comment")
    if kind in ("number", "date", "binary"):
        if hit is not None:
            reason = f"vetoed by {vetoed[0]!r}" if vetoed else f"type {facts.data_type} cannot hold {hit[0]}"
            return Decision(None, 0.9, f"name matches {hit[1]} but {reason}", "type")
        return Decision(None, 0.9, f"type {facts.data_type} without a name hint holds no PII", "type")
    if hit is not None and vetoed:
        return Decision(None, 0.7, f"name matches {hit[1]} but {vetoed[0]!r} says it is not the value itself", "name")
    return None


def is_free_text_name(column: str) -> bool:
    return any(token in _FREE_TEXT_WORDS for token in name_tokens(column))


@dataclass(frozen=True)
class ValueFinding:
    """What the engine found in one sampled value."""

    length: int
    has_space: bool
    looks_json: bool
    #: the entity covering most of the value (80% of its characters) at a good score, if any
    covering: str | None
    covering_score: float
    #: entities found anywhere in the value at a good score
    inside: frozenset[str]


def decide_from_sample(facts: ColumnFacts, findings: Sequence[ValueFinding]) -> Decision:
    """The decision for a text-like column from its sampled values."""
    total = len(findings)
    free_text_name = is_free_text_name(facts.column)
    if total == 0:
        if free_text_name:
            return Decision(FREE_TEXT, 0.5, "no values to sample; the name says free text", "name")
        return Decision(None, 0.0, "no non-null values to sample (classified again on the next scan)", "none")
    covering = Counter(f.covering for f in findings if f.covering is not None)
    if covering:
        entity, count = covering.most_common(1)[0]
        share = count / total
        if share >= ACCEPT_SHARE:
            mean = statistics.fmean(f.covering_score for f in findings if f.covering == entity)
            return Decision(
                entity,
                round(share * mean, 3),
                f"{count}/{total} sampled values are {entity} (mean score {mean:.2f})",
                "sample",
            )
    inside = Counter(entity for f in findings for entity in f.inside)
    with_pii = sum(1 for f in findings if f.inside)
    found = ", ".join(f"{entity} in {count}" for entity, count in inside.most_common(3))
    lengths = sorted(f.length for f in findings)
    prose = statistics.median(lengths) > FREE_TEXT_MEDIAN and sum(f.has_space for f in findings) * 2 >= total
    if prose:
        detail = f"; {found} of {total}" if found else ""
        return Decision(
            FREE_TEXT, 0.7, f"long text (median {statistics.median(lengths):.0f} characters){detail}", "sample"
        )
    json_values = facts.data_type.lower().startswith("json") or sum(f.looks_json for f in findings) * 2 >= total
    if with_pii and json_values:
        return Decision(FREE_TEXT, 0.7, f"JSON values with PII inside: {found} of {total}", "sample")
    if with_pii / total >= MIXED_SHARE:
        return Decision(FREE_TEXT, 0.6, f"mixed values, {with_pii}/{total} hold PII: {found}", "sample")
    if free_text_name:
        return Decision(FREE_TEXT, 0.5, f"the name says free text; sample of {total} shows no PII", "name")
    if found:
        return Decision(None, 0.6, f"sample of {total}: only {found} (below {MIXED_SHARE:.0%})", "sample")
    return Decision(None, 0.8, f"sample of {total}: no PII found", "sample")


def analyze_value(
    text: str, context: list[str], analyze: Callable[[str, list[str]], list[tuple[int, int, str, float]]]
) -> ValueFinding:
    """One sampled value through the engine (`analyze(text, context) -> [(start, end, entity, score)]`)."""
    length = len(text)
    stripped = text.strip()
    looks_json = stripped[:1] in ("{", "[")
    has_space = " " in stripped
    if not stripped or not _MAYBE_PII.search(stripped):
        return ValueFinding(length, has_space, looks_json, None, 0.0, frozenset())
    results = [r for r in analyze(stripped[:2000], context) if r[3] >= MIN_SCORE]
    inside = frozenset(entity for _, _, entity, _ in results)
    covering: str | None = None
    covering_score = 0.0
    meaningful = len(stripped.replace(" ", "")) or 1
    for entity in inside:
        covered = sum(end - start for start, end, e, _ in results if e == entity)
        score = max(s for _, _, e, s in results if e == entity)
        if covered / meaningful >= COVER_SHARE and score > covering_score:
            covering, covering_score = entity, score
    return ValueFinding(length, has_space, looks_json, covering, covering_score, inside)


_MAYBE_PII = re.compile(r"[0-9@]|::")
