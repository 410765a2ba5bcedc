"""Decision matrices: agent x action x resource -> verdict and the reason the agent reads, in the
style of datasette's permission tests. Each row is one promise the shipped policies make."""

from __future__ import annotations

import pytest

from server.policy.decision import Verdict
from server.policy.engine import PolicyEngine
from tests.policy.conftest import request

ALLOW, DENY, APPROVAL = Verdict.ALLOW, Verdict.DENY, Verdict.APPROVAL_REQUIRED

# (agent, groups, action, resource, extra context, verdict, a reason contains, a deciding policy)
EXAMPLES_MATRIX = [
    (
        "analyst",
        ("analytics",),
        "select",
        "sales.customers",
        {},
        ALLOW,
        "analytics agents read sales",
        "analytics-sales",
    ),
    ("analyst", ("analytics",), "select", "sales.orders", {}, ALLOW, "read sales", "analytics-sales"),
    ("analyst", ("analytics",), "select", "support.tickets", {}, ALLOW, "read support", "analytics-support"),
    ("analyst", ("analytics",), "select", "hr.employees", {}, DENY, "off limits", "analytics-no-hr"),
    ("analyst", ("analytics",), "describe", "hr.employees", {}, DENY, "off limits", "analytics-no-hr"),
    ("analyst", ("analytics",), "describe", "sales.orders", {}, ALLOW, "describe", "describe-all"),
    ("analyst", ("analytics", "hr"), "select", "hr.employees", {}, DENY, "off limits", "analytics-no-hr"),
    ("analyst", ("analytics",), "update", "sales.orders", {}, DENY, "no policy permits update", None),
    (
        "analyst",
        ("analytics",),
        "ddl",
        "sales.orders",
        {"approved": True},
        DENY,
        "not allowed for agents",
        "no-ddl-admin",
    ),
    ("analyst", ("analytics",), "admin", "", {}, DENY, "not allowed for agents", "no-ddl-admin"),
    ("helper", ("support",), "select", "sales.customers", {}, ALLOW, "customer records", "support-customers"),
    ("helper", ("support",), "select", "support.tickets", {}, ALLOW, "support data", "support-tickets"),
    (
        "helper",
        ("support",),
        "select",
        "sales.orders",
        {},
        DENY,
        "no policy permits select on table sales.orders",
        None,
    ),
    ("helper", ("support",), "select", "hr.employees", {}, DENY, "no policy permits", None),
    ("eu", ("eu-analysts",), "select", "sales.customers", {}, ALLOW, "EU rows", "eu-sales-rows"),
    ("eu", ("eu-analysts",), "select", "sales.products", {}, ALLOW, "product catalogue", "eu-products"),
    ("eu", ("eu-analysts",), "select", "support.tickets", {}, DENY, "no policy permits", None),
    ("oncall", ("oncall",), "select", "support.tickets", {}, ALLOW, "on-call agents read", "oncall-reads"),
    (
        "oncall",
        ("oncall",),
        "update",
        "support.tickets",
        {"hour": 9},
        APPROVAL,
        "request_approval",
        "oncall-writes-need-approval",
    ),
    ("oncall", ("oncall",), "insert", "support.tickets", {"hour": 17}, APPROVAL, "request_approval", None),
    (
        "oncall",
        ("oncall",),
        "delete",
        "support.tickets",
        {"hour": 9, "approved": True},
        ALLOW,
        "change tickets",
        "oncall-writes",
    ),
    (
        "oncall",
        ("oncall",),
        "update",
        "support.tickets",
        {"hour": 18, "approved": True},
        DENY,
        "working hours",
        "oncall-working-hours",
    ),
    ("oncall", ("oncall",), "update", "support.tickets", {"hour": 7}, DENY, "working hours", "oncall-working-hours"),
    ("oncall", ("oncall",), "update", "sales.orders", {"approved": True}, DENY, "no policy permits", None),
    ("people", ("hr",), "select", "hr.employees", {}, ALLOW, "HR agents read", "hr-reads"),
    ("scraper-bot", ("analytics",), "select", "sales.products", {}, DENY, "blocked pending", "blocked-scraper-bot"),
    ("scraper-bot", (), "describe", "sales.products", {}, DENY, "blocked pending", "blocked-scraper-bot"),
    ("scraper-bot", (), "select", "", {}, DENY, "blocked pending", "blocked-scraper-bot"),
    ("stranger", (), "select", "", {}, ALLOW, "read no table", "table-less-reads"),
    (
        "stranger",
        (),
        "select",
        "sales.products",
        {},
        DENY,
        "no policy permits select on table sales.products for agent stranger",
        None,
    ),
]

DEFAULT_MATRIX = [
    ("anyone", (), "select", "public.orders", {}, ALLOW, "reads are allowed", "default-read"),
    ("anyone", (), "describe", "public.customers", {}, ALLOW, "reads are allowed", "default-read"),
    ("anyone", (), "select", "", {}, ALLOW, "reads are allowed", "default-read"),
    ("anyone", (), "insert", "public.orders", {}, APPROVAL, "request_approval", "default-write-needs-approval"),
    ("anyone", (), "update", "public.orders", {}, APPROVAL, "request_approval", "default-write-needs-approval"),
    ("anyone", (), "delete", "public.orders", {}, APPROVAL, "request_approval", "default-write-needs-approval"),
    (
        "anyone",
        (),
        "update",
        "public.orders",
        {"approved": True},
        ALLOW,
        "permitted by policy default-write",
        "default-write",
    ),
    ("anyone", (), "ddl", "public.orders", {}, DENY, "schema changes", "default-no-ddl-admin"),
    ("anyone", (), "ddl", "public.orders", {"approved": True}, DENY, "schema changes", "default-no-ddl-admin"),
    ("anyone", (), "admin", "", {}, DENY, "administrative", "default-no-ddl-admin"),
]


def _check(engine: PolicyEngine, agent, groups, action, resource, extra, verdict, reason, policy_id) -> None:
    decision = engine.authorize(request(agent, groups, ((action, resource),), **extra))
    assert decision.verdict is verdict, decision
    assert any(reason in text for text in decision.reasons), decision.reasons
    if policy_id is not None:
        assert policy_id in decision.policy_ids, decision.policy_ids
    assert decision.policy_version == engine.version


@pytest.mark.parametrize(
    ("agent", "groups", "action", "resource", "extra", "verdict", "reason", "policy_id"), EXAMPLES_MATRIX
)
def test_examples_decide_as_their_comments_promise(
    examples, agent, groups, action, resource, extra, verdict, reason, policy_id
):
    _check(examples, agent, groups, action, resource, extra, verdict, reason, policy_id)


@pytest.mark.parametrize(
    ("agent", "groups", "action", "resource", "extra", "verdict", "reason", "policy_id"), DEFAULT_MATRIX
)
def test_default_policy_reads_freely_writes_with_approval_and_never_ddl(
    default, agent, groups, action, resource, extra, verdict, reason, policy_id
):
    _check(default, agent, groups, action, resource, extra, verdict, reason, policy_id)


@pytest.mark.parametrize(
    ("agent", "groups", "column", "entity", "expected"),
    [
        ("analyst", ("analytics",), "sales.customers.email", "EMAIL_ADDRESS", "default"),
        ("analyst", ("analytics",), "sales.customers.card_number", "CREDIT_CARD", "partial"),
        ("helper", ("support",), "sales.customers.email", "EMAIL_ADDRESS", None),
        ("helper", ("support",), "support.tickets.requester_email", "EMAIL_ADDRESS", None),
        ("helper", ("support",), "sales.customers.full_name", "PERSON", "default"),
        ("helper", ("support",), "sales.customers.card_number", "CREDIT_CARD", "partial"),
        ("people", ("hr",), "hr.employees.full_name", "PERSON", None),
        ("people", ("hr",), "hr.employees.national_id", "US_SSN", "redact"),
        ("people", ("hr", "support"), "hr.employees.national_id", "US_SSN", "redact"),
    ],
)
def test_examples_mask_each_pii_column_as_promised(examples, agent, groups, column, entity, expected):
    table = column.rpartition(".")[0]
    decision = examples.authorize(request(agent, groups, (("select", table),), ((column, entity),)))
    assert decision.verdict is ALLOW, decision
    assert decision.masks.get(column) == expected


def test_a_masked_column_does_not_deny_the_call_but_names_its_reason(examples):
    decision = examples.authorize(
        request(
            "analyst",
            ("analytics",),
            (("select", "sales.customers"),),
            (("sales.customers.card_number", "CREDIT_CARD"),),
        )
    )
    assert decision.verdict is ALLOW
    assert decision.masks == {"sales.customers.card_number": "partial"}
    assert "card numbers are always masked; the last 4 digits are shown" in decision.reasons
    assert "cards-always-masked" in decision.policy_ids


def test_any_denied_table_denies_the_whole_statement(examples):
    decision = examples.authorize(
        request(
            "analyst",
            ("analytics",),
            (("select", "sales.orders"), ("select", "hr.employees"), ("select", "sales.products")),
        )
    )
    assert decision.verdict is DENY
    assert decision.policy_ids == ("analytics-no-hr",)
    assert decision.reasons == ("HR data is off limits to analytics agents",)


def test_a_denial_without_reason_names_the_action_the_table_and_the_agent(examples):
    decision = examples.authorize(request("helper", ("support",), (("select", "sales.orders"),)))
    assert decision.reasons == ("no policy permits select on table sales.orders for agent helper",)
    assert decision.policy_ids == ("bastion:default-deny",)


def test_a_database_the_engine_is_not_bound_to_is_refused(examples):
    from server.identity.agent import Agent
    from server.policy.engine import AuthorizationRequest
    from tests.policy.conftest import context

    decision = examples.authorize(AuthorizationRequest(Agent("analyst", ("analytics",)), "other", (), (), context()))
    assert decision.verdict is DENY
    assert "not bound" in decision.reasons[0]


def test_a_write_touching_a_table_policy_denies_outright_is_not_sent_to_approval(default, examples):
    decision = examples.authorize(
        request("oncall", ("oncall",), (("update", "support.tickets"), ("select", "hr.employees")), hour=10)
    )
    assert decision.verdict is DENY


def test_an_unknown_table_still_sits_in_its_schema_so_schema_policies_apply(examples):
    decision = examples.authorize(request("analyst", ("analytics",), (("select", "hr.not_in_catalog"),)))
    assert decision.verdict is DENY
    assert decision.policy_ids == ("analytics-no-hr",)
    decision = examples.authorize(request("analyst", ("analytics",), (("select", "sales.new_table"),)))
    assert decision.verdict is ALLOW


def test_several_unknown_tables_of_an_unknown_schema_are_decided_not_errored(examples):
    decision = examples.authorize(
        request("analyst", ("analytics",), (("select", "crm.a"), ("select", "crm.b")), (("crm.a.email", "EMAIL"),))
    )
    assert decision.verdict is DENY
    assert decision.reasons[0] == "no policy permits select on table crm.a for agent analyst"
