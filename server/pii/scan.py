"""Free-text scanning: find PII spans in strings and replace only those spans.

Presidio's `AnalyzerEngine.analyze` costs 0.1-0.7 ms a call even with the trimmed registry
(orchestration, context enhancement, result objects), and each pattern regex, run over every
character, costs 10-130 ns a character: a 10,000-row column would take seconds. The scanner keeps
the same recognizers but decides cheaply, per string, which of them can find anything and where:

1. **Gates, over the whole column at once.** The distinct strings are joined with NUL (a character
   no pattern matches, so no match can span two strings) and one cheap regex pass runs over the
   joined text: digit clusters (7 or more digits with at most two separator characters between
   them), dotted quads, an IBAN's capitals-and-check-digits, `@`, and colon groups. A string it does
   not hit (prose, names, statuses, amounts, dates) costs nothing more.
2. **Recognizers on windows.** Each recognizer runs only where its candidates can be: card
   recognizers on clusters of 13+ digits, SSN on clusters of 9+, phones on clusters of 7+ (the
   phone pattern still sees the text around a cluster, for "+", "(" and context words), email on the
   whitespace-delimited token around an `@`, IBAN from its country code on, IP on the tokens holding
   a dotted quad or a colon group.
   A match never contains characters its window leaves out (none of these patterns crosses
   whitespace, or a cluster's end), so windows find what a run over the whole text would.
3. **Overlaps merged** (`drop_overlaps`): the union is masked, labelled by the strongest detection.

Where a spaCy NER model is configured, PERSON and LOCATION are looked for too, through the full
analyzer, in strings of at least two words: a model costs milliseconds a call, which the operator chose.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from presidio_analyzer import EntityRecognizer

from server.pii.engine import DEFAULT_THRESHOLD, PiiEngine
from server.pii.model import (
    CREDIT_CARD,
    EMAIL_ADDRESS,
    IBAN_CODE,
    IP_ADDRESS,
    NER_ENTITIES,
    PHONE_NUMBER,
    US_SSN,
)
from server.pii.phones import PhoneShapeRecognizer
from server.pii.recognizers import SSN_WORDS, FastRecognizer, Span, drop_overlaps, presidio_spans

#: same extent claimed twice: the more specific entity wins
PRIORITY: dict[str, int] = {CREDIT_CARD: 0, IBAN_CODE: 1, US_SSN: 2, IP_ADDRESS: 3, EMAIL_ADDRESS: 4, PHONE_NUMBER: 5}

_SEPARATOR = "\x00"
#: the one pass over the joined strings: a cluster of 7+ digits (at most two separator characters
#: between digits), a dotted quad, two digits after two capitals (an IBAN's country code and check
#: digits), an '@', or a colon group. The alternatives share their first character class, so the
#: regex engine skips straight from one digit, '@' or ':' to the next (13 ms a megabyte, against
#: 45 ms for five separate passes).
_GATE = re.compile(r"\d(?:(?:[ .\-()/]{0,2}\d){6,}|\.\d{1,3}\.\d{1,3}\.\d|(?<=[A-Z]{2}\d)\d)|@|:[0-9A-Fa-f]{0,4}:")
_IPV4_HINT = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d")
_COLON_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IBAN_HINT = re.compile(r"[A-Z]{2}\d{2}")
_DROP_SEPARATORS = str.maketrans("", "", " .-()/")
_DATE = re.compile(r"\d{4}([./\-])\d{1,2}\1\d{1,2}|\d{1,2}([./\-])\d{1,2}\2(?:\d{4}|\d{2})")
_SSN_GATE = re.compile(r"\d{3}[- .]\d{2}[- .]\d{4}")
_WORDS = re.compile(r"\w+\W+\w+")
#: the longest text an IBAN can span (34 characters, grouped by 4) plus a character of look-ahead
_IBAN_REACH = 48

Window = tuple[int, int]


@dataclass(frozen=True)
class Detection:
    start: int
    end: int
    entity: str
    score: float


class _Hits:
    """What the gates found in one string."""

    __slots__ = ("at", "clusters", "iban", "ip", "most")

    def __init__(self) -> None:
        self.clusters: list[tuple[int, int, int]] = []  # start, end, digits
        self.most = 0
        self.at = False
        self.ip = False
        self.iban = False


class Scanner:
    """Finds PII spans in strings; one per engine, shared by every call (it keeps no per-call state)."""

    def __init__(self, engine: PiiEngine, *, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.engine = engine
        self.threshold = threshold
        recognizers = engine.recognizers
        self._email = _spans_of(recognizers["email"], threshold)
        self._card = _spans_of(recognizers["card"], threshold)
        self._card_shape = _spans_of(recognizers["card_shape"], threshold)
        self._ssn = _spans_of(recognizers["ssn"], threshold)
        self._ssn_context = _spans_of(recognizers["ssn_context"], threshold)
        self._iban = _spans_of(recognizers["iban"], threshold)
        self._ip = _spans_of(recognizers["ip"], threshold)
        phone = recognizers["phone"]
        assert isinstance(phone, PhoneShapeRecognizer)
        self._phone = phone
        self.ner = engine.ner_enabled

    # --- API --------------------------------------------------------------------------------------

    def find(self, text: str) -> list[Detection]:
        """Spans of PII in `text`, disjoint, in order."""
        return self.detect([text]).get(0, [])

    def find_many(self, texts: Sequence[str]) -> list[list[Detection]]:
        """`find` for each string, with the gates run once over all of them."""
        found = self.detect(texts)
        return [found.get(index, []) for index in range(len(texts))]

    def detect(self, texts: Sequence[str]) -> dict[int, list[Detection]]:
        """Index of each string with PII in it -> its detections (strings without any are left out)."""
        hits = _gate(texts)
        found: dict[int, list[Detection]] = {}
        if self.ner:
            for index, text in enumerate(texts):
                if _WORDS.search(text) and index not in hits:
                    hits[index] = _Hits()
        for index, hit in hits.items():
            text = texts[index]
            spans = self._spans(text, hit)
            if self.ner and _WORDS.search(text):
                for result in self.engine.analyze(text, entities=NER_ENTITIES, score_threshold=self.threshold):
                    spans.append((result.start, result.end, float(result.score), result.entity_type))
            if len(spans) == 1:
                start, end, score, entity = spans[0]
                found[index] = [Detection(start, end, entity, score)]
            elif spans:
                merged = drop_overlaps(spans, PRIORITY)
                found[index] = [Detection(start, end, entity, score) for start, end, score, entity in merged]
        return found

    def replace(self, text: str, replacement: Callable[[str, str], str]) -> tuple[str, list[Detection]]:
        """`text` with each detected span replaced by `replacement(span_text, entity)`, and the
        detections (offsets into the original text)."""
        detections = self.find(text)
        return (_apply(text, detections, replacement) if detections else text), detections

    def replace_many(
        self, texts: Sequence[str], replacement: Callable[[str, str], str]
    ) -> dict[int, tuple[str, list[Detection]]]:
        """Index of each string with PII in it -> (the string with its spans replaced, detections)."""
        return {
            index: (_apply(texts[index], detections, replacement), detections)
            for index, detections in self.detect(texts).items()
        }

    # --- one string -------------------------------------------------------------------------------

    def _spans(self, text: str, hit: _Hits) -> list[tuple[int, int, float, str]]:
        spans: list[tuple[int, int, float, str]] = []
        if hit.at:
            _collect(spans, self._email, text, _email_windows(text), EMAIL_ADDRESS)
        clusters = hit.clusters
        if hit.iban:
            positions = [match.start() for match in _IBAN_HINT.finditer(text)]
            _collect(spans, self._iban, text, _iban_windows(text, positions), IBAN_CODE)
        if hit.ip:
            _collect(spans, self._ip, text, _ip_windows(text), IP_ADDRESS)
        if not clusters:
            return spans
        most = hit.most
        if most >= 13:
            windows = [_around(text, s, e) for s, e, d in clusters if d >= 13]
            _collect(spans, self._card, text, windows, CREDIT_CARD)
            _collect(spans, self._card_shape, text, windows, CREDIT_CARD)
        if most >= 9:
            # Presidio's SSN patterns that can reach the threshold need 3-2-4 digits
            windows = [w for w in (_around(text, s, e) for s, e, d in clusters if d >= 9) if _SSN_GATE.search(text, *w)]
            if windows:
                _collect(spans, self._ssn, text, windows, US_SSN)
            if any(SSN_WORDS.search(text, max(0, s - 30), s) for s, _, d in clusters if d >= 9):
                spans.extend((s, e, score, US_SSN) for s, e, score in self._ssn_context(text))
        taken = [(start, end) for start, end, _, _ in spans] if spans else ()
        threshold = self.threshold
        for start, end, score in self._phone.find_at(text, clusters, taken):
            if score >= threshold:
                spans.append((start, end, score, PHONE_NUMBER))
        return spans


def _spans_of(recognizer: EntityRecognizer, threshold: float) -> Callable[[str], list[Span]]:
    """The recognizer's spans at or above the threshold, by the cheapest call it offers."""
    if isinstance(recognizer, FastRecognizer):
        find = recognizer.find
        return lambda text: [span for span in find(text) if span[2] >= threshold]
    return lambda text: [span for span in presidio_spans(recognizer, text, threshold) if span[2] >= threshold]


