"""Phone numbers as people write them, for text that may hold any country's.

Presidio's `PhoneRecognizer` runs libphonenumber's matcher once per configured region (about 1 ms a
call for 12 regions) and keeps only numbers libphonenumber calls *valid*; fictional ranges (555-01xx),
new allocations and many ways of writing a number fall through (Presidio's recognizers alone find
about 0.79 of the phones in `evals/pii_text.py`). `PhoneShapeRecognizer` instead looks for the
shapes numbers are written in, in one regex pass:

- international: `+` or `00`, a country code, then groups (`+44 20 7946 0958`, `+1 (415) 555-0123`,
  `+4915112345678`, `+44 (0)20 7946 0958`); kept whatever libphonenumber says of the number itself,
  at 0.8 when the prefix is a real country calling code and 0.5 otherwise;
- North American: `(415) 555-0123`, `415-555-0123`, `415.555.0123`, `415 555 0123`, `1-800-...` (0.8);
- national with a trunk 0: `020 7946 0958`, `06 12 34 56 78`, `03-1234-5678`, `(02) 9876 5432`:
  9-12 digits, one kind of separator (0.65);
- other digit groups (`98765 43210`): only where libphonenumber calls them valid in a configured
  region, or after a phone word (0.55-0.6);
- bare digit runs (`4155550123`): only after a phone word such as "call", "phone" or "mobile".

The decision (README): phone-shaped text is masked even when libphonenumber rejects the number; what
keeps PII-free text intact is that dates never match, and a number right after "order", "invoice",
"ticket", "tracking", "#" and the like is not a phone unless a phone word is near.
libphonenumber (12 µs a parse, 10 µs a validity check) is asked only for the ambiguous shapes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

import phonenumbers

from server.pii.model import PHONE_NUMBER
from server.pii.recognizers import FastRecognizer, Span, digits_of

_EXT = r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,5})?"
#: not glued to a word, a `+`, or a preceding group of digits ("2221 0012 3456": no phone inside)
_START = r"(?<![\w+\-.])(?<!\d[ .])"
#: a date is never a phone (2024-03-01, 01.02.2024, 03/04/24), refused inside the regex engine
_NOT_DATE = r"(?!(?:\d{4}[./\-]\d{1,2}[./\-]\d{1,2}|\d{1,2}[./\-]\d{1,2}[./\-](?:\d{4}|\d{2}))(?!\d|[./\-]\d))"
_GROUPED = _START + _NOT_DATE + r"\d{2,5}(?:[ .\-]\d{2,5}){1,4}(?!\w|[ .\-]\d)"
#: the shapes as one alternation, so a text is scanned once; at a position the earlier (more
#: specific) alternative wins
PHONE_PATTERN = re.compile(
    r"(?P<international>(?<![\w+])(?<!\d[ .\-])(?:\+|(?<!\d)00)[1-9]\d{0,3}"
    r"(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,6})){1,6}" + _EXT + r"(?!\d))"
    r"|(?P<north_american>" + _START + r"(?:1[ .\-]?)?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}"
    r"" + _EXT + r"(?![\w]|[.\-]\d))"
    r"|(?P<national>" + _START + _NOT_DATE + r"(?:\(0\d{1,4}\)[ .\-]?|0\d{1,4}[ .\-/])\d{2,8}"
    r"(?:[ .\-]\d{2,8}){0,3}(?![\w]|[.\-]\d))"
    r"|(?P<grouped>" + _GROUPED + r")"
    r"|(?P<bare>" + _START + r"\d{7,15}(?![\w]|[.\-]\d))"
)
_GROUPED_AT = re.compile(_GROUPED)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_LETTERS = re.compile(r"[^\W\d_]+")
_PHONE_WORDS = _words(
    "phone phones tel telephone mobile cell cellphone call calling called text sms whatsapp fax dial "
    "ring reach contact tlf telefon telefono téléphone portable handy"
)
_ID_WORDS = _words(
    "order invoice inv ticket ref reference tracking track po sku case id account acct serial sn "
    "build version ver release batch lot item product part receipt booking confirmation transaction "
    "txn shipment parcel customer isbn fedex ups dhl usps"
)
_NUMBER_WORDS = frozenset({"no", "nr", "number", "num"})
_DATE_LIKE = re.compile(r"\d{4}([./\-])\d{1,2}\1\d{1,2}|\d{1,2}([./\-])\d{1,2}\2(?:\d{4}|\d{2})")
_SEPARATORS = re.compile(r"[ .\-/]")
_ALL_DIGITS = re.compile(r"\d+")
_SSN_SHAPED = re.compile(r"\d{3}([ .\-])\d{2}\1\d{4}")
_THOUSANDS = re.compile(r"\d{1,3}([ .,])\d{3}(?:\1\d{3})*")


def _one_separator_kind(text: str) -> bool:
    return len(set(_SEPARATORS.findall(text))) <= 1


def _known_country_code(digits: str) -> bool:
    """Whether the digits after `+` start with a country calling code (libphonenumber's metadata,
    no parsing)."""
    codes = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
    return any(int(digits[:n]) in codes for n in (1, 2, 3) if len(digits) >= n)


def phone_context(text: str, start: int) -> bool:
    """A phone word ("call", "phone", "mobile"...) among the 40 characters before `start`."""
    return any(word.lower() in _PHONE_WORDS for word in _LETTERS.findall(text, max(0, start - 40), start))


def id_context(text: str, start: int) -> bool:
    """The number is labelled as an identifier: right after '#', or after a word such as "order",
    "invoice" or "tracking" (optionally followed by "no."/"number"), with only punctuation between."""
    tail = text[max(0, start - 30) : start].rstrip(" \t:.-")
    if tail.endswith("#"):
        return True
    words = _LETTERS.findall(tail)
    if not words or not tail.endswith(words[-1]):
        return False
    last = words[-1].lower()
    if last in _ID_WORDS:
        return True
    if last not in _NUMBER_WORDS or len(words) < 2:
        return False
    before = tail[: len(tail) - len(words[-1])].rstrip(" \t:.-#")
    return before.endswith(words[-2]) and words[-2].lower() in _ID_WORDS


@functools.lru_cache(maxsize=8192)
def possible_number(candidate: str) -> bool:
    """libphonenumber's length check for a number with its country code."""
    try:
        number = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_possible_number(number)


