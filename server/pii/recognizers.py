"""The recognizers Bastion runs, all Presidio `EntityRecognizer`s so one registry serves both the
analyzer engine (column classification) and the fast free-text scanner (`server/pii/scan.py`).

Presidio's own, as they are: credit card (regex + Luhn), US SSN (regex + the SSA's never-issued
ranges). Email keeps Presidio's pattern but checks the domain with an offline `tldextract` instance
(`offline_tld_extractor`): Presidio's recognizer calls the module-level `tldextract.extract`, whose
first use downloads the Public Suffix List (a traceback without network, a hang where DNS is slow);
and an address at a private domain (`corp.internal`) is kept at 0.5 instead of dropped.

Bastion's own, and why:

- **Phone** (`server/pii/phones.py`): Presidio's `PhoneRecognizer` runs libphonenumber's matcher
  once per region (about 1 ms a call with 12 regions, measured) and accepts only numbers that
  libphonenumber deems *valid*, which drops fictional and newly allocated ranges and many written
  formats.
- **Card-shaped numbers** (`CardShapeRecognizer`): 13-19 digit numbers grouped like a card (4-4-4-4,
  4-6-5, with spaces, dashes or dots) or bare with a card brand's prefix and length, including the
  2-series Mastercard range Presidio's pattern misses.
- **SSN after the word** (`SsnContextRecognizer`): a bare 9-digit number is an SSN after "SSN" or
  "social security" (Presidio scores it 0.05, below any useful threshold).
- **IBAN and IP** (`IbanShapeRecognizer`, `IpShapeRecognizer`): Presidio's IBAN and IP recognizers
  cost 15-20 µs a call even on a short window (the `regex` module, a country pattern recompiled per
  call, five IP patterns); these find candidates with one anchored standard-library pattern each and
  keep what mod-97 plus Presidio's own per-country IBAN formats (`regex_per_country`), or
  `ipaddress`'s rules, accept.

The decision on numbers that fail their check (documented for the README): a number shaped like a
card that fails the Luhn check is still masked as CREDIT_CARD (score 0.5 grouped, 0.45 bare), a
number shaped like a phone that libphonenumber rejects is still masked as PHONE_NUMBER (0.5), and an
IBAN in its country's format that fails mod-97 is still masked as IBAN_CODE (0.5): a mistyped,
truncated or test number is still one to whoever reads it, and the cost of being wrong the other way
is a masked reference number. What keeps PII-free text intact is the shape, not the checksum: dates,
amounts, versions, order and tracking numbers (a word such as "order", "invoice" or "tracking"
right before the number) are not phone-shaped, bare digit runs are phones only after a phone word,
and bare card-length runs are cards only with a brand's prefix and length.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
from collections.abc import Sequence

import phonenumbers
import regex
import tldextract
from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    LocalRecognizer,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import EmailRecognizer
from presidio_analyzer.predefined_recognizers.generic.iban_patterns import regex_per_country

from server.pii.model import CREDIT_CARD, IBAN_CODE, IP_ADDRESS, US_SSN

Span = tuple[int, int, float]

# --- shared --------------------------------------------------------------------------------------

_NON_DIGITS = re.compile(r"[^0-9]+")


def digits_of(text: str) -> str:
    return _NON_DIGITS.sub("", text)


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


class FastRecognizer(LocalRecognizer):
    """A recognizer whose work is `find(text) -> [(start, end, score)]`: the scanner calls `find`
    directly (no result objects for text that has none), the analyzer engine calls `analyze`."""

    ENTITY: str = ""
    CONTEXT: Sequence[str] = ()

    def __init__(self, name: str | None = None) -> None:
        super().__init__(
            supported_entities=[self.ENTITY], supported_language="en", context=list(self.CONTEXT), name=name
        )

    def load(self) -> None:
        """Nothing to load: patterns are compiled at import."""

    def find(self, text: str) -> list[Span]:
        raise NotImplementedError

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if entities and self.ENTITY not in entities:
            return []
        return [
            RecognizerResult(
                entity_type=self.ENTITY,
                start=start,
                end=end,
                score=score,
                analysis_explanation=AnalysisExplanation(
                    recognizer=type(self).__name__, original_score=score, textual_explanation=self.name
                ),
                recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                },
            )
            for start, end, score in self.find(text)
        ]


# --- email, offline ------------------------------------------------------------------------------


@functools.cache
def offline_tld_extractor() -> tldextract.TLDExtract:
    """A tldextract instance that can only use the Public Suffix List snapshot bundled with the
    package: no URL to fetch, no disk cache to read or write."""
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


@functools.lru_cache(maxsize=4096)
def _has_public_suffix(domain: str) -> bool:
    return offline_tld_extractor()(domain).fqdn != ""


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email pattern; the domain checked against the bundled suffix list only.

    A domain on the Public Suffix List scores 1.0, as in Presidio. Unlike Presidio, an address at a
    private domain (`bob@corp.internal`, `ops@host.local`) is not dropped but kept at the pattern's
    0.5: it is someone's address all the same. A domain without a dot (`root@localhost`) or ending
    in a number is not an email."""

    def validate_result(self, pattern_text: str) -> bool | None:
        domain = pattern_text.rpartition("@")[2].lower()
        if _has_public_suffix(domain):
            return True
        last = domain.rpartition(".")[2]
        return None if "." in domain and last.isalpha() and 2 <= len(last) <= 24 else False


