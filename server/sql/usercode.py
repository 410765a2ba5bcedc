"""Refuse statements whose meaning depends on code users wrote into the database.

The analyzer allows only built-in functions in reads, by name; the database resolves names by
argument types and search_path, so a user-defined overload of a built-in name (`round(float8,
int)`), a user-defined operator (`||` over integers) or PostgreSQL's functional notation
(`c.customer_tier` read as `customer_tier(c)` when the table has no such column) would run code
Bastion never saw, code that can read tables the policy never asked about. These checks need the
catalog snapshot, so they run with authorization, not in the analyzer.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from server.db.base import Catalog
from server.errors import SQLRejected
from server.sql.lineage import OutputLineage
from server.sql.pg_builtins import BUILTIN_FUNCTIONS
from server.sql.statement import Statement

_HINT = "Call the built-in with explicit casts in pg_catalog (e.g. pg_catalog.round), or ask an operator."


#: object-identifier types: a cast to one looks names up in the system catalogs (`g::regclass`
#: enumerates relations, `'x'::regrole` roles), which `describe` is the governed way to learn
_CATALOG_TYPES = frozenset(
    {
        "regclass",
        "regproc",
        "regprocedure",
        "regoper",
        "regoperator",
        "regtype",
        "regrole",
        "regnamespace",
        "regconfig",
        "regdictionary",
        "regcollation",
    }
)


def refuse_user_code(statement: Statement, catalog: Catalog, traced: OutputLineage | None) -> None:
    if statement.dialect != "postgres":
        return
    for node in statement.ast.find_all(exp.DataType):
        name = node.sql(dialect="postgres").lower()
        if name in _CATALOG_TYPES:
            raise SQLRejected(
                f"casts to {name} look names up in the system catalogs, which Bastion does not expose.",
                hint="Call describe to learn the schema.",
            )
    overloaded = sorted(set(statement.functions) & catalog.user_functions & BUILTIN_FUNCTIONS)
    if overloaded:
        raise SQLRejected(
            f"function {overloaded[0]} has a user-defined overload in database {catalog.database}, so the call "
            "may run code Bastion cannot see.",
            hint=_HINT,
        )
    operators = sorted(set(statement.operators) & catalog.user_operators)
    if operators:
        raise SQLRejected(
            f"operator {operators[0]} is defined by user code in database {catalog.database}, so it may run code "
            "Bastion cannot see.",
            hint="Rewrite the expression without that operator.",
        )
    if traced is not None and traced.phantoms:
        phantom = sorted(traced.phantoms)[0]
        alias, _, name = phantom.partition(".")
        raise SQLRejected(
            f"column {phantom} does not exist, and PostgreSQL would read it as the function call {name}({alias}).",
            hint="Call describe to see the table's columns.",
        )
