"""Annotations become obligations: reasons, row filters, row caps, masks; approval is computed by
asking again with approved = true; a forbid that cannot be evaluated denies."""

from __future__ import annotations

import itertools
import json

import cedarpy
import pytest

from server.db.base import Catalog, ColumnInfo, TableInfo
from server.identity.agent import Agent
from server.policy.decision import Verdict
from server.policy.engine import AuthorizationRequest, PolicyEngine
from server.policy.schema import CONTEXT_ATTRIBUTES
from tests.policy.conftest import context, request

CATALOG = Catalog(
    "main",
    "postgres",
    {
        ("sales", "orders"): TableInfo(
            "sales",
            "orders",
            "table",
            tuple(ColumnInfo(c, t, True) for c, t in (("id", "integer"), ("region", "text"), ("amount", "numeric"))),
        ),
        ("sales", "products"): TableInfo("sales", "products", "table", (ColumnInfo("id", "integer", True),)),
        ("sales", "customers"): TableInfo(
            "sales", "customers", "table", tuple(ColumnInfo(c, "text", True) for c in ("id", "email", "region"))
        ),
    },
)
PII = {"sales.customers.email": "EMAIL_ADDRESS"}


def engine_of(**files: str) -> PolicyEngine:
    engine = PolicyEngine.from_sources({f"{name}.cedar": text for name, text in files.items()})
    engine.bind("main", CATALOG, PII)
    return engine


def select(*tables: str, agent: str = "a", groups: tuple[str, ...] = ("g",), **kwargs) -> AuthorizationRequest:
    return request(agent, groups, tuple(("select", t) for t in tables), **kwargs)


def test_row_filters_of_every_deciding_permit_are_anded_and_max_rows_is_the_smallest():
    engine = engine_of(
        p="""
        @id("region") @row_filter("region = 'EU'") @max_rows("500")
        permit(principal in Group::"g", action == Action::"select", resource in Schema::"main.sales")
        when { resource != Table::"main.sales.products" };
        @id("amount") @row_filter("amount < 100") @max_rows("50")
        permit(principal, action == Action::"select", resource == Table::"main.sales.orders");
        @id("plain")
        permit(principal, action == Action::"select", resource);
        """
    )
    decision = engine.authorize(select("sales.orders", "sales.customers", "sales.products"))
    assert decision.verdict is Verdict.ALLOW
    assert decision.row_filters == {
        "sales.orders": "(region = 'EU') AND (amount < 100)",
        "sales.customers": "region = 'EU'",
    }
    assert decision.max_rows == 50


def test_a_permit_without_a_filter_does_not_lift_another_permits_filter():
    engine = engine_of(
        p="""
        @row_filter("region = 'EU'")
        permit(principal in Group::"eu", action == Action::"select", resource == Table::"main.sales.orders");
        permit(principal, action == Action::"select", resource);
        """
    )
    assert engine.authorize(select("sales.orders", groups=("eu",))).row_filters == {"sales.orders": "region = 'EU'"}
    assert engine.authorize(select("sales.orders", groups=())).row_filters == {}


def test_a_row_filter_that_cannot_apply_to_a_table_refuses_the_read_instead_of_running_it_unfiltered():
    engine = engine_of(
        p="""
        @id("broad") @row_filter("region = 'EU'")
        permit(principal, action == Action::"select", resource in Schema::"main.sales");
        """
    )
    assert engine.problems == ()  # it fits orders and customers
    decision = engine.authorize(select("sales.products"))
    assert decision.verdict is Verdict.DENY
    assert "row filter of policy broad cannot apply" in decision.reasons[0]
    assert "products lacks" in decision.reasons[0]
    assert engine.authorize(select("sales.orders")).row_filters == {"sales.orders": "region = 'EU'"}


def test_the_most_protective_mask_wins_and_no_mask_means_the_configured_operator():
    engine = engine_of(
        p="""
        permit(principal, action == Action::"select", resource);
        @mask("hash") forbid(principal, action == Action::"read_unmasked", resource) when { resource.pii != "" };
        @mask("redact") forbid(principal in Group::"strict", action == Action::"read_unmasked", resource);
        """
    )
    column = (("sales.customers.email", "EMAIL_ADDRESS"),)
    assert engine.authorize(select("sales.customers", unmasked=column)).masks == {"sales.customers.email": "hash"}
    strict = engine.authorize(select("sales.customers", groups=("strict",), unmasked=column))
    assert strict.masks == {"sales.customers.email": "redact"}
    nothing = engine_of(p='permit(principal, action == Action::"select", resource);')
    assert nothing.authorize(select("sales.customers", unmasked=column)).masks == {"sales.customers.email": "default"}


def test_approval_is_required_only_when_approval_would_change_the_answer():
    engine = engine_of(
        p="""
        permit(principal, action in [Action::"select", Action::"update"], resource);
        @id("needs-approval") @reason("ask a human")
        forbid(principal, action == Action::"update", resource) unless { context.approved };
        @id("never-products") forbid(principal, action == Action::"update", resource == Table::"main.sales.products");
        """
    )
    needs = engine.authorize(request("a", (), (("update", "sales.orders"), ("select", "sales.customers"))))
    assert needs.verdict is Verdict.APPROVAL_REQUIRED
    assert needs.reasons == ("ask a human",)
    assert needs.policy_ids == ("needs-approval",)
    never = engine.authorize(request("a", (), (("update", "sales.products"),)))
    assert never.verdict is Verdict.DENY
    approved = engine.authorize(request("a", (), (("update", "sales.orders"),), approved=True))
    assert approved.verdict is Verdict.ALLOW