# --- credit cards --------------------------------------------------------------------------------

_CARD = re.compile(
    r"(?<![\w.\-])(?<!\d[ .\-])(?:"
    r"\d{4}(?P<s1>[ .\-]?)\d{4}(?P=s1)\d{4}(?P=s1)\d{4}(?:(?P=s1)\d{1,3})?"  # 16-19 in fours
    r"|\d{4}(?P<s2>[ .\-]?)\d{6}(?P=s2)\d{4,5}"  # Amex 4-6-5, Diners 4-6-4
    r"|\d{4}(?P<s3>[ .\-]?)\d{4}(?P=s3)\d{4}(?P=s3)\d{1,3}"  # 13-15
    r"|\d{13,19}"
    r")(?!\w|[ .\-]\d|[.,]\d)"
)

#: card brands' leading digits and lengths, for bare digit runs that fail the Luhn check
_BRANDS: tuple[tuple[re.Pattern[str], frozenset[int]], ...] = (
    (re.compile(r"4"), frozenset({13, 16, 19})),
    (re.compile(r"5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)"), frozenset({16})),
    (re.compile(r"3[47]"), frozenset({15})),
    (re.compile(r"3(?:0[0-5]|[68])"), frozenset({14, 16, 19})),
    (re.compile(r"6(?:011|5|4[4-9])"), frozenset({16, 19})),
    (re.compile(r"35"), frozenset({16, 19})),
)


def _brand_shaped(digits: str) -> bool:
    return any(prefix.match(digits) and len(digits) in lengths for prefix, lengths in _BRANDS)


class CardShapeRecognizer(FastRecognizer):
    """13-19 digit numbers shaped like a payment card: Luhn-valid ones at 1.0, and (deliberately)
    Luhn-invalid ones too when grouped like a card or bare with a brand's prefix and length."""

    ENTITY = CREDIT_CARD
    CONTEXT = ("credit", "card", "visa", "mastercard", "amex", "pan", "cc")
    GROUPED_INVALID = 0.5
    BARE_INVALID = 0.45

    def find(self, text: str) -> list[Span]:
        found: list[Span] = []
        for match in _CARD.finditer(text):
            matched = match.group()
            digits = digits_of(matched)
            if luhn_valid(digits) and len(set(digits)) > 1:
                found.append((match.start(), match.end(), 1.0))
            elif len(digits) != len(matched):
                found.append((match.start(), match.end(), self.GROUPED_INVALID))
            elif _brand_shaped(digits):
                found.append((match.start(), match.end(), self.BARE_INVALID))
        return found


# --- SSN after the word --------------------------------------------------------------------------

_SSN_SHAPE = re.compile(r"(?<![\w.\-])\d{3}([ .\-]?)\d{2}\1\d{4}(?![\w]|[.\-]\d)")
SSN_WORDS = re.compile(r"(?i)\b(?:ssn|ss#|social\s+security|soc\.?\s*sec)")


