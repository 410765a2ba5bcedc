"""Which requests a statement makes: writes on their targets, reads on everything else; and what
`describe` tells an agent about one table."""

from __future__ import annotations

import pytest

from server.policy.decision import Verdict
from server.policy.describe import table_permissions
from server.policy.requests import statement_actions
from server.policy.resources import resolve_tables
from server.sql.analyzer import analyze
from tests.policy.conftest import context


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM sales.orders o JOIN sales.customers c ON c.id = o.customer_id",
         (("select", "sales.orders"), ("select", "sales.customers"))),
        ("INSERT INTO sales.orders (id) SELECT id FROM sales.customers",
         (("insert", "sales.orders"), ("select", "sales.customers"))),
        ("UPDATE sales.orders SET amount = 0 FROM sales.customers c WHERE c.id = customer_id",
         (("update", "sales.orders"), ("select", "sales.customers"))),
        ("DELETE FROM support.tickets WHERE customer_id IN (SELECT id FROM sales.customers)",
         (("delete", "support.tickets"), ("select", "sales.customers"))),
        ("WITH gone AS (DELETE FROM support.tickets RETURNING id) SELECT count(*) FROM gone",
         (("delete", "support.tickets"),)),
        ("MERGE INTO sales.orders o USING sales.customers c ON o.customer_id = c.id "
         "WHEN MATCHED THEN UPDATE SET amount = 0 WHEN NOT MATCHED THEN INSERT (id) VALUES (c.id)",
         (("update", "sales.orders"), ("insert", "sales.orders"), ("select", "sales.customers"))),
        ("MERGE INTO sales.orders o USING sales.customers c ON o.customer_id = c.id WHEN MATCHED THEN DELETE",
         (("delete", "sales.orders"), ("select", "sales.customers"))),
        ("DROP TABLE sales.orders", (("ddl", "sales.orders"),)),
        ("SELECT 1", ()),
    ],
)  # fmt: skip
def test_writes_go_to_their_target_and_every_other_table_is_read(examples_catalog, sql, expected):
    statement = analyze(sql, "postgres")
    tables = resolve_tables(statement, examples_catalog.catalog)
    assert statement_actions(statement, tables) == expected


def test_describe_tells_what_the_agent_may_do_with_a_table_and_each_column(examples, examples_catalog):
    from server.identity.agent import Agent

    info = examples_catalog.catalog.find("customers", "sales")
    columns = {c.name: examples_catalog.pii.get(f"sales.customers.{c.name}", "") for c in info.columns}
    permissions = table_permissions(
        examples, Agent("helper", ("support",)), "main", "sales.customers", columns, context()
    )
    assert permissions.actions["select"].verdict is Verdict.ALLOW
    assert permissions.actions["update"].verdict is Verdict.DENY
    access = {c.column: (c.access, c.operator) for c in permissions.columns}
    assert access == {
        "id": ("read", None),
        "full_name": ("masked", "default"),
        "email": ("read", None),
        "phone": ("masked", "default"),
        "card_number": ("masked", "partial"),
        "region": ("read", None),
        "country": ("read", None),
    }
    blocked = table_permissions(examples, Agent("scraper-bot"), "main", "sales.customers", columns, context())
    assert {c.access for c in blocked.columns} == {"denied"}
