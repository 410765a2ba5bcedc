"""The embedded demo's database: a fictional shop whose tables are full of fake personal data.

`bastion demo` and `bastion serve` without a config run against this file, so it has to show, on a
fresh machine and with nothing installed but Python, everything Bastion governs: names, emails,
phone numbers in many national formats, addresses, birth dates, salaries, SSNs, IBANs, and support
tickets whose free text mentions people, emails, phones and card numbers. Masking, lineage and
classification need something real-looking to work on, and tests and the demo's printed output
need the same rows every time, so the data come from `random.Random(seed)` alone (no clock, no
Faker, no network).

Nothing here is a real person. Emails use the reserved `example.com/.net/.org` domains; US and
Canadian phones sit in the fictional 555-01xx block; other phones, card numbers (Luhn-valid, so
that detectors which check the digit fire), SSNs and IBANs (valid check digits, same reason) are
random digits in the right shape.

Schema documentation lives in the CREATE text, which SQLite keeps in `sqlite_master.sql`, so that
`describe` and the catalog scan have comments to show and to classify by. The convention, one a
backend can parse line by line: the `--` lines right after a table's opening parenthesis are the
table's comment; each column sits on its own line and its comment follows `--` on that line.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

#: where the demo keeps its files, relative to the working directory (DESIGN.md: `./.bastion/`)
DEMO_DIR = Path(".bastion")

#: stored in `PRAGMA user_version`, so that a caller can tell an out-of-date demo file
SCHEMA_VERSION = 1

#: the shop's order volume; the orders table has exactly this many rows per customer
ORDERS_PER_CUSTOMER = 5

# Fixed points in time instead of the clock, so the same seed gives the same file on any day.
_FIRST_SIGNUP = datetime(2022, 1, 1)
_LAST_SIGNUP = datetime(2026, 6, 30, 23, 59, 59)
_END = datetime(2026, 10, 31, 23, 59, 59)  # "now" for the shop: no order or ticket after it


def demo_database_path(base: Path = DEMO_DIR) -> Path:
    """Where the demo database lives under `base`; one place so the CLI and the server agree."""
    return base / "demo.db"


# --------------------------------------------------------------------------------------------
# Schema

SCHEMA = """
CREATE TABLE customers (
    -- People who have an account with the shop. Everything but id, country, region and
    -- created_at is personal data.
    id INTEGER PRIMARY KEY, -- customer number, in order of sign-up
    full_name TEXT NOT NULL, -- given and family name as entered at sign-up
    email TEXT NOT NULL UNIQUE, -- login and contact email address
    phone TEXT, -- contact phone number as typed, national or international format; NULL if none
    street_address TEXT NOT NULL, -- street, house number and unit of the delivery address
    city TEXT NOT NULL, -- city of the delivery address
    country TEXT NOT NULL, -- country of the delivery address, English name
    date_of_birth TEXT NOT NULL, -- YYYY-MM-DD, collected for age checks
    created_at TEXT NOT NULL, -- sign-up time, UTC, YYYY-MM-DD HH:MM:SS
    region TEXT NOT NULL CHECK (region IN ('EU', 'US', 'APAC')) -- sales region: EU member states, the Americas, Asia-Pacific
);

CREATE TABLE products (
    -- The catalogue. No personal data.
    id INTEGER PRIMARY KEY, -- product number
    name TEXT NOT NULL UNIQUE, -- name shown in the shop
    category TEXT NOT NULL, -- shop department
    price_cents INTEGER NOT NULL CHECK (price_cents > 0) -- list price in US cents
);

CREATE TABLE orders (
    -- One row per order line placed by a customer.
    id INTEGER PRIMARY KEY, -- order number, in order of time
    customer_id INTEGER NOT NULL REFERENCES customers (id), -- who ordered
    product_id INTEGER NOT NULL REFERENCES products (id), -- what was ordered
    quantity INTEGER NOT NULL CHECK (quantity > 0), -- number of items
    total_cents INTEGER NOT NULL CHECK (total_cents >= 0), -- quantity times the price at the time, US cents
    status TEXT NOT NULL CHECK (status IN ('pending', 'shipped', 'delivered', 'cancelled', 'refunded')), -- fulfilment state
    ordered_at TEXT NOT NULL -- time of the order, UTC, YYYY-MM-DD HH:MM:SS
);

CREATE INDEX orders_customer_id ON orders (customer_id);
CREATE INDEX orders_product_id ON orders (product_id);

CREATE TABLE support_tickets (
    -- Messages customers sent to support. The body is free text as the customer typed it and
    -- often carries names, emails, phone numbers, card numbers and IBANs.
    id INTEGER PRIMARY KEY, -- ticket number
    customer_id INTEGER NOT NULL REFERENCES customers (id), -- who opened the ticket
    subject TEXT NOT NULL, -- subject line
    body TEXT NOT NULL, -- the message, free text
    opened_at TEXT NOT NULL, -- when the ticket was opened, UTC, YYYY-MM-DD HH:MM:SS
    status TEXT NOT NULL CHECK (status IN ('open', 'pending', 'resolved', 'closed')) -- where support is with it
);