class SsnContextRecognizer(FastRecognizer):
    """A 9-digit number (bare, or grouped 3-2-4) right after "SSN" or "social security" (within 30
    characters). Presidio scores a bare one 0.05 and drops the SSA's published sample numbers
    (123-45-6789); after the word "SSN" either is taken for what the writer says it is."""

    ENTITY = US_SSN
    CONTEXT = ("ssn", "social", "security")

    def find(self, text: str) -> list[Span]:
        found: list[Span] = []
        for match in _SSN_SHAPE.finditer(text):
            digits = digits_of(match.group())
            if digits[:3] in ("000", "666") or digits[3:5] == "00" or digits[5:] == "0000":
                continue
            if SSN_WORDS.search(text, max(0, match.start() - 30), match.start()):
                found.append((match.start(), match.end(), 0.7))
        return found


# --- IBAN ----------------------------------------------------------------------------------------

_IBAN_SHAPE = re.compile(r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{4}){2,7}(?:[ \-]?[A-Z0-9]{1,3})?(?![A-Z0-9])")
_IBAN_GROUP_END = re.compile(r"[ \-]?[A-Z0-9]{1,4}$")


@functools.lru_cache(maxsize=128)
def _country_format(country: str) -> re.Pattern[str] | None:
    source = regex_per_country.get(country)
    return re.compile(source) if source else None


_IBAN_LETTERS = {ord(letter): str(value) for value, letter in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ", start=10)}


def iban_checksum_valid(compact: str) -> bool:
    """ISO 13616 mod-97: the country code and check digits moved to the end, letters as numbers."""
    rearranged = (compact[4:] + compact[:4]).translate(_IBAN_LETTERS)
    return rearranged.isdigit() and int(rearranged) % 97 == 1


class IbanShapeRecognizer(FastRecognizer):
    """IBAN candidates by one anchored pattern, kept when they pass mod-97 and match their
    country's format as Presidio's `IbanRecognizer` defines it (`regex_per_country`, compiled once
    with the standard library; Presidio's own validator recompiles it through the `regex` module on
    every call, 20 µs). Like Presidio, a candidate that fails is retried without its last group (an
    IBAN followed by another number). One in its country's format that fails mod-97 is masked at 0.5
    (see the module docstring)."""

    ENTITY = IBAN_CODE
    CONTEXT = ("iban", "bank", "account", "transfer")
    FORMAT_ONLY = 0.5

    def find(self, text: str) -> list[Span]:
        found: list[Span] = []
        for match in _IBAN_SHAPE.finditer(text):
            candidate = match.group()
            best: tuple[int, float] | None = None
            fallback: int | None = None
            while len(candidate) >= 15:
                compact = candidate.replace(" ", "").replace("-", "")
                pattern = _country_format(compact[:2])
                if pattern is not None and pattern.match(compact):
                    if iban_checksum_valid(compact):
                        best = (len(candidate), 1.0)
                        break
                    if fallback is None and pattern.fullmatch(compact):
                        fallback = len(candidate)
                trimmed = _IBAN_GROUP_END.sub("", candidate)
                if trimmed == candidate:
                    break
                candidate = trimmed
            if best is None and fallback is not None:
                best = (fallback, self.FORMAT_ONLY)
            if best is not None:
                found.append((match.start(), match.start() + best[0], best[1]))
        return found


# --- IP addresses --------------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.%])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*(?:%[0-9A-Za-z]+)?(?:/\d{1,3})?")


class IpShapeRecognizer(FastRecognizer):
    """IPv4 and IPv6 candidates, kept when `ipaddress` parses them (as Presidio's `IpRecognizer`
    checks its matches); the unspecified address `::` alone is not one."""

    ENTITY = IP_ADDRESS
    CONTEXT = ("ip", "ipv4", "ipv6", "address", "host", "client")
    SCORE = 0.6

    def find(self, text: str) -> list[Span]:
        found: list[Span] = []
        if "." in text:
            for match in _IPV4.finditer(text):
                if _is_ipv4(match.group()):
                    found.append((match.start(), match.end(), self.SCORE))
        if ":" in text:
            for match in _IPV6.finditer(text):
                candidate = match.group().rstrip(".")
                if candidate.count(":") >= 2 and candidate.strip(":") and _is_ip(candidate):
                    found.append((match.start(), match.start() + len(candidate), self.SCORE))
        return found


def _is_ipv4(candidate: str) -> bool:
    """What `ipaddress` accepts (four decimal octets up to 255 without leading zeros, an optional
    prefix length up to 32), checked without building an address object."""
    address, _, prefix = candidate.partition("/")
    if prefix and int(prefix) > 32:
        return False
    return all(int(part) <= 255 and (part == "0" or part[0] != "0") for part in address.split("."))


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_interface(candidate.partition("%")[0] if "%" in candidate else candidate)
    except ValueError:
        return False
    return True


# --- Presidio's recognizers, called directly ------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _compiled(source: str, flags: int) -> re.Pattern[str] | regex.Pattern[str]:
    """A Presidio pattern compiled with the standard library's engine, which runs these patterns
    about twice as fast as the `regex` module Presidio uses; `regex` where only it can (the flag
    values of the two modules agree for IGNORECASE, MULTILINE and DOTALL)."""
    try:
        return re.compile(source, flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL))
    except re.error:
        return regex.compile(source, flags=flags)


