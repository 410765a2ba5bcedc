"""One pass over the whole parsed tree: what it touches, what it calls, and whether it writes.

The root's type is only where classification starts. A SELECT can write through a data-modifying
WITH clause, create a table with INTO, lock rows with FOR UPDATE, or call a function that changes
the server; a table name can be a CTE in one scope and a real table in the next. So every node is
visited, in every clause (FROM, WHERE, casts, subqueries, LATERAL, defaults, ...), with the CTE names
visible at that point, as PostgreSQL resolves them: a WITH clause's names are visible in the query
it is attached to and in later siblings (in every sibling when RECURSIVE), never as the target of
INSERT/UPDATE/DELETE/MERGE or INTO, and never when the name is schema-qualified. A name that is not
provably a CTE is reported as a table: over-reporting can only make policy stricter.

The walk is iterative (an explicit stack), so a long chain of `OR`s or nested parentheses cannot
exhaust Python's recursion limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlglot.expressions as exp

from server.sql.functions import SIDE_EFFECT_CLASSES, denied_reason
from server.sql.statement import ColumnRef, StatementKind, TableRef

Fold = Callable[[exp.Expression | str], str]

_DML_KINDS: tuple[tuple[type[exp.Expression], StatementKind], ...] = (
    (exp.Insert, StatementKind.INSERT),
    (exp.Update, StatementKind.UPDATE),
    (exp.Delete, StatementKind.DELETE),
    (exp.Merge, StatementKind.MERGE),
)
_DML_TYPES = tuple(node_type for node_type, _ in _DML_KINDS)

# statements that have no business inside another statement's tree
_NESTED_STATEMENTS: tuple[type[exp.Expression], ...] = (
    exp.Command,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Comment,
    exp.Grant,
    exp.Revoke,
    exp.Analyze,
    exp.Set,
    exp.Copy,
    exp.Pragma,
    exp.Attach,
    exp.Detach,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
)

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")

# sqlglot's names for calls PostgreSQL spells differently
_SYNTAX_NAMES = {"group_concat": "string_agg", "str_position": "position", "j_s_o_n_array_agg": "json_agg"}

# sqlglot models these syntax forms as functions; they call nothing
_SYNTAX_FUNCS: tuple[type[exp.Expression], ...] = (exp.Cast, exp.TryCast, exp.Case)


@dataclass
class Facts:
    """What the walk found, in order of first appearance."""

    tables: dict[TableRef, None] = field(default_factory=dict)
    columns: dict[ColumnRef, None] = field(default_factory=dict)
    functions: dict[str, None] = field(default_factory=dict)
    #: deny-listed function name -> why it is refused
    denied: dict[str, str] = field(default_factory=dict)
    #: the kinds of writes found below the root (writable CTEs, SELECT INTO)
    writes: dict[StatementKind, str] = field(default_factory=dict)
    #: row-locking clauses (FOR UPDATE / SHARE / ...)
    locks: list[str] = field(default_factory=list)
    #: calls to functions that are not built-in (schema-qualified where written so)
    user_functions: dict[str, None] = field(default_factory=dict)
    #: statements nested where no statement belongs (type names)
    nested_statements: list[str] = field(default_factory=list)
    #: bind parameters and placeholders (`$1`, `?`, `:name`, `@name`)
    placeholders: list[str] = field(default_factory=list)
    #: every name (lower-cased) a call in the tree is known by: as written, as reported, and the
    #: names sqlglot maps to the same node type; the cross-check (`crosscheck.py`) looks up the
    #: calls PostgreSQL's parser sees here
    call_names: set[str] = field(default_factory=set)
    #: constructs neither PostgreSQL nor SQLite has, which sqlglot built anyway (a lambda)
    unsupported: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Call:
    """A function call as the database resolves it."""

    reported: str  # lower-cased, for Statement.functions
    exact: str | None  # the name the database looks up (quoted names keep their case); None: syntax
    schema: str | None  # the qualifying schema, if written
    aliases: tuple[str, ...]  # every name to check against the deny list


def _call(node: exp.Func, sql: str, fold: Fold) -> _Call:
    """For functions sqlglot does not know, the name as written. For those it knows, the name as
    written where the parser kept its position (`now`, not sqlglot's `CURRENT_TIMESTAMP`), and every
    name sqlglot maps to the same class. Calls written as syntax (`EXTRACT(... FROM ...)`,
    `CURRENT_DATE`) have no written name: they are reported under sqlglot's name, and are not user
    code. Operators that sqlglot models as functions (`->>`, `@>`, `@@`, `AND`) are not reported."""
    known = tuple(name.lower() for name in type(node).sql_names())
    if isinstance(node, exp.Anonymous | exp.AnonymousAggFunc):
        exact = fold(node.this) if isinstance(node.this, exp.Identifier | str) else node.name
        return _Call(exact.lower(), exact, _qualifier(node, fold), (exact,))
    start, end = node.meta.get("start"), node.meta.get("end")
    if not (isinstance(start, int) and isinstance(end, int)):
        if isinstance(node, exp.Binary | exp.Predicate | exp.Concat | exp.MatchAgainst):
            return _Call("", None, None, known)
        reported = _SYNTAX_NAMES.get(known[0], known[0]) if known else ""
        return _Call(reported.replace("j_s_o_n", "json").replace("x_m_l", "xml"), None, None, known)
    written = sql[start : end + 1]
    if len(written) > 1 and written[0] == written[-1] == '"':
        exact = written[1:-1]
    elif _PLAIN_NAME.fullmatch(written):
        exact = fold(written)
    else:  # a name the lexer decoded (U&"..."): quoted, so its case matters; fail closed
        exact = written
    return _Call(exact.lower(), exact, _qualifier(node, fold), (exact, *known))


def _qualifier(node: exp.Expression, fold: Fold) -> str | None:
    parent = node.parent
    if isinstance(parent, exp.Dot) and node.arg_key == "expression":
        qualifier = parent.this
        while isinstance(qualifier, exp.Dot):
            qualifier = qualifier.expression
        return fold(qualifier)
    if isinstance(parent, exp.Table) and node.arg_key == "this" and parent.args.get("db"):
        return fold(parent.args["db"])
    return None


def inspect(root: exp.Expression, sql: str, fold: Fold, builtins: frozenset[str] | None = None) -> Facts:
    """Walk every node under `root` (parsed from `sql`) once; `fold` normalizes an identifier as the
    database does. With `builtins`, calls to any other function are listed in `user_functions`."""
    facts = Facts()
    # (node, CTE names visible here, whether a table here is a write target that cannot be a CTE)
    stack: list[tuple[exp.Expression, frozenset[str], bool]] = [(root, frozenset(), False)]
    while stack:
        node, ctes, target = stack.pop()
        children: list[tuple[exp.Expression, frozenset[str], bool]] = []

        if isinstance(node, exp.Table):
            _table(node, ctes, target, fold, facts)
            for key, value in node.args.items():
                if key not in ("this", "db", "catalog", "alias") or (key == "this" and not _named(node)):
                    children.extend((child, ctes, False) for child in _as_list(value))
            _push(stack, children)
            continue
        if isinstance(node, exp.Column):
            name = "*" if isinstance(node.this, exp.Star) else fold(node.this)
            table = node.args.get("table")
            facts.columns[ColumnRef(name, fold(table) if table else None)] = None
            continue
        if isinstance(node, exp.Star) and isinstance(node.parent, exp.Select):
            facts.columns[ColumnRef("*", None)] = None
        elif isinstance(node, exp.Func):
            _function(node, sql, fold, builtins, facts)
        elif isinstance(node, _DML_TYPES) and node is not root and not isinstance(node.parent, exp.When):
            kind = next(kind for node_type, kind in _DML_KINDS if isinstance(node, node_type))
            facts.writes.setdefault(kind, f"a data-modifying {kind.value.upper()} inside the statement")
        elif isinstance(node, exp.Into):
            facts.writes.setdefault(StatementKind.DDL, "SELECT ... INTO creates a table")
        elif isinstance(node, exp.Operator) and builtins is not None:
            # OPERATOR(schema.op): an operator of another schema than pg_catalog is user code
            operator = str(node.args.get("operator") or "")
            schema, dot, _ = operator.rpartition(".")
            if dot and fold(schema) != "pg_catalog":
                facts.user_functions.setdefault(f"OPERATOR({operator})", None)
        elif isinstance(node, exp.Lambda):
            facts.unsupported.append("a lambda expression")
        elif isinstance(node, exp.Parameter | exp.Placeholder):
            facts.placeholders.append(type(node).__name__.lower())
        elif isinstance(node, exp.Lock):
            facts.locks.append(node.sql(dialect="postgres"))
        elif isinstance(node, _NESTED_STATEMENTS) and node is not root:
            facts.nested_statements.append(type(node).__name__.upper())
        elif isinstance(node, exp.Schema) and isinstance(node.parent, exp.Insert) and _named_table(node.this):
            table = fold(node.this.this)
            for identifier in node.expressions:
                if isinstance(identifier, exp.Identifier):
                    facts.columns[ColumnRef(fold(identifier), table)] = None
        elif isinstance(node, exp.Join):
            for identifier in node.args.get("using") or ():
                if isinstance(identifier, exp.Identifier):
                    facts.columns[ColumnRef(fold(identifier), None)] = None

        with_ = node.args.get("with_")
        if isinstance(with_, exp.With):
            names = [fold(cte.args["alias"].this) for cte in with_.expressions if cte.args.get("alias")]
            recursive = bool(with_.args.get("recursive"))
            for i, cte in enumerate(with_.expressions):
                visible = ctes | frozenset(names if recursive else names[:i])
                children.append((cte, visible, False))
            ctes = ctes | frozenset(names)

        # INSERT INTO t, UPDATE t, ..., INTO t: always a real table (also through INSERT's column list)
        writes_into = isinstance(node, (*_DML_TYPES, exp.Into)) or (target and isinstance(node, exp.Schema))
        for key, value in node.args.items():
            if key == "with_":
                continue
            for child in _as_list(value):
                children.append((child, ctes, writes_into and key == "this"))
        _push(stack, children)
    return facts


def _push(stack: list[tuple[exp.Expression, frozenset[str], bool]], children: list) -> None:
    # reversed, so that the stack pops children in source order
    stack.extend(reversed(children))


def _as_list(value: object) -> list[exp.Expression]:
    if isinstance(value, exp.Expr):
        return [value]  # type: ignore[list-item]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, exp.Expr)]  # type: ignore[misc]
    return []


def _named(table: exp.Table) -> bool:
    return isinstance(table.this, exp.Identifier)


def _named_table(node: object) -> bool:
    return isinstance(node, exp.Table) and _named(node)


def _table(node: exp.Table, ctes: frozenset[str], target: bool, fold: Fold, facts: Facts) -> None:
    if not _named(node):
        return  # a function in FROM, ROWS FROM (...), XMLTABLE: its parts are walked as children
    name = fold(node.this)
    db = node.args.get("db")
    schema = fold(db) if db else None
    if schema is None and not target and name in ctes:
        return
    facts.tables[TableRef(name, schema)] = None


def _quantifier(node: exp.Func) -> bool:
    """`x <> ALL (ARRAY[...])`, `x = SOME (...)`: sqlglot parses the quantifier as a call named ALL
    or SOME on the right of a comparison; PostgreSQL's grammar has no such function."""
    return (
        isinstance(node, exp.Anonymous)
        and isinstance(node.this, str)
        and node.this.upper() in ("ALL", "SOME", "ANY")
        and isinstance(node.parent, exp.Binary)
        and node.arg_key == "expression"
    )


def _function(node: exp.Func, sql: str, fold: Fold, builtins: frozenset[str] | None, facts: Facts) -> None:
    if isinstance(node, _SYNTAX_FUNCS) or _quantifier(node):
        return
    call = _call(node, sql, fold)
    if call.reported:
        facts.functions[call.reported] = None
        facts.call_names.add(call.reported)
    facts.call_names.update(alias.lower() for alias in call.aliases)
    for alias in call.aliases:
        reason = denied_reason(alias)
        if reason is not None:
            facts.denied.setdefault(call.reported or alias, reason)
    side_effect = SIDE_EFFECT_CLASSES.get(type(node))
    if side_effect is not None:
        facts.denied.setdefault(call.reported or type(node).__name__.lower(), side_effect)
    if builtins is not None and call.exact:
        qualified = call.schema is not None and call.schema != "pg_catalog"
        if qualified or call.exact not in builtins:
            name = f"{call.schema}.{call.exact}" if call.schema else call.exact
            facts.user_functions.setdefault(name, None)