CREATE INDEX support_tickets_customer_id ON support_tickets (customer_id);

CREATE TABLE employees (
    -- Staff of the shop: HR data, the most sensitive table here.
    id INTEGER PRIMARY KEY, -- staff number
    full_name TEXT NOT NULL, -- given and family name
    email TEXT NOT NULL UNIQUE, -- work email address
    department TEXT NOT NULL, -- team the employee belongs to
    country TEXT NOT NULL, -- country of employment, English name
    salary_cents INTEGER NOT NULL, -- gross yearly salary in US cents
    ssn TEXT, -- US Social Security number, AAA-GG-SSSS; NULL outside the US
    iban TEXT, -- salary account IBAN, electronic format; NULL outside the EU
    hired_on TEXT NOT NULL -- first working day, YYYY-MM-DD
);

CREATE VIEW order_totals AS
    -- Orders and revenue per customer; cancelled and refunded orders count as orders but bring
    -- no revenue. Customers without orders do not appear.
    SELECT
        customer_id,
        COUNT(*) AS order_count,
        SUM(CASE WHEN status IN ('cancelled', 'refunded') THEN 0 ELSE total_cents END) AS revenue_cents
    FROM orders
    GROUP BY customer_id;
"""  # noqa: E501 (a column's definition and its comment share one line, however long)

TABLES = ("customers", "products", "orders", "support_tickets", "employees")
VIEWS = ("order_totals",)


# --------------------------------------------------------------------------------------------
# Reference data


@dataclass(frozen=True)
class _Country:
    """What it takes to make a plausible person living in one country.

    `cities` pairs a city with the area-code part of its phone numbers; phone and street templates
    use `{a}` for that part, `#` for any digit and `@` for a digit 2-9 (national plans forbid 0 and
    1 after many area codes).
    """

    name: str
    region: str
    weight: int
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    cities: tuple[tuple[str, str], ...]
    streets: tuple[str, ...]
    phones: tuple[str, ...]
    family_name_first: bool = False
    two_surnames: bool = False


def _country(
    name: str,
    region: str,
    weight: int,
    first_names: str,
    last_names: str,
    cities: str,
    streets: str,
    phones: str,
    **flags: bool,
) -> _Country:
    """Build a country from `|`-separated lists (`City:area` for cities): the table stays readable."""
    return _Country(
        name,
        region,
        weight,
        tuple(first_names.split("|")),
        tuple(last_names.split("|")),
        tuple((city, area) for city, _, area in (item.partition(":") for item in cities.split("|"))),
        tuple(streets.split("|")),
        tuple(phones.split("|")),
        **flags,
    )


_NANP_PHONES = "+1 {a}-555-01##|({a}) 555-01##|{a}.555.01##|+1{a}55501##|1-{a}-555-01##"

_COUNTRIES: tuple[_Country, ...] = (
    _country(
        "United States",
        "US",
        30,
        "James|Mary|Robert|Patricia|Michael|Jennifer|Marcus|Aaliyah|Carlos|Mei|Tyrone|Emily|Ashley|Kevin",
        "Smith|Johnson|Williams|Brown|Garcia|Miller|Davis|Nguyen|Washington|O'Connor|Anderson|Lee|Hughes|Rivera",
        "New York:212|San Francisco:415|Chicago:312|Boston:617|Seattle:206|Austin:512|Denver:303",
        "{n}{k} Maple Avenue|{n} Oak Street|{n}{k} Washington Boulevard|{n} Pine Street, Apt {m}"
        "|{n} Cedar Lane|{n}{k} Lakeview Drive",
        _NANP_PHONES,
    ),
    _country(
        "Canada",
        "US",
        6,
        "Olivia|Liam|Émilie|Noah|Ava|William|Charlotte|Ethan|Amélie|Raj",
        "Tremblay|Roy|Gagnon|Smith|Wilson|MacDonald|Singh|Campbell|Leblanc|Côté",
        "Toronto:416|Vancouver:604|Montreal:514|Calgary:403|Ottawa:613",
        "{n} Queen Street West|{n} rue Sainte-Catherine|{n} Maple Crescent|{n} King Street East, Unit {m}",
        _NANP_PHONES,
    ),
    _country(
        "Germany",
        "EU",
        10,
        "Anna|Lukas|Sophie|Maximilian|Lena|Jonas|Marie|Felix|Hannah|Jürgen",
        "Müller|Schmidt|Schneider|Fischer|Weber|Becker|Hoffmann|Schäfer|Koch|Wagner",
        "Berlin:30|Munich:89|Hamburg:40|Cologne:221|Frankfurt am Main:69|Leipzig:341",
        "Hauptstraße {n}|Lindenstraße {n}|Bahnhofstraße {n}|Schillerstraße {n}a|Gartenweg {n}",
        "+49 {a} @######|0{a} @######|+49 (0){a} @## ####|+49 151 ########|0171 #######",
    ),
    _country(
        "France",
        "EU",
        8,
        "Camille|Louis|Chloé|Hugo|Léa|Gabriel|Manon|Théo|Inès|Julien",
        "Martin|Bernard|Dubois|Thomas|Robert|Petit|Durand|Lefèvre|Moreau|Girard",
        "Paris:1 4@|Lyon:4 78|Marseille:4 91|Bordeaux:5 56|Lille:3 20|Nantes:2 40",
        "{n} rue de la République|{n} avenue Victor Hugo|{n} boulevard Voltaire|{n} rue des Lilas|{n} place du Marché",
        "+33 {a} ## ## ##|0{a} ## ## ##|+33 6 1# ## ## ##|06 4# ## ## ##|06.1#.##.##.##",
    ),
    _country(
        "Spain",
        "EU",
        6,
        "Lucía|Pablo|María José|Alejandro|Carmen|Javier|Sofía|Daniel|Elena|Álvaro",
        "García|Fernández|González|Rodríguez|López|Martínez|Sánchez|Pérez|Gómez|Ruiz",
        "Madrid:91|Barcelona:93|Valencia:96|Seville:95|Bilbao:94",
        "Calle Mayor {n}, {k}º|Avenida de la Constitución {n}|Calle del Sol {n}|Paseo de Gracia {n}",
        "+34 {a}@ ## ## ##|{a}@ ### ###|+34 6## ### ###|6## ## ## ##",
        two_surnames=True,
    ),
    _country(
        "Italy",
        "EU",
        6,
        "Giulia|Francesco|Chiara|Alessandro|Sofia|Lorenzo|Martina|Matteo|Giorgia|Nicolò",
        "Rossi|Russo|Ferrari|Esposito|Bianchi|Romano|Colombo|Ricci|Marino|De Luca",
        "Rome:06|Milan:02|Naples:081|Turin:011|Florence:055",
        "Via Roma {n}|Via Garibaldi {n}|Corso Vittorio Emanuele II {n}|Piazza Dante {n}|Via dei Mille {n}",
        "+39 {a} @### ###|{a} @######|+39 3@# ### ####|3@# #######",
    ),
    _country(
        "Netherlands",
        "EU",
        4,
        "Emma|Daan|Julia|Sem|Tess|Lucas|Sanne|Bram|Fleur|Thijs",
        "de Jong|Jansen|de Vries|van den Berg|van Dijk|Bakker|Visser|Smit|Meijer|de Boer",
        "Amsterdam:20|Rotterdam:10|The Hague:70|Utrecht:30|Eindhoven:40",
        "Keizersgracht {n}|Dorpsstraat {n}|Prinsengracht {n}-{k}|Molenweg {n}",
        "+31 {a} @## ####|0{a}-@######|+31 6 1### ####|06-1#######",
    ),
    _country(
        "Ireland",
        "EU",
        3,
        "Aoife|Seán|Siobhán|Conor|Niamh|Cian|Róisín|Oisín|Ciara|Patrick",
        "Murphy|Kelly|O'Sullivan|Walsh|O'Brien|Byrne|Ryan|O'Connor|McCarthy|Doyle",
        "Dublin:1|Cork:21|Swords:1|Dún Laoghaire:1",
        "{n} Main Street|{n} Church Road|Apartment {m}, {n} Harbour View|{n} O'Connell Street",
        "+353 {a} @## ####|0{a} @## ####|+353 87 ### ####|085 ### ####",
    ),
    _country(
        "Poland",
        "EU",
        4,
        "Zofia|Jakub|Zuzanna|Kacper|Maja|Szymon|Wiktoria|Mateusz|Agnieszka|Łukasz",
        "Nowak|Wójcik|Kowalczyk|Woźniak|Mazur|Krawczyk|Kaczmarek|Zając|Król|Wieczorek",
        "Warsaw:22|Kraków:12|Gdańsk:58|Wrocław:71|Poznań:61",
        "ul. Długa {n}/{m}|ul. Marszałkowska {n}|ul. Polna {n}|al. Jerozolimskie {n}/{m}",
        "+48 {a} @## ## ##|{a} @## ## ##|+48 50# ### ###|+48 69# ### ###|601 ### ###",
    ),
    _country(
        "Sweden",
        "EU",
        3,
        "Astrid|Erik|Elsa|Oskar|Maja|Lars|Ingrid|Nils|Freja|Björn",
        "Andersson|Johansson|Karlsson|Nilsson|Eriksson|Larsson|Olsson|Persson|Svensson|Lindqvist",
        "Stockholm:8|Gothenburg:31|Malmö:40|Uppsala:18",
        "Storgatan {n}|Drottninggatan {n}|Kungsgatan {n}|Skolvägen {n}",
        "+46 {a} @## ## ##|0{a}-@## ## ##|+46 70 174 06 ##|070-174 06 ##",
    ),
    _country(
        "Portugal",
        "EU",
        3,
        "Beatriz|João|Inês|Tiago|Mariana|Rui|Leonor|Gonçalo|Catarina|Duarte",
        "Silva|Santos|Ferreira|Pereira|Oliveira|Costa|Rodrigues|Martins|Sousa|Gonçalves",
        "Lisbon:21@|Porto:22@|Coimbra:239|Braga:253|Faro:289",
        "Rua Augusta {n}, {k}º Esq|Avenida da Liberdade {n}|Rua das Flores {n}|Travessa do Carmo {n}",
        "+351 {a} ### ###|{a} ### ###|+351 91# ### ###|+351 93# ### ###|96# ### ###",
    ),
    _country(
        "Austria",
        "EU",
        3,
        "Valentina|Tobias|Leonie|Florian|Katharina|Sebastian|Magdalena|Stefan|Theresa|Wolfgang",
        "Gruber|Huber|Bauer|Wagner|Pichler|Steiner|Moser|Mayer|Hofer|Leitner",
        "Vienna:1|Graz:316|Salzburg:662|Linz:732|Innsbruck:512",
        "Mariahilfer Straße {n}|Hauptplatz {n}|Landstraßer Hauptstraße {n}/{m}|Schulgasse {n}",
        "+43 {a} @#####|0{a} @#####|+43 664 #######|0676 #######",
    ),
    _country(
        "Japan",
        "APAC",
        5,
        "Yui|Haruto|Aoi|Sota|Hina|Ren|Sakura|Yuto|Mio|Kenji",
        "Sato|Suzuki|Takahashi|Tanaka|Watanabe|Ito|Yamamoto|Nakamura|Kobayashi|Kato",
        "Tokyo:3-@###|Osaka:6-@###|Yokohama:45-@##|Nagoya:52-@##|Kyoto:75-@##|Fukuoka:92-@##",
        "{k}-{m}-{n} Jingumae|{k}-{m}-{n} Nishi-Shinjuku|{k}-{m}-{n} Umeda|{k}-{m}-{n} Sakae",
        "+81 {a}-####|0{a}-####|090-@###-####|+81 80-@###-####|+81 90 @### ####",
    ),
    _country(
        "Australia",
        "APAC",
        5,
        "Charlotte|Jack|Olivia|Oliver|Isla|William|Mia|Noah|Matilda|Cooper",
        "Smith|Jones|Williams|Brown|Wilson|Taylor|Nguyen|Kelly|Ryan|Thompson",
        "Sydney:2|Melbourne:3|Brisbane:7|Perth:8|Adelaide:8",
        "{n} George Street|{m}/{n} Collins Street|{n} Queen Street|{n} Hay Street",
        "+61 {a} 5550 ####|(0{a}) 5550 ####|0{a} 5550 ####|0412 ### ###|+61 412 ### ###",
    ),
    _country(
        "India",
        "APAC",
        6,
        "Aarav|Priya|Vihaan|Ananya|Arjun|Diya|Rohan|Kavya|Aditya|Isha",
        "Sharma|Patel|Iyer|Reddy|Gupta|Nair|Singh|Mukherjee|Rao|Desai",
        "Mumbai:22|Delhi:11|Bengaluru:80|Chennai:44|Kolkata:33|Hyderabad:40",
        "{n} MG Road|Flat {m}, {n} Linking Road|{n} Anna Salai|{n} Park Street",
        "+91 {a} 2### ####|0{a}-2###-####|+91 98### #####|+91-99### #####|98### #####",
    ),
    _country(
        "Singapore",
        "APAC",
        3,
        "Wei Ling|Jun Jie|Hui Min|Zhi Hao|Xin Yi|Jia Wei",
        "Tan|Lim|Lee|Ng|Ong|Wong|Goh|Chua",
        "Singapore:",
        "{n} Orchard Road, #{k:02d}-{m:02d}|Blk {n} Ang Mo Kio Avenue {k}, #{k:02d}-{m:02d}|{n} Tampines Street {k}1",
        "+65 62## ####|63## ####|+65 91## ####|+65 87## ####|93## ####",
        family_name_first=True,
    ),
)

_COUNTRY_WEIGHTS = tuple(country.weight for country in _COUNTRIES)

_EMAIL_DOMAINS = (
    "example.com",
    "example.net",
    "example.org",
    "mail.example.com",
    "inbox.example.net",
    "post.example.org",
)
_STAFF_DOMAIN = "staff.example.com"

# (name, category, price in US cents); ids follow this order
PRODUCTS: tuple[tuple[str, str, int], ...] = (
    ("Merino Crew Sweater", "Apparel", 8900),
    ("Organic Cotton T-Shirt", "Apparel", 2400),
    ("Waxed Canvas Jacket", "Apparel", 18900),
    ("Linen Shirt", "Apparel", 5900),
    ("Wool Beanie", "Apparel", 2200),
    ("Trail Running Shoes", "Footwear", 12900),
    ("Leather Chelsea Boots", "Footwear", 17900),
    ("Canvas Sneakers", "Footwear", 6400),
    ("Ceramic Table Lamp", "Home", 7900),
    ("Linen Duvet Cover", "Home", 11900),
    ("Wool Throw Blanket", "Home", 9900),
    ("Scented Soy Candle", "Home", 1800),
    ("Cast Iron Skillet", "Kitchen", 4500),
    ("Pour-Over Coffee Set", "Kitchen", 3900),
    ("Chef's Knife 20 cm", "Kitchen", 8900),
    ("Bamboo Cutting Board", "Kitchen", 2900),
    ("Wireless Earbuds", "Electronics", 7900),
    ("Portable Speaker", "Electronics", 5900),
    ("USB-C Charger 65 W", "Electronics", 3900),
    ("E-Reader", "Electronics", 12900),
    ("Insulated Water Bottle", "Outdoors", 2900),
    ("Ultralight Tent", "Outdoors", 34900),
    ("Trekking Poles", "Outdoors", 6900),
    ("Down Sleeping Bag", "Outdoors", 22900),
    ("The Field Guide to Birds", "Books", 2400),
    ("Sourdough at Home", "Books", 2900),
)
# cheap things sell more often than tents
_PRODUCT_WEIGHTS = tuple(100_000 / price for _, _, price in PRODUCTS)

# Ticket texts. A sensitive one always carries at least one card number, plus some of: the
# customer's name, email, phone, another person's name, an IBAN. A plain one carries no personal
# data at all (only order numbers, counts and product names), so that masking has true negatives.
# (subject, body, needs an order of the customer)
_SENSITIVE_TICKETS: tuple[tuple[str, str, bool], ...] = (
    (
        "Charged twice for order #{order}",
        "Hi, I was charged twice for order #{order}. The card I used is {card}. Please refund one of "
        "the two payments. You can call me on {phone}. Thanks, {name}",
        True,
    ),
    (
        "Card declined at checkout",
        "My card {card} (expires {expiry}) keeps getting declined at checkout, although it works "
        "everywhere else. Please write to me at {email}.",
        False,
    ),
    (
        "Please update my payment card",
        "Please replace the card on my account, {card}, with my new one: {card2}. Regards, {name}",
        False,
    ),
    (
        "I did not place this order",
        "Order #{order} was placed by {other} with my card {card} without asking me. Please cancel "
        "it and contact me at {email} or {phone}.",
        True,
    ),
    (
        "Refund went to the wrong card?",
        "The refund for order #{order} went to {card}, but I paid with a different card. My phone: {phone}. {first}",
        True,
    ),
    (
        "Payment details as requested",
        "Hello, your colleague {other} asked me to send the card number here: {card}, expiry "
        "{expiry}. Please confirm you received it. {name}, {email}",
        False,
    ),
    (
        "Refund by bank transfer",
        "I returned order #{order}. Please refund it to my IBAN {iban} instead of the card {card}. Thank you, {name}",
        True,
    ),
)
_PLAIN_TICKETS: tuple[tuple[str, str, bool], ...] = (
    (
        "Where is my order #{order}?",
        "The tracking page for order #{order} has not changed for {days} days. Could you check with the carrier?",
        True,
    ),
    (
        "{product} arrived damaged",
        "The box was crushed and the {product} inside is broken. Can I get a replacement?",
        False,
    ),
    (
        "Question about sizes",
        "The size guide for the {product} seems to run one size small. Should I order a size up?",
        False,
    ),
    (
        "Change the delivery date",
        "Is it possible to deliver order #{order} next week instead? I am away until then.",
        True,
    ),
    (
        "Wrong quantity",
        "I ordered {qty2} but received {qty} in order #{order}. Please send the missing items.",
        True,
    ),
    (
        "Discount code not working",
        "The code {code} did not apply to my basket, even though the newsletter says it is valid "
        "until the end of the month.",
        False,
    ),
    (
        "Compatibility question",
        "Does the {product} work with the one I bought last year, or do I need an adapter?",
        False,
    ),
)

_DEPARTMENTS: tuple[tuple[str, int, int], ...] = (
    # (department, lowest and highest yearly salary in whole dollars)
    ("Customer Support", 42_000, 68_000),
    ("Warehouse", 38_000, 60_000),
    ("Engineering", 95_000, 185_000),
    ("Marketing", 60_000, 120_000),
    ("Finance", 70_000, 140_000),
    ("People", 58_000, 110_000),
)

# Countries where staff are employed, by weight; US staff have an SSN, EU staff an IBAN.
_STAFF_COUNTRIES: tuple[tuple[str, int], ...] = (
    ("United States", 10),
    ("Germany", 3),
    ("Netherlands", 2),
    ("Ireland", 2),
    ("France", 2),
    ("Austria", 1),
    ("Australia", 1),
)

# IBAN layouts (ISO 13616) for the countries above: country code and BBAN pattern, where `9` is a
# digit and `A` a capital letter; `bank` lists real-looking bank codes for letter-coded countries.
_IBAN_FORMATS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "Germany": ("DE", "999999999999999999", ()),
    "Netherlands": ("NL", "AAAA9999999999", ("ABNA", "INGB", "RABO", "TRIO", "SNSB")),
    "Ireland": ("IE", "AAAA99999999999999", ("AIBK", "BOFI", "IPBS")),
    "France": ("FR", "99999999999999999999999", ()),
    "Austria": ("AT", "9999999999999999", ()),
}


# --------------------------------------------------------------------------------------------
# Small generators


@dataclass(frozen=True)
class _Person:
    first: str
    last: str
    full_name: str
    country: _Country


def _digits(rng: random.Random, template: str) -> str:
    """Fill a template: `#` is any digit, `@` a digit 2-9, everything else stays."""
    out = []
    for char in template:
        if char == "#":
            out.append(str(rng.randrange(10)))
        elif char == "@":
            out.append(str(rng.randrange(2, 10)))
        else:
            out.append(char)
    return "".join(out)


def _ascii_slug(text: str) -> str:
    """`Jürgen O'Brien-Łukasz` -> `jurgenobrienlukasz`: what people put in email addresses."""
    text = text.lower().translate(str.maketrans({"ß": "ss", "ł": "l", "ø": "o", "æ": "ae", "œ": "oe"}))
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if char.isascii() and char.isalnum())


def _person(rng: random.Random, country: _Country, used: set[str] | None = None) -> _Person:
    """A person of `country`; with `used`, one whose full name is not in it yet if a few draws
    find one (name pools are small, and a table of namesakes looks fake)."""
    for _ in range(20):
        first = rng.choice(country.first_names)
        last = rng.choice(country.last_names)
        if country.two_surnames and rng.random() < 0.5:
            last = f"{last} {rng.choice(country.last_names)}"
        full = f"{last} {first}" if country.family_name_first else f"{first} {last}"
        if used is None or full not in used:
            break
    if used is not None:
        used.add(full)
    return _Person(first, last, full, country)


def _any_person(rng: random.Random) -> _Person:
    return _person(rng, rng.choices(_COUNTRIES, _COUNTRY_WEIGHTS)[0])


def _unique_email(rng: random.Random, person: _Person, taken: set[str], domain: str | None = None) -> str:
    """A personal-looking address, made unique by a number when the name is already taken."""
    first, last = _ascii_slug(person.first), _ascii_slug(person.last)
    if domain is None:
        local = rng.choice(
            (
                f"{first}.{last}",
                f"{first}{last}",
                f"{first}_{last}",
                f"{first[0]}{last}",
                f"{last}.{first}",
                f"{first}.{last}{rng.randrange(60, 100)}",
                f"{first}{rng.randrange(1, 1000)}",
            )
        )
        domain = rng.choice(_EMAIL_DOMAINS)
    else:
        local = f"{first}.{last}"
    email = f"{local}@{domain}"
    counter = 2
    while email in taken:
        email = f"{local}{counter}@{domain}"
        counter += 1
    taken.add(email)
    return email


def _phone(rng: random.Random, country: _Country, area: str) -> str:
    template = rng.choice(country.phones)
    return _digits(rng, template.replace("{a}", area))


def _address(rng: random.Random, country: _Country) -> str:
    template = rng.choice(country.streets)
    return template.format(n=rng.randint(1, 199), m=rng.randint(1, 40), k=rng.randint(1, 9))


def _luhn_check_digit(payload: str) -> int:
    """The digit that makes `payload + digit` pass the Luhn check (ISO/IEC 7812)."""
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:  # these are the doubled ones once the check digit is appended
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def _card_number(rng: random.Random) -> str:
    """A Luhn-valid 16-digit Visa or Mastercard number, written as people write them."""
    prefix = rng.choice(("4", "51", "52", "53", "54", "55"))
    payload = prefix + "".join(str(rng.randrange(10)) for _ in range(15 - len(prefix)))
    number = payload + str(_luhn_check_digit(payload))
    separator = rng.choice((" ", "-"))
    return separator.join(number[i : i + 4] for i in range(0, 16, 4))


def _iban(rng: random.Random, country_name: str) -> str:
    """An IBAN with valid mod-97 check digits (and, for France, a valid RIB key)."""
    code, layout, banks = _IBAN_FORMATS.get(country_name, _IBAN_FORMATS["Germany"])
    if banks:
        bank = rng.choice(banks)
        bban = bank + _digits(rng, "#" * (len(layout) - len(bank)))
    else:
        bban = _digits(rng, "#" * len(layout))
    if code == "FR":  # bank (5), branch (5), account (11), then the RIB key over all three
        body = bban[:21]
        bban = body + f"{97 - (89 * int(body[:5]) + 15 * int(body[5:10]) + 3 * int(body[10:21])) % 97:02d}"
    rearranged = "".join(str(int(char, 36)) for char in bban + code + "00")
    return f"{code}{98 - int(rearranged) % 97:02d}{bban}"


def _spaced(iban: str) -> str:
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _ssn(rng: random.Random) -> str:
    """AAA-GG-SSSS with an area the SSA could issue (not 000, 666 or 9xx), group and serial not 0."""
    area = rng.randrange(1, 899)
    if area == 666:
        area = 667
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


def _timestamp(rng: random.Random, start: datetime, end: datetime) -> datetime:
    return start + timedelta(seconds=rng.randrange(int((end - start).total_seconds()) + 1))


def _text(moment: datetime) -> str:
    return moment.isoformat(sep=" ")


def _day(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randrange((end - start).days + 1))


# --------------------------------------------------------------------------------------------
# The shop


@dataclass(frozen=True)
class _Customer:
    person: _Person
    row: tuple[object, ...]  # without the id
    created_at: datetime


def _customers(rng: random.Random, count: int) -> list[_Customer]:
    taken: set[str] = set()
    names: set[str] = set()
    made = []
    for _ in range(count):
        country = rng.choices(_COUNTRIES, _COUNTRY_WEIGHTS)[0]
        person = _person(rng, country, names)
        city, area = rng.choice(country.cities)
        created = _timestamp(rng, _FIRST_SIGNUP, _LAST_SIGNUP)
        adult_since = created.date().replace(day=1, year=created.year - 18)  # the shop sells to adults
        phone = _phone(rng, country, area) if rng.random() < 0.92 else None
        row = (
            person.full_name,
            _unique_email(rng, person, taken),
            phone,
            _address(rng, country),
            city,
            country.name,
            _day(rng, date(1945, 1, 1), adult_since).isoformat(),
            _text(created),
            country.region,
        )
        made.append(_Customer(person, row, created))
    made.sort(key=lambda customer: customer.created_at)  # customer numbers grow with sign-up time
    return made


def _order_status(rng: random.Random, ordered_at: datetime) -> str:
    age = _END - ordered_at
    if age < timedelta(days=3):
        return rng.choice(("pending", "pending", "cancelled"))
    if age < timedelta(days=10):
        return rng.choice(("shipped", "shipped", "shipped", "pending"))
    return rng.choices(("delivered", "cancelled", "refunded"), (92, 5, 3))[0]


def _orders(rng: random.Random, customers: Sequence[_Customer]) -> list[tuple[object, ...]]:
    """Exactly ORDERS_PER_CUSTOMER orders per customer on average, unevenly spread (a few loyal
    customers, some with none), each placed after its customer signed up."""
    appetite = [rng.expovariate(1.0) for _ in customers]
    buyers = rng.choices(range(len(customers)), appetite, k=ORDERS_PER_CUSTOMER * len(customers))
    product_ids = rng.choices(range(1, len(PRODUCTS) + 1), _PRODUCT_WEIGHTS, k=len(buyers))
    rows = []
    for buyer, product_id in zip(buyers, product_ids, strict=True):
        ordered_at = _timestamp(rng, customers[buyer].created_at, _END)
        quantity = rng.choices((1, 2, 3, 4, 5), (70, 20, 6, 3, 1))[0]
        total = quantity * PRODUCTS[product_id - 1][2]
        rows.append((buyer + 1, product_id, quantity, total, _order_status(rng, ordered_at), _text(ordered_at)))
    rows.sort(key=lambda row: (row[5], row[0]))  # order numbers grow with time
    return rows


def _tickets(
    rng: random.Random, customers: Sequence[_Customer], orders: Sequence[tuple[object, ...]]
) -> list[tuple[object, ...]]:
    """One ticket for every two customers; exactly half of them (rounded up) carry personal data,
    always including a card number, so detectors have both positives and negatives to work on."""
    count = (len(customers) + 1) // 2
    orders_of: dict[int, list[tuple[int, datetime]]] = {}
    for order_id, row in enumerate(orders, start=1):
        orders_of.setdefault(int(row[0]), []).append((order_id, datetime.fromisoformat(str(row[5]))))
    sensitive = [True] * ((count + 1) // 2) + [False] * (count // 2)
    rng.shuffle(sensitive)
    rows = []
    for has_pii in sensitive:
        customer_id = rng.randrange(1, len(customers) + 1)
        customer = customers[customer_id - 1]
        own_orders = orders_of.get(customer_id, [])
        templates = [
            (subject, body, needs_order)
            for subject, body, needs_order in (_SENSITIVE_TICKETS if has_pii else _PLAIN_TICKETS)
            if (own_orders or not needs_order) and ("{iban}" not in body or customer.row[8] == "EU")
        ]
        subject, body, needs_order = rng.choice(templates)
        if needs_order:
            order_id, not_before = rng.choice(own_orders)
        else:
            order_id, not_before = 0, customer.created_at
        opened = _timestamp(rng, not_before, _END)
        country = customer.person.country
        values = {
            "name": customer.person.full_name,
            "first": customer.person.first,
            "email": customer.row[1],
            # a customer who gave no phone at sign-up may still type one into a ticket
            "phone": customer.row[2] or _phone(rng, country, rng.choice(country.cities)[1]),
            "card": _card_number(rng),
            "card2": _card_number(rng),
            "expiry": f"{rng.randint(1, 12):02d}/{rng.randint(27, 31)}",
            "other": _any_person(rng).full_name,
            "iban": _spaced(_iban(rng, country.name)),
            "order": order_id,
            "product": rng.choice(PRODUCTS)[0],
            "days": rng.randint(4, 12),
            "qty": 1,
            "qty2": rng.randint(2, 4),
            "code": f"{rng.choice(('WINTER', 'SPRING', 'WELCOME', 'VIP'))}{rng.randint(10, 30)}",
        }
        age = _END - opened
        if age > timedelta(days=30):
            status = rng.choices(("closed", "resolved"), (3, 1))[0]
        else:
            status = rng.choice(("open", "pending", "resolved"))
        rows.append((customer_id, subject.format(**values), body.format(**values), _text(opened), status))
    rows.sort(key=lambda row: row[3])  # ticket numbers grow with time
    return rows


def _employees(rng: random.Random, count: int) -> list[tuple[object, ...]]:
    by_name = {country.name: country for country in _COUNTRIES}
    names, weights = zip(*_STAFF_COUNTRIES, strict=True)
    taken: set[str] = set()
    used: set[str] = set()
    rows = []
    for _ in range(count):
        country = by_name[rng.choices(names, weights)[0]]
        person = _person(rng, country, used)
        department, low, high = rng.choice(_DEPARTMENTS)
        salary_cents = rng.randrange(low, high + 1, 500) * 100
        rows.append(
            (
                person.full_name,
                _unique_email(rng, person, taken, domain=_STAFF_DOMAIN),
                department,
                country.name,
                salary_cents,
                _ssn(rng) if country.name == "United States" else None,
                _iban(rng, country.name) if country.region == "EU" else None,
                _day(rng, date(2015, 3, 1), date(2026, 9, 1)),
            )
        )
    rows.sort(key=lambda row: row[7])  # staff numbers grow with seniority
    return [(*row[:7], row[7].isoformat()) for row in rows]


# --------------------------------------------------------------------------------------------
# Writing the file


def build_demo_database(path: Path, *, customers: int = 200, seed: int = 7) -> Path:
    """Create (or atomically replace) the demo shop database at `path` and return `path`.

    The rows depend only on `customers` and `seed`. The file is written under a temporary name in
    the same directory and moved over `path` with `os.replace`, so a server or a reader never sees
    a half-written database, and a failed build leaves the previous file as it was. With the
    defaults: 200 customers, 1,000 orders, 100 support tickets, 20 employees, 26 products.
    """
    if customers < 1:
        raise ValueError("the demo needs at least one customer")
    path = Path(path)
    rng = random.Random(seed)
    shop_customers = _customers(rng, customers)
    orders = _orders(rng, shop_customers)
    tickets = _tickets(rng, shop_customers, orders)
    employees = _employees(rng, max(5, customers // 10))

    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    temporary = Path(temporary_name)
    try:
        with contextlib.closing(sqlite3.connect(temporary)) as conn:
            # Nobody else can see the temporary file, so no journal is needed; durability comes
            # from the fsync below, before the file takes the real name.
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("PRAGMA foreign_keys = ON")  # a generator bug fails here, not in a demo
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            with conn:
                conn.executemany(
                    "INSERT INTO customers (id, full_name, email, phone, street_address, city, country,"
                    " date_of_birth, created_at, region) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ((number, *customer.row) for number, customer in enumerate(shop_customers, start=1)),
                )
                conn.executemany(
                    "INSERT INTO products (id, name, category, price_cents) VALUES (?, ?, ?, ?)",
                    ((number, *product) for number, product in enumerate(PRODUCTS, start=1)),
                )
                conn.executemany(
                    "INSERT INTO orders (id, customer_id, product_id, quantity, total_cents, status,"
                    " ordered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ((number, *row) for number, row in enumerate(orders, start=1)),
                )
                conn.executemany(
                    "INSERT INTO support_tickets (id, customer_id, subject, body, opened_at, status)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    ((number, *row) for number, row in enumerate(tickets, start=1)),
                )
                conn.executemany(
                    "INSERT INTO employees (id, full_name, email, department, country, salary_cents,"
                    " ssn, iban, hired_on) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ((number, *row) for number, row in enumerate(employees, start=1)),
                )
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        # A journal or WAL left beside the old file (a crashed write, say) would be replayed into
        # the new one by the next connection and corrupt it; the old file is going, so they go too.
        for suffix in ("-journal", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; some platforms cannot open a directory, which is fine."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