def presidio_spans(recognizer: EntityRecognizer, text: str, threshold: float = 0.0) -> list[Span]:
    """Spans from a Presidio recognizer, called directly (no engine round).

    A plain `PatternRecognizer` (one that does not override `analyze`) is evaluated here from its
    own patterns, `validate_result` and `invalidate_result`, exactly as Presidio scores them, minus
    what only costs time per call: the clock readings, debug logging and explanation objects (about
    half of the 10 µs a call). Patterns whose score cannot reach `threshold` (Presidio's "very weak"
    ones, at 0.05, when no validator can raise them) are not run at all.
    """
    if not isinstance(recognizer, PatternRecognizer) or type(recognizer).analyze is not PatternRecognizer.analyze:
        return [(r.start, r.end, float(r.score)) for r in recognizer.analyze(text, recognizer.supported_entities, None)]
    validates = type(recognizer).validate_result is not PatternRecognizer.validate_result
    flags = int(recognizer.global_regex_flags or 0)
    found: list[Span] = []
    for pattern in recognizer.patterns:
        if pattern.score < threshold and not validates:
            continue
        for match in _compiled(pattern.regex, flags).finditer(text):
            start, end = match.span()
            if start == end:
                continue
            matched = text[start:end]
            score = pattern.score
            validation = recognizer.validate_result(matched)
            if validation is not None:
                score = EntityRecognizer.MAX_SCORE if validation else EntityRecognizer.MIN_SCORE
            if recognizer.invalidate_result(matched):
                score = EntityRecognizer.MIN_SCORE
            if score > EntityRecognizer.MIN_SCORE:
                found.append((start, end, float(score)))
    return found


def drop_overlaps(
    spans: list[tuple[int, int, float, str]], priority: dict[str, int]
) -> list[tuple[int, int, float, str]]:
    """Disjoint spans sorted by start. Spans that overlap are merged into their union, so that no
    character one recognizer claimed is left out because another claimed a shorter part of it (a
    phone pattern inside a card number must not leave the card's first digits in clear). The merged
    span takes the entity of its best part: the highest score, then the entity earlier in
    `priority` (a 3-2-4 number is an SSN before it is a phone), then the longest."""
    merged: list[tuple[int, int, float, str]] = []
    best: tuple[float, int, int] | None = None
    for start, end, score, entity in sorted(spans):
        rank = (-score, priority.get(entity, 99), start - end)
        if merged and start < merged[-1][1]:
            last = merged[-1]
            if best is None or rank < best:
                best = rank
                merged[-1] = (last[0], max(last[1], end), score, entity)
            else:
                merged[-1] = (last[0], max(last[1], end), last[2], last[3])
        else:
            merged.append((start, end, score, entity))
            best = rank
    return merged


def warm_up(regions: Sequence[str]) -> None:
    """Pay the one-time costs at build time rather than in the first query: tldextract builds its
    suffix trie (about 30 ms) and libphonenumber loads each region's metadata on first use."""
    from server.pii.phones import clear_caches, possible_number

    _has_public_suffix("example.com")
    for region in regions:
        with contextlib.suppress(phonenumbers.NumberParseException):
            phonenumbers.is_valid_number(phonenumbers.parse("0 12 34 56 78", region))
    possible_number("+44 20 7946 0958")
    clear_caches()
