"""Bad policy files are refused with every problem's file, line and column, never a traceback;
good ones load into one policy set whose version follows the files."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import ConfigError
from server.policy.engine import PolicyEngine
from server.policy.errors import PolicyError
from server.policy.schema import SHIPPED_POLICIES
from tests.policy.test_obligations import CATALOG, PII

GOOD = 'permit(principal, action == Action::"select", resource);\n'


def problems_of(**files: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        PolicyEngine.from_sources({f"{name}.cedar": text for name, text in files.items()})
    assert isinstance(caught.value, ConfigError)
    return caught.value.lines()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'permit(principal, action, resource)\nwhen { context.purpose = "" };',
            "p.cedar:2:24: '=' is not a valid operator",
        ),
        ("permit(principal, action, resource)", "p.cedar:1:36: unexpected end of input"),
        ('permit(principal, action, resource) when { "abc };', "p.cedar:1:44: unterminated string"),
        ("permitt(principal, action, resource);", "p.cedar:1:1: invalid policy effect: permitt"),
        ("permit(principal, actio, resource);", "p.cedar:1:19: found an invalid variable in the policy scope: actio"),
        ("permit(principal, action, resource) when { context.x == 1 } foo;", "p.cedar:1:64: unexpected token `;`"),
        (
            "permit(principal, action, resource)\npermit(principal, action, resource);",
            "p.cedar:2:1: expected `;` before",
        ),
        ("permit(principal, action, resource) when { 1 ~ 2 };", "p.cedar:1:46: character '~' is not valid in Cedar"),
        ('permit(principal in Grop::"x", action, resource);', "p.cedar:1:21: unrecognized entity type `Grop`"),
        (
            'permit(principal, action == Action::"selekt", resource);',
            'p.cedar:1:29: unrecognized action `Action::"selekt"`',
        ),
        (
            'permit(principal, action == Action::"select", resource)\n  when { resource.nope == 1 };',
            "p.cedar:2:19: attribute `nope` on entity type `Table` not found",
        ),
        (
            'permit(principal, action == Action::"select", resource) when { principal.on_behalf_of == "x" };',
            "unable to guarantee safety of access to optional attribute `on_behalf_of`",
        ),
        ('@row_fliter("x = 1")\npermit(principal, action, resource);', "p.cedar:1:1: unknown annotation @row_fliter"),
        (
            '@mask("sha1")\nforbid(principal, action == Action::"read_unmasked", resource);',
            "p.cedar:1:1: @mask must be one of",
        ),
        (
            '@mask("hash")\npermit(principal, action == Action::"read_unmasked", resource);',
            "belongs on a forbid of read_unmasked",
        ),
        (
            '@max_rows("ten")\npermit(principal, action == Action::"select", resource);',
            "@max_rows must be a positive whole number",
        ),
        (
            '@row_filter("region = ")\npermit(principal, action == Action::"select", resource);',
            "p.cedar:1:1: the row filter",
        ),
        (
            '@row_filter("region IN (SELECT 1)")\npermit(principal, action == Action::"select", resource);',
            "contains a subquery",
        ),
        (
            '@row_filter("pg_sleep(1) IS NULL")\npermit(principal, action == Action::"select", resource);',
            "never allowed",
        ),
        ("permit(principal == ?principal, action, resource);", "templates (?principal, ?resource) are not supported"),
    ],
)
def test_a_bad_policy_is_reported_with_its_location(text, expected):
    lines = problems_of(p=text)
    assert any(expected in line for line in lines), lines


def test_every_problem_of_every_file_is_reported_in_file_order():
    lines = problems_of(
        a=GOOD + 'permit(principal in Nope::"x", action, resource);\n' + GOOD + "permit(principal, actio, resource);\n",
        b='@id("dup")\n' + GOOD + '@id("dup")\n' + GOOD,
    )
    assert [line.split(": ")[0] for line in lines] == ["a.cedar:2:21", "a.cedar:4:19", "b.cedar:3:1"]
    assert "policy id 'dup' is also used at b.cedar:1" in lines[2]


def test_a_missing_or_empty_directory_is_a_policy_error(tmp_path: Path):
    with pytest.raises(PolicyError, match="does not exist"):
        PolicyEngine.load(tmp_path / "absent")
    with pytest.raises(PolicyError, match=r"no \.cedar policy files"):
        PolicyEngine.load(tmp_path)


def test_the_message_is_one_line_for_the_server_log():
    with pytest.raises(PolicyError) as caught:
        PolicyEngine.from_sources({"p.cedar": "permit(principal, actio, resource);"})
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("the policies are invalid (1 problem): p.cedar:1:19")


def test_the_version_is_a_hash_of_the_file_names_and_contents():
    one = PolicyEngine.from_sources({"a.cedar": GOOD})
    assert one.version == PolicyEngine.from_sources({"a.cedar": GOOD}).version
    assert one.version != PolicyEngine.from_sources({"b.cedar": GOOD}).version
    assert one.version != PolicyEngine.from_sources({"a.cedar": GOOD + "\n"}).version


def test_the_shipped_policies_and_examples_load():
    assert len(PolicyEngine.load(SHIPPED_POLICIES).policies) == 8
    assert "blocked-scraper-bot" in PolicyEngine.load(SHIPPED_POLICIES / "examples").policies


def test_binding_reports_entities_the_catalog_does_not_have_with_their_location():
    engine = PolicyEngine.from_sources(
        {
            "p.cedar": GOOD
            + 'permit(principal, action == Action::"select", resource == Table::"main.sales.ordres");\n'
            + 'permit(principal, action == Action::"select", resource == Table::"other.sales.x");\n'
        }
    )
    problems = engine.bind("main", CATALOG, PII)
    assert [str(p) for p in problems] == [
        'p.cedar:2:59: Table::"main.sales.ordres" is not in the catalog of database main'
    ]


def test_binding_reports_a_row_filter_naming_an_unknown_column_at_its_annotation():
    engine = PolicyEngine.from_sources(
        {
            "p.cedar": GOOD
            + "\n@row_filter(\"regoin = 'EU'\")\n"
            + 'permit(principal, action == Action::"select", resource == Table::"main.sales.orders");\n'
        }
    )
    (problem,) = engine.bind("main", CATALOG, PII)
    assert str(problem).startswith("p.cedar:3:1: the row filter")
    assert "names column regoin, which sales.orders lacks" in str(problem)


def test_binding_again_with_the_same_catalog_is_a_no_op():
    engine = PolicyEngine.from_sources({"p.cedar": GOOD})
    engine.bind("main", CATALOG, PII)
    binding = engine.binding("main")
    engine.bind("main", CATALOG, dict(PII))
    assert engine.binding("main") is binding
    engine.bind("main", CATALOG, {})
    assert engine.binding("main") is not binding