def _collect(
    spans: list[tuple[int, int, float, str]],
    find: Callable[[str], list[Span]],
    text: str,
    windows: Sequence[Window],
    entity: str,
) -> None:
    for window_start, window_end in windows:
        for start, end, score in find(text[window_start:window_end]):
            spans.append((window_start + start, window_start + end, score, entity))


def _apply(text: str, detections: list[Detection], replacement: Callable[[str, str], str]) -> str:
    parts: list[str] = []
    position = 0
    for detection in detections:
        parts.append(text[position : detection.start])
        parts.append(replacement(text[detection.start : detection.end], detection.entity))
        position = detection.end
    parts.append(text[position:])
    return "".join(parts)


# --- gates ---------------------------------------------------------------------------------------


def _gate(texts: Sequence[str]) -> dict[int, _Hits]:
    """Index of each string the gates hit -> what they found in it. Strings are joined with NUL
    (a string that itself holds NUL is gated alone, so offsets stay exact)."""
    hits: dict[int, _Hits] = {}
    plain = [index for index, text in enumerate(texts) if _SEPARATOR not in text]
    if len(plain) != len(texts):
        for index, text in enumerate(texts):
            if _SEPARATOR in text:
                _gate_one(text, index, 0, hits)
    joined = _SEPARATOR.join(texts[index] for index in plain)
    if not joined:
        return hits
    starts: list[int] = []
    offset = 0
    for index in plain:
        starts.append(offset)
        offset += len(texts[index]) + 1

    _scan_gates(joined, plain, starts, hits)
    return hits


