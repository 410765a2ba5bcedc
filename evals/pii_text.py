"""Sentences with planted PII, and sentences without, for measuring the free-text scanner.

Each positive sentence carries one or two planted values whose offsets are known, in the formats
people actually write: phones international and national, with spaces, dashes, dots, parentheses
or nothing; card numbers with and without separators, a fifth of them failing the Luhn check; IBANs
compact and grouped; SSNs dashed, spaced and bare after "SSN"; IPv4 and IPv6. Negative sentences are
the look-alikes that must survive untouched: order and invoice numbers, amounts, dates, times,
versions, tracking ids, ISBNs, quantities.

Deterministic for a seed, so a recall figure can be reproduced. Values are random (not valid
allocations): the scanner must not depend on a number being a real line or a real card.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

EMAIL = "EMAIL_ADDRESS"
PHONE = "PHONE_NUMBER"
CARD = "CREDIT_CARD"
IBAN = "IBAN_CODE"
SSN = "US_SSN"
IP = "IP_ADDRESS"
ENTITIES: tuple[str, ...] = (EMAIL, PHONE, CARD, IBAN, SSN, IP)


@dataclass(frozen=True)
class Planted:
    start: int
    end: int
    entity: str
    value: str


@dataclass(frozen=True)
class Sentence:
    text: str
    planted: tuple[Planted, ...]


def _d(rng: random.Random, n: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice(string.digits) for _ in range(n - 1))


# --- values --------------------------------------------------------------------------------------

_FIRST = ["john", "maria", "li", "ahmed", "sofia", "jean-luc", "o.brien", "anna", "kenji", "priya", "lars", "zoe"]
_LAST = ["doe", "garcia", "wang", "hassan", "rossi", "picard", "smith", "novak", "tanaka", "patel", "berg"]
_DOMAINS = [
    "example.com",
    "mail.example.org",
    "acme.co.uk",
    "corp.example.de",
    "startup.io",
    "uni-heidelberg.de",
    "gmail.com",
    "outlook.fr",
    "company.com.au",
    "dept.state.gov",
    "shop.example.net",
]


def email(rng: random.Random) -> str:
    first, last, domain = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_DOMAINS)
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first}_{last}{rng.randint(1, 99)}",
            f"{first[0]}{last}",
            f"{first}.{last}+{rng.choice(['news', 'shop', 'x'])}",
            f"{first}{rng.randint(1970, 2005)}",
        ]
    )
    value = f"{local}@{domain}"
    return value.upper() if rng.random() < 0.1 else value


def phone(rng: random.Random) -> str:
    d = lambda n, first="0123456789": _d(rng, n, first)  # noqa: E731
    area, exchange, line = d(3, "23456789"), d(3, "23456789"), d(4)
    formats: list[Callable[[], str]] = [
        lambda: f"({area}) {exchange}-{line}",
        lambda: f"{area}-{exchange}-{line}",
        lambda: f"{area}.{exchange}.{line}",
        lambda: f"{area} {exchange} {line}",
        lambda: f"+1 {area} {exchange} {line}",
        lambda: f"+1-{area}-{exchange}-{line}",
        lambda: f"+1 ({area}) {exchange}-{line}",
        lambda: f"+1{area}{exchange}{line}",
        lambda: f"1-800-{exchange}-{line}",
        lambda: f"+44 20 {d(4, '78')} {d(4)}",
        lambda: f"020 {d(4, '78')} {d(4)}",
        lambda: f"+44 7{d(3)} {d(6)}",
        lambda: f"07{d(3)} {d(6)}",
        lambda: f"+44 (0)20 {d(4, '78')} {d(4)}",
        lambda: f"0044 20 {d(4, '78')} {d(4)}",
        lambda: f"+49 30 {d(6, '123456789')}",
        lambda: f"+49 15{d(1)} {d(8)}",
        lambda: f"0{d(3, '1')} {d(8)}",
        lambda: f"+49-30-{d(4, '123456789')}-{d(4)}",
        lambda: f"+33 {d(1, '1234567')} {d(2)} {d(2)} {d(2)} {d(2)}",
        lambda: f"0{d(1, '1234567')} {d(2)} {d(2)} {d(2)} {d(2)}",
        lambda: f"0{d(1, '67')}.{d(2)}.{d(2)}.{d(2)}.{d(2)}",
        lambda: f"+39 02 {d(4)} {d(4)}",
        lambda: f"+34 6{d(2)} {d(3)} {d(3)}",
        lambda: f"+31 20 {d(3)} {d(4)}",
        lambda: f"+81 3-{d(4)}-{d(4)}",
        lambda: f"03-{d(4)}-{d(4)}",
        lambda: f"+61 2 {d(4)} {d(4)}",
        lambda: f"(02) {d(4)} {d(4)}",
        lambda: f"+91 9{d(4)} {d(5)}",
        lambda: f"+65 6{d(3)} {d(4)}",
        lambda: f"+4915{d(9)}",
        lambda: f"{area}{exchange}{line}",  # bare: planted only after a phone word (see _CONTEXTUAL)
    ]
    return rng.choice(formats)()


_BARE_SSN_TEMPLATES = ["SSN {v} on file for the applicant.", "Verified identity with SSN: {v}", "ssn={v}"]
_BARE_PHONE_TEMPLATES = ["Call me on {v} tonight.", "My phone: {v}", "mobile {v} (after 6pm)", "Text {v} when ready."]


def luhn_check_digit(body: str) -> str:
    total = 0
    for index, char in enumerate(reversed(body)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def card(rng: random.Random) -> str:
    prefix, length = rng.choice(
        [
            ("4", 16),
            ("4", 16),
            ("5" + rng.choice("12345"), 16),
            ("2221", 16),
            ("2720", 16),
            ("34", 15),
            ("37", 15),
            ("6011", 16),
            ("35", 16),
        ]
    )
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    check = luhn_check_digit(body)
    if rng.random() < 0.2:  # a mistyped or made-up number: fails the Luhn check
        check = str((int(check) + rng.randint(1, 9)) % 10)
    number = body + check
    separator = rng.choice(["", " ", "-", " ", "-", "."])
    if length == 15:
        groups = [number[:4], number[4:10], number[10:]]
    else:
        groups = [number[i : i + 4] for i in range(0, length, 4)]
    return separator.join(groups) if separator or rng.random() < 0.5 else number


_IBAN_FORMATS = {
    "DE": "8n10n",
    "GB": "4a14n",
    "FR": "10n11c2n",
    "NL": "4a10n",
    "ES": "20n",
    "IT": "1a10n12c",
    "CH": "5n12c",
}
_IBAN_FORMATS |= {"BE": "12n", "AT": "16n", "PL": "24n"}


def _bban(rng: random.Random, spec: str) -> str:
    out = []
    number = ""
    for char in spec:
        if char.isdigit():
            number += char
            continue
        pool = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}[char]
        out.append("".join(rng.choice(pool) for _ in range(int(number))))
        number = ""
    return "".join(out)


def iban(rng: random.Random) -> str:
    country = rng.choice(sorted(_IBAN_FORMATS))
    bban = _bban(rng, _IBAN_FORMATS[country])
    rearranged = bban + country + "00"
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    value = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    digits = f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
    return rng.choice(["-", "-", " ", ""]).join(digits)  # bare: planted only after "SSN" (see positive)


def ip(rng: random.Random) -> str:
    if rng.random() < 0.65:
        first = rng.choice([10, 172, 192, 8, 34, 52, 81, 185, 203])
        return ".".join(str(n) for n in (first, rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    style = rng.random()
    if style < 0.4:
        return ":".join(groups)
    if style < 0.8:
        return f"2001:db8::{groups[6]}:{groups[7]}"
    return f"fe80::{groups[5]}:{groups[6]}:{groups[7]}"


_VALUES: dict[str, Callable[[random.Random], str]] = {
    EMAIL: email,
    PHONE: phone,
    CARD: card,
    IBAN: iban,
    SSN: ssn,
    IP: ip,
}

_TEMPLATES: dict[str, list[str]] = {
    EMAIL: [
        "Please send the invoice to {v} by Friday.",
        "Customer {v} asked about order 48213 (total $129.90).",
        "Contact: {v}",
        "Forwarded from {v} on 2024-03-01: refund requested.",
        "{v} wrote: the parcel arrived damaged.",
    ],
    PHONE: [
        "Please call me back at {v} after 5pm.",
        "Reach the customer on {v} regarding ticket #4821.",
        "New number {v}, old one no longer works.",
        "Left a voicemail at {v} on 03/04/2024.",
        "Phone {v} - prefers evenings.",
        "Customer says: you can reach me at {v}.",
    ],
    CARD: [
        "Charged card {v} twice for $45.99.",
        "Payment with {v} was declined on 2024-05-12.",
        "Please refund to the card ending... actually the full number is {v}.",
        "Card: {v} exp 09/27",
    ],
    IBAN: [
        "Refund to IBAN {v} please.",
        "Our bank details: {v} (BIC DEUTDEFF).",
        "Transfer EUR 250.00 to {v} by 15.06.2024.",
    ],
    SSN: [
        "SSN {v} on file for the applicant.",
        "Applicant social security number: {v}.",
        "Verified identity with SSN: {v}",
        "The form listed {v} as the SSN.",
    ],
    IP: [
        "Login from {v} blocked after 5 failed attempts.",
        "Requests from {v} exceeded the rate limit at 10:42.",
        "Server at {v} restarted after the v2.3.1 upgrade.",
        "Client IP {v}",
    ],
}

_NEGATIVE_TEMPLATES = [
    "Order #{order} shipped on {date} for {amount}.",
    "Invoice {invoice} is due {date}; amount {amount}.",
    "Upgraded to version {version} on {date} at {time}.",
    "Tracking number {tracking}, expected delivery {date}.",
    "Ticket #{ticket} closed after {n} days, {pct} faster than average.",
    "Refund of {amount} processed for order {order}.",
    "Build {version} passed {n} of {n2} tests in {sec} seconds.",
    "Meeting moved to {date} {time} in room {room}.",
    "PO {po} approved: {n} x 250 ml bottles at {amount} each.",
    "ISBN {isbn}, {n} copies in stock.",
    "SKU-{sku} restocked: {n} units, batch {batch}.",
    "Order {ordercode} was split into {n} parcels.",
    "Conversion rose {pct} between {date} and {date2}.",
    "Please confirm reservation {booking} for {n} guests at {time}.",
    "Shipment via FedEx {fedex} left the hub at {time}.",
    "Invoice total {amount} incl. VAT, customer id {custid}.",
    "Release {version} fixes {n} bugs reported since {date}.",
    "Flight LH {n} delayed to {time}; gate B{n2}.",
    "The customer ordered {n} items worth {amount} on {date}.",
    "Case {case} escalated; SLA breach at {time} on {date}.",
    "Population of the region: {spaced} (census {year}).",
    "Revenue reached {spaced} EUR in Q{q}.",
    "Serial {serial} replaced under warranty.",
    "Part no. {partno} is back in stock.",
    "Coordinates {lat}, {lon} confirmed by the driver.",
    "Support hours 9-17, extensions {ext}-{ext2}.",
    "Model XJ-{n} weighs {sec} kg.",
    "Ref {ref} / batch {batch}: {n} units.",
]


def _negative_fields(rng: random.Random) -> dict[str, str]:
    year = rng.randint(2019, 2026)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    date_formats = [
        f"{year}-{month:02d}-{day:02d}",
        f"{month:02d}/{day:02d}/{year}",
        f"{day:02d}.{month:02d}.{year}",
        f"{['Jan', 'Mar', 'May', 'Aug', 'Nov'][month % 5]} {day}, {year}",
    ]
    amount_formats = [
        f"${rng.randint(1, 9999):,}.{rng.randint(0, 99):02d}",
        f"€{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
        f"{rng.randint(1, 9)}.{rng.randint(100, 999)},{rng.randint(0, 99):02d} EUR",
        f"USD {rng.randint(10, 99999)}",
    ]
    return {
        "order": str(rng.randint(10000, 99999999)),
        "invoice": f"INV-{year}-{rng.randint(1, 999999):06d}",
        "date": rng.choice(date_formats),
        "date2": rng.choice(date_formats),
        "amount": rng.choice(amount_formats),
        "version": rng.choice(
            [
                f"{rng.randint(1, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
                f"v{rng.randint(1, 5)}.{rng.randint(0, 9)}",
            ]
        ),
        "time": rng.choice([f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}", f"{rng.randint(1, 12)}:30 pm"]),
        "tracking": rng.choice(
            [
                f"1Z{_d(rng, 3)}AA1{_d(rng, 10)}",
                " ".join(_d(rng, 4) for _ in range(5)) + " " + _d(rng, 2),
                f"JD{_d(rng, 18)}",
                _d(rng, 22, "9"),
            ]
        ),
        "ticket": str(rng.randint(100, 999999)),
        "n": str(rng.randint(2, 500)),
        "n2": str(rng.randint(2, 60)),
        "pct": f"{rng.randint(1, 99)}.{rng.randint(0, 9)}%",
        "sec": f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
        "room": str(rng.randint(100, 1299)),
        "po": _d(rng, 10, "4"),
        "isbn": f"978-{rng.randint(0, 9)}-{_d(rng, 2)}-{_d(rng, 6)}-{rng.randint(0, 9)}",
        "sku": f"{_d(rng, 5)}-{rng.choice('ABCDEF')}",
        "batch": f"{year}{month:02d}{day:02d}-{rng.randint(1, 99):02d}",
        "ordercode": f"ORD-{year}-{_d(rng, 6)}",
        "booking": "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(6)),
        "fedex": _d(rng, 12, "7"),
        "custid": str(rng.randint(1000, 99999999)),
        "case": f"{_d(rng, 8)}",
        "spaced": f"{rng.randint(1, 99)} {_d(rng, 3)} {_d(rng, 3)}",
        "year": str(year),
        "q": str(rng.randint(1, 4)),
        "serial": f"{_d(rng, 4)}-{_d(rng, 4)}-{_d(rng, 4)}",
        "partno": f"{_d(rng, 4, '123456789')}-{_d(rng, 4)}",
        "lat": f"{rng.randint(-89, 89)}.{_d(rng, 4)}",
        "lon": f"{rng.randint(-179, 179)}.{_d(rng, 4)}",
        "ext": str(rng.randint(2000, 2999)),
        "ext2": str(rng.randint(3000, 3999)),
        "ref": f"{_d(rng, 3)}-{_d(rng, 3)}-{_d(rng, 3)}",
    }


def positive(rng: random.Random, entity: str) -> Sentence:
    value = _VALUES[entity](rng)
    if entity == PHONE and value.isdigit():
        template = rng.choice(_BARE_PHONE_TEMPLATES)
    elif entity == SSN and value.isdigit():
        template = rng.choice(_BARE_SSN_TEMPLATES)
    else:
        template = rng.choice(_TEMPLATES[entity])
    before, _, after = template.partition("{v}")
    if rng.random() < 0.3:  # a second value of another kind in the same sentence
        other = rng.choice([e for e in ENTITIES if e != entity])
        second = _VALUES[other](rng)
        if other == PHONE and second.isdigit():
            second = f"+{second}"
        if other == SSN and second.isdigit():
            second = f"{second[:3]}-{second[3:5]}-{second[5:]}"
        extra = f" Also {second}."
        text = before + value + after + extra
        planted = (
            Planted(len(before), len(before) + len(value), entity, value),
            Planted(len(before + value + after) + 6, len(before + value + after) + 6 + len(second), other, second),
        )
        return Sentence(text, planted)
    return Sentence(before + value + after, (Planted(len(before), len(before) + len(value), entity, value),))


def negative(rng: random.Random) -> Sentence:
    template = rng.choice(_NEGATIVE_TEMPLATES)
    return Sentence(template.format(**_negative_fields(rng)), ())


def generate(per_entity: int = 400, negatives: int = 1000, seed: int = 7) -> tuple[list[Sentence], list[Sentence]]:
    """(positive sentences, `per_entity` for each entity; negative sentences)."""
    rng = random.Random(seed)
    positives = [positive(rng, entity) for entity in ENTITIES for _ in range(per_entity)]
    return positives, [negative(rng) for _ in range(negatives)]


def covered(planted: Planted, spans: list[tuple[int, int]]) -> bool:
    """Every letter and digit of the planted value lies inside a detected span (punctuation at its
    edges, such as a phone's parentheses, may stay)."""
    for offset in range(planted.start, planted.end):
        if planted.value[offset - planted.start].isalnum() and not any(s <= offset < e for s, e in spans):
            return False
    return True