def test_a_forbid_that_errors_at_evaluation_denies_instead_of_being_skipped():
    engine = engine_of(
        p="""
        permit(principal, action == Action::"select", resource);
        @id("overflowing") forbid(principal, action == Action::"select", resource)
        when { context.row_limit * 9223372036854775807 < 0 };
        """
    )
    decision = engine.authorize(select("sales.orders"))
    assert decision.verdict is Verdict.DENY
    assert decision.policy_ids == ("overflowing",)
    assert "could not be evaluated" in decision.reasons[0]


def test_a_permit_that_errors_grants_nothing():
    engine = engine_of(
        p="""
        permit(principal, action == Action::"select", resource) when { context.row_limit * 9223372036854775807 < 0 };
        """
    )
    assert engine.authorize(select("sales.orders")).verdict is Verdict.DENY


def test_policy_ids_fall_back_to_file_and_line():
    engine = engine_of(rules='\n\n// a comment\npermit(principal, action == Action::"select", resource);\n')
    assert engine.authorize(select("sales.orders")).policy_ids == ("rules.cedar:4",)


def test_no_policy_engine_refuses_everything_with_its_reason():
    engine = PolicyEngine.deny_all("the policy directory is empty")
    decision = engine.authorize(select("sales.orders"))
    assert decision.verdict is Verdict.DENY
    assert decision.policy_ids == ("bastion:no-policy",)
    assert decision.reasons[0].startswith("the policy directory is empty")


def test_sliced_and_projected_evaluation_decides_exactly_like_plain_cedar(examples, examples_catalog):
    """The engine evaluates each request over only the policies that can apply to the caller and
    action, with only the context attributes those policies read. Cedar over the whole set and
    the whole context must agree on every decision, determining policy and error."""
    groups_choices = [(), ("analytics",), ("support", "hr"), ("eu-analysts", "analytics"), ("oncall",)]
    tables = [info.qualified for info in examples_catalog.catalog.tables.values()]
    actions = ["select", "insert", "update", "delete", "ddl", "describe"]
    binding = examples.binding("main")
    for agent_id, groups, approved, hour in itertools.product(
        ("bot", "scraper-bot"), groups_choices, (False, True), (3, 12)
    ):
        agent = Agent(agent_id, groups)
        ctx = context("select", approved=approved, hour=hour)
        values = ctx.values()
        full = json.dumps({name: values[name] for name in CONTEXT_ATTRIBUTES})
        pii = examples_catalog.pii
        columns = [
            (f"{t}.{c.name}", pii.get(f"{t}.{c.name}", ""))
            for t in tables
            for c in examples_catalog.catalog.find(*t.split(".")[::-1]).columns
        ]
        req = AuthorizationRequest(agent, "main", tuple((a, t) for a in actions for t in tables), tuple(columns), ctx)
        explanation = examples.explain(req)
        entities = binding.entities.for_caller(agent)
        plain = cedarpy.is_authorized_batch(
            [
                {
                    "principal": {"type": "Agent", "id": agent_id},
                    "action": {"type": "Action", "id": o.action},
                    "resource": {"type": o.resource_type, "id": f"main.{o.target}"},
                    "context": full,
                }
                for o in explanation.outcomes
            ],
            examples.bundle.policy_set,
            entities,
        )
        for outcome, answer in zip(explanation.outcomes, plain, strict=True):
            assert outcome.allowed == answer.allowed, (agent, outcome)
            assert sorted(outcome.policy_ids) == sorted(answer.diagnostics.reasons), (agent, outcome)
            assert outcome.errors == tuple(answer.diagnostics.errors)


@pytest.mark.parametrize("annotation", ['@row_filter("x = 1")', '@max_rows("5")'])
def test_select_obligations_on_a_forbid_are_refused(annotation):
    from server.policy.errors import PolicyError

    with pytest.raises(PolicyError, match="belongs on a permit of select"):
        PolicyEngine.from_sources({"p.cedar": f"{annotation}\nforbid(principal, action, resource);"})


def test_a_column_whose_classification_changed_since_binding_is_masked_until_rebound():
    engine = engine_of(
        p="""
        permit(principal, action == Action::"select", resource);
        permit(principal, action == Action::"read_unmasked", resource) when { resource.pii == "" };
        """
    )
    stale = (("sales.customers.region", "LOCATION"),)  # bound as no PII, now classified
    decision = engine.authorize(select("sales.customers", unmasked=stale))
    assert decision.masks == {"sales.customers.region": "default"}
    assert "classification changed" in " ".join(decision.reasons)
    engine.bind("main", CATALOG, {**PII, "sales.customers.region": "LOCATION"})
    assert engine.authorize(select("sales.customers", unmasked=stale)).masks == {"sales.customers.region": "default"}
    assert "classification changed" not in " ".join(engine.authorize(select("sales.customers", unmasked=stale)).reasons)