def _gate_one(text: str, index: int, base: int, hits: dict[int, _Hits]) -> None:
    _scan_gates(text, [index], [base], hits)


def _scan_gates(joined: str, owners: list[int], starts: list[int], hits: dict[int, _Hits]) -> None:
    """Record each gate match with the string it falls in (`starts[k]` is where `owners[k]` begins
    in `joined`)."""
    find_slot = bisect.bisect_right
    for match in _GATE.finditer(joined):
        start, end = match.span()
        slot = find_slot(starts, start) - 1
        index, base = owners[slot], starts[slot]
        hit = hits.get(index)
        if hit is None:
            hit = hits[index] = _Hits()
        first = joined[start]
        if first == "@":
            hit.at = True
        elif first == ":":
            hit.ip = True
        else:
            if start >= 2 and "A" <= joined[start - 1] <= "Z" and "A" <= joined[start - 2] <= "Z":
                hit.iban = True  # DE89..., GB29 NWBK...
            matched = match.group()
            digits = len(matched.translate(_DROP_SEPARATORS))
            if digits < 7:
                if "." in matched:
                    hit.ip = True  # a short dotted quad
                continue
            if digits <= 8 and _DATE.fullmatch(matched):
                continue  # 2024-03-01, 01.03.2024: no card, SSN or phone is a date
            hit.clusters.append((start - base, end - base, digits))
            if digits > hit.most:
                hit.most = digits
            if matched.count(".") >= 3:  # a long dotted quad (192.168.100.200)
                hit.ip = True
    for index in [index for index, hit in hits.items() if not (hit.clusters or hit.at or hit.ip or hit.iban)]:
        del hits[index]  # only dates


# --- windows -------------------------------------------------------------------------------------


def _around(text: str, start: int, end: int) -> Window:
    """A digit cluster and the two characters each side its recognizers' look-arounds read."""
    return max(0, start - 2), min(len(text), end + 2)


def _token(text: str, position: int) -> Window:
    """The whitespace-delimited token around `position`."""
    start = position
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    end = position
    length = len(text)
    while end < length and not text[end].isspace():
        end += 1
    return start, end


def _email_windows(text: str) -> list[Window]:
    """Presidio's email pattern cannot match whitespace, so a match lies inside the token holding
    its '@', and at a token's edge the pattern sees whitespace as it would a string's start or end."""
    windows: list[Window] = []
    at = text.find("@")
    while at != -1:
        window = _token(text, at)
        windows.append(window)
        at = text.find("@", window[1])
    return windows


def _ip_windows(text: str) -> list[Window]:
    """IP addresses hold no whitespace either: the tokens holding a dotted quad or a colon group."""
    windows: list[Window] = []
    for pattern in (_IPV4_HINT, _COLON_HINT):
        for match in pattern.finditer(text):
            if any(start <= match.start() < end for start, end in windows):
                continue
            windows.append(_token(text, match.start()))
    return windows


def _iban_windows(text: str, positions: list[int]) -> list[Window]:
    """From each country-code hint to the longest an IBAN can reach, with a character before it for
    the pattern's look-behind."""
    windows: list[Window] = []
    for position in positions:
        start, end = max(0, position - 1), min(len(text), position + _IBAN_REACH)
        if windows and start < windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows
