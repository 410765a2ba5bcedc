"""What PostgreSQL's own parser sees in a statement: the second opinion for `crosscheck.py`.

`pglast` wraps libpg_query, which is the server's real scanner and grammar (gram.y, scan.l)
compiled as a library, so it reads quotes, escapes, dollar quotes, nested comments and operators
exactly as the server does. This module runs it twice on the text (the scanner, for token
boundaries; the parser, for the tree as JSON, which is several times faster to build than pglast's
Python node objects) and reduces the tree to the facts the analyzer also derives from sqlglot's
tree: statements, kind, function calls, relations, column names, the number of output columns.

Names in PostgreSQL's tree are already as the server resolves them: unquoted identifiers folded
to lower case, quoted ones kept, `U&"..."` decoded, all truncated to 63 bytes. A function's name is
what the server looks up, so `"LOWER"(x)` is the user-defined `LOWER`, not `lower`.

Version gap: pglast 8 carries the grammar of PostgreSQL 18, the server may be older (15). Syntax
added since 15 that PostgreSQL 15 reads as a plain function call (`JSON_VALUE(...)`,
`JSON_ARRAY(...)`, `MERGE_ACTION()`, ...) is reported here as the call PostgreSQL 15 would make,
so the built-in-only rule applies to it; numeric literals whose meaning changed in 16
(`0x1F`, `1_000`, which PostgreSQL 15 reads as `0 AS x1F`, `1 AS _000`) are flagged. Syntax 18
rejects but 15 accepted is refused (it does not parse).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from pglast import parser as pg

from server.sql.statement import StatementKind, TableRef

__all__ = ["ParseError", "PgCall", "PgTokens", "PgView", "read", "tokens"]

_DML_KINDS = {
    "InsertStmt": StatementKind.INSERT,
    "UpdateStmt": StatementKind.UPDATE,
    "DeleteStmt": StatementKind.DELETE,
    "MergeStmt": StatementKind.MERGE,
}
# syntax of PostgreSQL 16-18 that an older server reads as a call of a function with this name
_NEWER_SYNTAX_CALLS = {
    "JsonParseExpr": "json",
    "JsonScalarExpr": "json_scalar",
    "JsonSerializeExpr": "json_serialize",
    "JsonObjectConstructor": "json_object",
    "JsonArrayConstructor": "json_array",
    "JsonArrayQueryConstructor": "json_array",
    "JsonObjectAgg": "json_objectagg",
    "JsonArrayAgg": "json_arrayagg",
    "JsonTable": "json_table",
    "MergeSupportFunc": "merge_action",
}
_JSON_FUNC_OPS = {"JSON_EXISTS_OP": "json_exists", "JSON_QUERY_OP": "json_query", "JSON_VALUE_OP": "json_value"}
_LITERAL_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST", "UIDENT"})
_COMMENT_TOKENS = frozenset({"C_COMMENT", "SQL_COMMENT"})
# fields typed SelectStmt (not Node), whose JSON is not wrapped: the branches of UNION/INTERSECT/EXCEPT
_SELECT_FIELDS = frozenset({"larg", "rarg"})
# nodes with no calls, relations or columns below them
_LEAVES = frozenset({"String", "A_Const", "A_Star", "Integer", "Float", "Boolean", "BitString", "ParamRef"})
#: what pglast raises for text the server's scanner or grammar rejects
ParseError = pg.ParseError


@dataclass(frozen=True)
class PgCall:
    """A function call in PostgreSQL's tree."""

    name: str  # as the server looks it up (folded; quoted names keep their case)
    schema: str | None
    #: False when the grammar made the call out of syntax (`TRIM(BOTH FROM x)` -> pg_catalog.btrim,
    #: `a LIKE b ESCAPE c` -> pg_catalog.like_escape): such a name was never written by the user
    written: bool = True


@dataclass
class PgView:
    """The facts of PostgreSQL's parse of one SQL text."""

    statements: int = 0
    root: str = ""  # node type of the statement, e.g. "SelectStmt"
    into: bool = False  # SELECT ... INTO somewhere
    locks: bool = False  # FOR UPDATE/SHARE somewhere
    #: data-modifying statements anywhere in the tree, the root included
    dml: set[StatementKind] = field(default_factory=set)
    calls: list[PgCall] = field(default_factory=list)
    #: schema-qualified operators outside pg_catalog (user code)
    operators: list[str] = field(default_factory=list)
    #: every operator symbol used (`||`, `->>`, `@>`): checked against the database's user operators
    operator_symbols: set[str] = field(default_factory=set)
    relations: set[TableRef] = field(default_factory=set)
    columns: set[str] = field(default_factory=set)
    #: the column names each output column of a top-level SELECT references (of its first branch,
    #: for a set operation; "*" for a star); None for anything else
    outputs: list[frozenset[str]] | None = None
    #: the TransactionStmt's kind, for BEGIN/COMMIT/ROLLBACK
    transaction: str | None = None