@functools.lru_cache(maxsize=8192)
def valid_in_any(candidate: str, regions: tuple[str, ...]) -> bool:
    """Whether libphonenumber calls `candidate` a valid number of one of `regions` (cached: the same
    number recurs across rows)."""
    for region in regions:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


def clear_caches() -> None:
    """Forget memoized libphonenumber answers (benchmarks measure cold ones: every number new)."""
    possible_number.cache_clear()
    valid_in_any.cache_clear()


class PhoneShapeRecognizer(FastRecognizer):
    """See the module docstring."""

    ENTITY = PHONE_NUMBER
    CONTEXT = ("phone", "telephone", "mobile", "cell", "tel", "msisdn", "fax", "call")

    def __init__(self, regions: Iterable[str] = ("US",), name: str | None = None) -> None:
        super().__init__(name=name)
        self.regions: tuple[str, ...] = tuple(dict.fromkeys(r.upper() for r in regions)) or ("US",)

    def find(self, text: str) -> list[Span]:
        return self.find_in(text, ((0, len(text)),), ())

    def find_in(self, text: str, windows: Iterable[tuple[int, int]], taken: Sequence[tuple[int, int]]) -> list[Span]:
        """Phone spans starting inside `windows` (offsets into `text`; the pattern still sees the
        text around them, so context words and look-arounds work as on the whole text); candidates
        overlapping `taken` (spans other recognizers claimed, such as a card or an SSN) are skipped."""
        found: list[Span] = []
        length = len(text)
        for window_start, window_end in windows:
            for match in PHONE_PATTERN.finditer(text, window_start, min(length, window_end)):
                start, end = match.span()
                if taken and any(start < t_end and t_start < end for t_start, t_end in taken):
                    continue
                kind = match.lastgroup or ""
                score = self._score(kind, text, start, end)
                if score is None and kind == "national":  # the same digits may still be a valid group
                    grouped = _GROUPED_AT.match(text, start, min(length, window_end))
                    if grouped is not None:
                        start, end = grouped.span()
                        score = self._score("grouped", text, start, end)
                if score is not None:
                    found.append((start, end, score))
        return found

    def find_at(
        self, text: str, clusters: Iterable[tuple[int, int, int]], taken: Sequence[tuple[int, int]]
    ) -> list[Span]:
        """Phone spans starting where a digit cluster starts (or at the `+` or `(` right before it).

        The scanner's gate finds every run of 7 or more digits (`_CLUSTER` in scan.py); a phone
        cannot start inside such a run, because the pattern refuses to start right after a digit and
        a separator, so trying the pattern once at each run's start finds what a search over the
        whole text would, at a fraction of the cost (one attempt instead of one per character)."""
        found: list[Span] = []
        for cluster_start, cluster_end, _digits in clusters:
            if taken and any(t_start <= cluster_start < t_end for t_start, t_end in taken):
                continue  # a card, an SSN or an IBAN already claimed these digits
            before = text[cluster_start - 1] if cluster_start else ""
            if before not in ("+", "(") and not text.startswith("00", cluster_start):
                if before and (before.isalnum() or before in "-._"):
                    continue  # glued to a word or a number ("INV-2026-000123"): no phone starts here
                digits_only = _ALL_DIGITS.match(text, cluster_start, cluster_end)
                bare = digits_only is not None and digits_only.end() == cluster_end
                if bare and not phone_context(text, cluster_start):
                    continue  # bare digits are a phone only after a phone word: skip the pattern
            starts = (cluster_start - 1, cluster_start) if before in ("+", "(") else (cluster_start,)
            for position in starts:
                match = PHONE_PATTERN.match(text, position)
                if match is None:
                    continue
                start, end = match.span()
                if taken and any(start < t_end and t_start < end for t_start, t_end in taken):
                    break
                kind = match.lastgroup or ""
                score = self._score(kind, text, start, end)
                if score is None and kind == "national":
                    grouped = _GROUPED_AT.match(text, start)
                    if grouped is not None:
                        start, end = grouped.span()
                        score = self._score("grouped", text, start, end)
                if score is not None:
                    found.append((start, end, score))
                    break
        return found

    def _score(self, kind: str, text: str, start: int, end: int) -> float | None:
        if kind == "bare" and not phone_context(text, start):
            return None
        candidate = text[start:end]
        digits = digits_of(candidate)
        if kind == "international":
            if not 8 <= len(digits) <= 16:
                return None
            national = digits[2:] if candidate.startswith("00") else digits
            return 0.8 if _known_country_code(national) else 0.5
        if _DATE_LIKE.fullmatch(candidate):
            return None
        if kind == "north_american":
            return 0.8
        near_phone_word = phone_context(text, start)
        if not near_phone_word and id_context(text, start):
            return None
        if not near_phone_word and _SSN_SHAPED.fullmatch(candidate):
            return None  # 078-05-1120 without a phone word is the SSN recognizer's
        if kind == "national":
            if not 9 <= len(digits) <= 12 or not _one_separator_kind(candidate.replace("(", "").replace(")", "")):
                return None
            return 0.65
        if kind == "grouped":
            if not 8 <= len(digits) <= 13 or not _one_separator_kind(candidate):
                return None
            if near_phone_word:
                return 0.6
            # without a phone word: not a number in thousands (38 412 264), not a range of two
            # short groups (2835-3417), and valid for some region
            if _THOUSANDS.fullmatch(candidate) or (len(_SEPARATORS.split(candidate)) == 2 and len(digits) < 10):
                return None
            return 0.55 if valid_in_any(candidate, self.regions) else None
        # bare digits, after a phone word: kept when some region could dial them
        if valid_in_any(candidate, self.regions) or possible_number("+" + candidate):
            return 0.6
        return None
