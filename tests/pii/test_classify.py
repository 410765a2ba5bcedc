"""Column classification rules, without a database: names in many styles, types, comments,
overrides, and what a sample of values decides."""

from __future__ import annotations

import pytest

from server.pii.classify import (
    ColumnFacts,
    ValueFinding,
    decide_from_sample,
    decide_without_sample,
    name_tokens,
    type_kind,
)


def facts(column: str, data_type: str = "text", **more: object) -> ColumnFacts:
    return ColumnFacts(
        schema="public", table=str(more.pop("table", "things")), column=column, data_type=data_type, **more
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "tokens"),
    [
        ("emailAddress", ["email", "address"]),
        ("IPAddr2", ["ip", "addr"]),
        ("e-mail", ["e", "mail"]),
        ("CUSTOMER_PHONE_NO", ["customer", "phone", "no"]),
        ("dateOfBirth", ["date", "of", "birth"]),
    ],
)
def test_names_split_into_tokens_in_any_style(name: str, tokens: list[str]) -> None:
    assert name_tokens(name) == tokens


@pytest.mark.parametrize(
    ("column", "data_type", "entity"),
    [
        ("email", "text", "EMAIL_ADDRESS"),
        ("e_mail", "varchar(100)", "EMAIL_ADDRESS"),
        ("emailAddress", "text", "EMAIL_ADDRESS"),
        ("contact_email", "citext", "EMAIL_ADDRESS"),
        ("phone", "text", "PHONE_NUMBER"),
        ("msisdn", "bigint", "PHONE_NUMBER"),
        ("mobileNumber", "text", "PHONE_NUMBER"),
        ("tel", "text", "PHONE_NUMBER"),
        ("ssn", "text", "US_SSN"),
        ("social_security_number", "text", "US_SSN"),
        ("first_name", "text", "PERSON"),
        ("lastName", "text", "PERSON"),
        ("full_name", "text", "PERSON"),
        ("cardholder_name", "text", "PERSON"),
        ("street_address", "text", "LOCATION"),
        ("zip", "integer", "LOCATION"),
        ("postcode", "text", "LOCATION"),
        ("dob", "date", "DATE_OF_BIRTH"),
        ("birth_date", "date", "DATE_OF_BIRTH"),
        ("iban", "text", "IBAN_CODE"),
        ("card_number", "text", "CREDIT_CARD"),
        ("cc_number", "text", "CREDIT_CARD"),
        ("pan", "text", "CREDIT_CARD"),
        ("ip", "text", "IP_ADDRESS"),
        ("ip_addr", "text", "IP_ADDRESS"),
        ("client_ip", "text", "IP_ADDRESS"),
        ("passport_no", "text", "PASSPORT"),
        ("tax_id", "text", "TAX_ID"),
        ("anything", "inet", "IP_ADDRESS"),
    ],
)
def test_names_and_types_that_say_pii_are_classified_without_a_sample(column: str, data_type: str, entity: str) -> None:
    decision = decide_without_sample(facts(column, data_type))
    assert decision is not None and decision.entity == entity


@pytest.mark.parametrize(
    ("column", "data_type"),
    [
        ("email_verified", "boolean"),
        ("email_template_id", "integer"),
        ("email_hash", "text"),
        ("phone_count", "integer"),
        ("external_id", "uuid"),
        ("amount", "numeric(10,2)"),
        ("order_number", "bigint"),
        ("created_at", "timestamp with time zone"),
        ("email", "integer"),  # an email cannot be a number
        ("product_name", "integer"),
    ],
)
def test_columns_that_cannot_hold_pii_are_not_flagged(column: str, data_type: str) -> None:
    decision = decide_without_sample(facts(column, data_type))
    assert decision is not None and decision.entity is None


def test_a_bare_name_column_is_a_person_only_in_a_table_of_people() -> None:
    people = decide_without_sample(facts("name", table="customers"))
    assert people is not None and people.entity == "PERSON"
    assert decide_without_sample(facts("name", table="products")) is None  # left to the sample


def test_a_comment_can_say_what_a_column_holds() -> None:
    decision = decide_without_sample(facts("c1", comment="Customer mobile phone"))
    assert decision is not None and (decision.entity, decision.source) == ("PHONE_NUMBER", "comment")


def test_an_override_wins_over_everything() -> None:
    forced = decide_without_sample(facts("x2", override="PHONE_NUMBER"))
    cleared = decide_without_sample(facts("email", override="NONE"))
    assert forced is not None and (forced.entity, forced.source) == ("PHONE_NUMBER", "override")
    assert cleared is not None and cleared.entity is None and cleared.source == "override"


def test_unhelpful_text_names_are_left_to_the_sample() -> None:
    for column in ("info", "x2", "val", "notes", "data"):
        assert decide_without_sample(facts(column)) is None


@pytest.mark.parametrize(
    ("data_type", "kind"),
    [("text", "text"), ("jsonb", "text"), ("integer", "number"), ("numeric(10,2)", "number"), ("uuid", "never")],
)
def test_type_kinds(data_type: str, kind: str) -> None:
    assert type_kind(data_type) == kind


def finding(
    covering: str | None = None, inside: tuple[str, ...] = (), length: int = 20, json: bool = False
) -> ValueFinding:
    return ValueFinding(
        length,
        length > 40,
        json,
        covering,
        0.9 if covering else 0.0,
        frozenset(inside or (covering,) if covering else inside),
    )


def test_a_sample_mostly_covered_by_one_entity_names_it() -> None:
    sample = [finding("PHONE_NUMBER")] * 70 + [finding()] * 30
    decision = decide_from_sample(facts("x2"), sample)
    assert (decision.entity, decision.source) == ("PHONE_NUMBER", "sample")
    assert "70/100" in decision.evidence


def test_a_few_phone_like_values_do_not_make_a_phone_column() -> None:
    sample = [finding("PHONE_NUMBER")] * 10 + [finding()] * 90
    decision = decide_from_sample(facts("order_ref"), sample)
    assert decision.entity is None


def test_long_prose_is_free_text() -> None:
    decision = decide_from_sample(facts("notes"), [finding(length=140)] * 50)
    assert decision.entity == "FREE_TEXT"


def test_json_with_pii_inside_is_free_text() -> None:
    sample = [finding(inside=("EMAIL_ADDRESS",), json=True)] * 5 + [finding(json=True)] * 45
    decision = decide_from_sample(facts("info", "jsonb"), sample)
    assert decision.entity == "FREE_TEXT"


def test_mixed_values_with_pii_are_free_text() -> None:
    sample = [finding("EMAIL_ADDRESS")] * 30 + [finding("PHONE_NUMBER")] * 20 + [finding()] * 50
    decision = decide_from_sample(facts("val"), sample)
    assert decision.entity == "FREE_TEXT" and "mixed" in decision.evidence


def test_an_empty_sample_decides_nothing_for_good() -> None:
    decision = decide_from_sample(facts("x9"), [])
    assert decision.entity is None and decision.source == "none"