@dataclass(frozen=True)
class PgTokens:
    """Where PostgreSQL's scanner puts literals and code (character offsets, ends inclusive)."""

    literals: tuple[tuple[int, int], ...]
    code: tuple[tuple[int, int], ...]
    #: numeric literals that PostgreSQL 15 reads differently from 16+ (`0x1F`, `1_000`)
    ambiguous_numbers: tuple[str, ...]


def tokens(sql: str) -> PgTokens:
    """PostgreSQL's tokens of `sql`, comments dropped; raises pglast's ParseError if it cannot
    scan. `N'x'` and `U&"x" UESCAPE '!'` are one literal each, as sqlglot's tokens have them."""
    scanned = pg.scan(sql)
    literals: list[tuple[int, int]] = []
    code: list[tuple[int, int]] = []
    numbers: list[str] = []
    i, n = 0, len(scanned)
    while i < n:
        token = scanned[i]
        name = token.name
        if name in _COMMENT_TOKENS:
            i += 1
            continue
        if name == "NCHAR" and i + 1 < n and scanned[i + 1].name == "SCONST" and scanned[i + 1].start == token.end + 1:
            literals.append((token.start, scanned[i + 1].end))
            i += 2
            continue
        if name == "UIDENT" and i + 2 < n and scanned[i + 1].name == "UESCAPE" and scanned[i + 2].name == "SCONST":
            literals.append((token.start, scanned[i + 2].end))
            i += 3
            continue
        if name in _LITERAL_TOKENS or (name == "IDENT" and sql[token.start] == '"'):
            literals.append((token.start, token.end))
        else:
            if name in ("ICONST", "FCONST"):
                text = sql[token.start : token.end + 1]
                if "_" in text or text[:2].lower() in ("0x", "0o", "0b"):
                    numbers.append(text)
            code.append((token.start, token.end))
        i += 1
    return PgTokens(tuple(literals), tuple(code), tuple(numbers))


def read(sql: str) -> PgView:
    """PostgreSQL's view of `sql`; raises pglast's ParseError if the server's grammar rejects it."""
    tree = json.loads(pg.parse_sql_json(sql))
    statements = tree.get("stmts") or []
    view = PgView(statements=len(statements))
    if len(statements) != 1:
        return view
    root = statements[0]["stmt"]
    view.root = next(iter(root))
    body = root[view.root]
    if view.root == "TransactionStmt":
        view.transaction = body.get("kind")
    if view.root == "SelectStmt":
        view.outputs = _outputs(body)
    _Walker(view, sql.encode("utf-8")).walk(root)
    return view


def _outputs(select: dict) -> list[frozenset[str]] | None:
    """Per output column of a top-level SELECT (its first branch for set operations), the names
    of the columns it references, subqueries included."""
    while select.get("op", "SETOP_NONE") != "SETOP_NONE":
        select = select.get("larg") or {}
    if select.get("valuesLists"):
        return None
    return [_column_names(target) for target in select.get("targetList") or ()]


def _column_names(node: object) -> frozenset[str]:
    names: set[str] = set()
    stack = [node]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            ref = value.get("ColumnRef")
            if isinstance(ref, dict):
                fields = ref.get("fields") or ()
                last = fields[-1] if fields else {}
                names.add(last["String"]["sval"] if "String" in last else "*")
            else:
                stack.extend(v for v in value.values() if isinstance(v, dict | list))
    return frozenset(names)


def _wrapped(value: dict) -> bool:
    """Whether `value` is a node wrapped in its type's name, `{"SelectStmt": {...}}`."""
    if len(value) != 1:
        return False
    key = next(iter(value))
    return key[:1].isupper()


def _names(items: list | None) -> list[str]:
    return [item["String"]["sval"] for item in items or () if "String" in item]


class _Walker:
    """One iterative pass over the JSON tree, tracking which CTE names are visible where.

    A wrapped node (`{"RangeVar": {...}}`) sits in a field of generic node type; a bare RangeVar
    dict (`"relation": {"relname": ...}`) sits in a field typed RangeVar, which in PostgreSQL is
    always a real relation: the target of INSERT/UPDATE/DELETE/MERGE, `INTO`, or a DDL object.
    Only FROM items (wrapped RangeVars) are looked up among the CTEs, as the server does."""

    def __init__(self, view: PgView, raw: bytes) -> None:
        self.view = view
        self.raw = raw

    def walk(self, root: dict) -> None:
        stack: list[tuple[dict, frozenset[str]]] = [(root, frozenset())]
        pop, push = stack.pop, stack.append
        while stack:
            value, ctes = pop()
            if "relname" in value:
                self._relation(value, ctes, from_item=False)
                continue
            skip = ""
            if len(value) == 1:
                ((key, body),) = value.items()
                if type(body) is dict and key[:1].isupper():
                    if key in _LEAVES:
                        continue
                    inner = self._node(key, body, ctes)
                    if inner is None:
                        continue
                    value, ctes = body, inner
                    if "withClause" in body:
                        ctes, skip = self._with(body["withClause"], ctes, push), "withClause"
            for key, child in value.items():
                kind = type(child)
                if kind is dict:
                    if key in _SELECT_FIELDS and not _wrapped(child):
                        child = {"SelectStmt": child}  # a set operation's branches are typed fields
                    if key != skip:
                        push((child, ctes))
                elif kind is list:
                    for item in child:
                        if type(item) is dict:
                            push((item, ctes))
                        elif type(item) is list:
                            push(({"items": item}, ctes))

    def _node(self, kind: str, body: dict, ctes: frozenset[str]) -> frozenset[str] | None:
        """Record what this node says; return the CTE names its children see (None: skip them)."""
        view = self.view
        if kind == "RangeVar":
            self._relation(body, ctes, from_item=True)
            return None
        if kind == "ColumnRef":
            fields = body.get("fields") or ()
            last = fields[-1] if fields else {}
            view.columns.add(last["String"]["sval"] if "String" in last else "*")
            return None
        if kind == "FuncCall":
            self._call(body)
        elif kind in _DML_KINDS:
            view.dml.add(_DML_KINDS[kind])
        elif kind == "SelectStmt":
            view.into = view.into or bool(body.get("intoClause"))
            view.locks = view.locks or bool(body.get("lockingClause"))
        elif kind == "A_Expr":
            operator = _names(body.get("name"))
            if operator:
                view.operator_symbols.add(operator[-1])
            if len(operator) > 1 and operator[-2] != "pg_catalog":
                view.operators.append(".".join(operator))
        elif kind == "RangeTableSample":  # the sampling method is a handler function
            method = _names(body.get("method"))
            if method:
                view.calls.append(PgCall(method[-1], method[-2] if len(method) > 1 else None, written=False))
        elif kind == "JsonFuncExpr":
            view.calls.append(PgCall(_JSON_FUNC_OPS.get(body.get("op", ""), "json_query"), None, written=False))
        elif kind in _NEWER_SYNTAX_CALLS:
            view.calls.append(PgCall(_NEWER_SYNTAX_CALLS[kind], None, written=False))
        return ctes

    def _with(
        self, with_: dict, ctes: frozenset[str], push: Callable[[tuple[dict, frozenset[str]]], None]
    ) -> frozenset[str]:
        """A WITH clause's names are visible in its query, and in its CTEs: the earlier siblings,
        or all of them when RECURSIVE (as the server resolves them)."""
        items = [cte.get("CommonTableExpr", {}) for cte in with_.get("ctes") or ()]
        names = [item.get("ctename", "") for item in items]
        recursive = bool(with_.get("recursive"))
        for i, item in enumerate(items):
            visible = ctes | frozenset(names if recursive else names[:i])
            push((item, visible))
        return ctes | frozenset(names)

    def _relation(self, body: dict, ctes: frozenset[str], *, from_item: bool) -> None:
        schema = body.get("schemaname") or None
        name = body.get("relname", "")
        if from_item and schema is None and name in ctes:
            return
        self.view.relations.add(TableRef(name, schema))

    def _call(self, body: dict) -> None:
        parts = _names(body.get("funcname"))
        if not parts:
            return
        name, schema = parts[-1], (parts[-2] if len(parts) > 1 else None)
        written = True
        if schema == "pg_catalog":
            if body.get("funcformat") == "COERCE_SQL_SYNTAX":
                written = False
            else:  # the grammar qualifies the calls it makes: `LIKE ... ESCAPE` -> like_escape
                location = body.get("location", -1)
                if isinstance(location, int) and location >= 0:
                    text = self.raw[location : location + 64].lower()
                    written = text.startswith((name.lower().encode(), b"pg_catalog", b'"', b"u&"))
        self.view.calls.append(PgCall(name, schema, written))
