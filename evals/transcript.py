"""Transcripts: recorded agent tool calls with what each one must lead to (evals/README.md).

A transcript is JSON Lines, one tool call a line, optionally preceded by a header line. Parsing is
strict on purpose: a misspelt expectation key that were silently ignored would turn a security
check into a no-op, so every unknown key is a problem reported with its line number. A bad line
never hides the good ones: `parse_text` returns every call it could read together with every
problem it found, and the replayer runs the former and reports the latter as failures.

This module knows the format and what each expectation means (`check`); it does no I/O beyond
reading the file and knows nothing of MCP.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DECISIONS: tuple[str, ...] = ("allow", "deny", "approval_required", "error")
CALL_KEYS = frozenset({"agent", "context", "tool", "arguments", "expect", "id", "note", "known_gap"})
HEADER_KEYS = frozenset({"fixture", "policies", "database", "config", "agent", "context"})
AGENT_KEYS = frozenset({"id", "groups", "on_behalf_of"})
CONTEXT_KEYS = frozenset({"conversation_id", "user_prompt", "purpose"})
EXPECT_KEYS = frozenset(
    {
        "decision",
        "error_contains",
        "masked_columns",
        "row_count",
        "columns",
        "rows",
        "rows_equal_sql",
        "not_contains",
        "truncated",
    }
)
#: a generated argument (`{"$repeat": ..., "times": N}`) may not exceed this many characters
MAX_GENERATED_CHARS = 16 * 1024 * 1024


class TranscriptError(ValueError):
    """One line is not a valid transcript line; the message says why (without the line number)."""


@dataclass(frozen=True)
class AgentSpec:
    """Who makes the call. Over stdio and in memory the server is built with this identity."""

    id: str = "eval-agent"
    groups: tuple[str, ...] = ()
    on_behalf_of: str | None = None

    @property
    def label(self) -> str:
        return self.id if not self.groups else f"{self.id}[{','.join(self.groups)}]"


@dataclass(frozen=True)
class Context:
    """The prompt context sent with the call: in `_meta`, and `purpose` as the tool argument."""

    conversation_id: str | None = None
    user_prompt: str | None = None
    purpose: str | None = None


@dataclass(frozen=True)
class Expectation:
    """What must hold for the call; `None` (or empty) means "not checked"."""

    decision: tuple[str, ...] | None = None
    error_contains: str | None = None
    masked_columns: tuple[str, ...] | None = None
    row_count: int | None = None
    columns: tuple[str, ...] | None = None
    rows: list[Any] | None = None
    #: SQL run directly on the fixture (as its admin) whose rows must equal the call's; `True`
    #: means the call's own `arguments.sql`
    rows_equal_sql: str | bool | None = None
    not_contains: tuple[str, ...] = ()
    truncated: bool | None = None


@dataclass(frozen=True)
class Call:
    line: int
    id: str
    agent: AgentSpec
    context: Context
    tool: str
    arguments: dict[str, Any]
    expect: Expectation = field(default_factory=Expectation)
    note: str | None = None
    #: a call known to fail today (a real bug on record); reported, but not a failure of the run
    known_gap: bool = False

    @property
    def reference_sql(self) -> str | None:
        value = self.expect.rows_equal_sql
        if value is True:
            sql = self.arguments.get("sql")
            return sql if isinstance(sql, str) else None
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Header:
    #: fixture SQL files, loaded in order into one database
    fixture: tuple[str, ...] | None = None
    policies: str | None = None
    database: str = "main"
    config: dict[str, Any] = field(default_factory=dict)
    agent: AgentSpec = field(default_factory=AgentSpec)
    context: Context = field(default_factory=Context)


@dataclass(frozen=True)
class Problem:
    """A line that could not be used, or a call that could not be made as written."""

    line: int
    message: str
    id: str | None = None


@dataclass(frozen=True)
class Transcript:
    source: str
    header: Header
    calls: tuple[Call, ...]
    problems: tuple[Problem, ...]


# --- parsing --------------------------------------------------------------------------------------


def parse_file(path: str | Path) -> Transcript:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TranscriptError(f"transcript {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TranscriptError(f"cannot read transcript {file}: {error}") from None
    return parse_text(text, source=str(file))


def parse_text(text: str, *, source: str = "<transcript>") -> Transcript:
    """Every call that parses, and a `Problem` (with its line number) for every line that does not."""
    header = Header()
    calls: list[Call] = []
    problems: list[Problem] = []
    seen_ids: dict[str, int] = {}
    first = True
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as error:
            problems.append(Problem(number, f"not valid JSON: {error.msg} at column {error.colno}"))
            first = False
            continue
        try:
            if isinstance(data, dict) and "header" in data:
                if not first:
                    raise TranscriptError("the header must be the first line")
                header = _header(data)
            else:
                call = _call(data, number, header)
                if call.id in seen_ids:
                    raise TranscriptError(f"id {call.id!r} is already used on line {seen_ids[call.id]}")
                seen_ids[call.id] = number
                calls.append(call)
        except TranscriptError as error:
            ident = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
            problems.append(Problem(number, str(error), ident))
        first = False
    return Transcript(source=source, header=header, calls=tuple(calls), problems=tuple(problems))


def _unknown(data: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise TranscriptError(
            f"unknown key{'s' if len(unknown) > 1 else ''} in {where}: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TranscriptError(f"{where} must be a JSON object")
    return value


def _text(value: Any, where: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not optional and not value):
        raise TranscriptError(f"{where} must be a {'non-empty ' if not optional else ''}string")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TranscriptError(f"{where} must be a list of strings")
    return tuple(value)


def _agent(value: Any, default: AgentSpec, where: str = "agent") -> AgentSpec:
    if value is None:
        return default
    if isinstance(value, str):
        return AgentSpec(id=value)
    data = _mapping(value, where)
    _unknown(data, AGENT_KEYS, where)
    return AgentSpec(
        id=_text(data.get("id"), f"{where}.id", optional=False) or default.id,
        groups=_strings(data.get("groups", []), f"{where}.groups"),
        on_behalf_of=_text(data.get("on_behalf_of"), f"{where}.on_behalf_of"),
    )


def _context(value: Any, default: Context, where: str = "context") -> Context:
    if value is None:
        return default
    data = _mapping(value, where)
    _unknown(data, CONTEXT_KEYS, where)
    return Context(
        conversation_id=_text(data.get("conversation_id", default.conversation_id), f"{where}.conversation_id"),
        user_prompt=_text(data.get("user_prompt", default.user_prompt), f"{where}.user_prompt"),
        purpose=_text(data.get("purpose", default.purpose), f"{where}.purpose"),
    )


def _header(data: dict[str, Any]) -> Header:
    _unknown(data, frozenset({"header"}), "the header line")
    body = _mapping(data["header"], "header")
    _unknown(body, HEADER_KEYS, "header")
    return Header(
        fixture=(
            None
            if body.get("fixture") is None
            else (_text(body["fixture"], "header.fixture"),)
            if isinstance(body["fixture"], str)
            else _strings(body["fixture"], "header.fixture")
        ),
        policies=_text(body.get("policies"), "header.policies"),
        database=_text(body.get("database", "main"), "header.database", optional=False) or "main",
        config=_mapping(body.get("config", {}), "header.config"),
        agent=_agent(body.get("agent"), AgentSpec(), "header.agent"),
        context=_context(body.get("context"), Context(), "header.context"),
    )


def _call(data: Any, number: int, header: Header) -> Call:
    call = _mapping(data, "a transcript line")
    _unknown(call, CALL_KEYS, "the call")
    tool = _text(call.get("tool"), "tool", optional=False)
    assert tool is not None
    arguments = expand(_mapping(call.get("arguments", {}), "arguments"), "arguments")
    known_gap = call.get("known_gap", False)
    if not isinstance(known_gap, bool):
        raise TranscriptError("known_gap must be true or false")
    return Call(
        line=number,
        id=_text(call.get("id"), "id") or f"line-{number}",
        agent=_agent(call.get("agent"), header.agent),
        context=_context(call.get("context"), header.context),
        tool=tool,
        arguments=arguments,
        expect=_expectation(call.get("expect")),
        note=_text(call.get("note"), "note"),
        known_gap=known_gap,
    )


def _expectation(value: Any) -> Expectation:
    if value is None:
        return Expectation()
    data = _mapping(value, "expect")
    _unknown(data, EXPECT_KEYS, "expect")
    decision: tuple[str, ...] | None = None
    if "decision" in data:
        raw = data["decision"]
        decision = (raw,) if isinstance(raw, str) else _strings(raw, "expect.decision")
        bad = [item for item in decision if item not in DECISIONS]
        if bad or not decision:
            raise TranscriptError(f"expect.decision must be one of {', '.join(DECISIONS)} (or a list of them)")
    row_count = data.get("row_count")
    if row_count is not None and (not isinstance(row_count, int) or isinstance(row_count, bool) or row_count < 0):
        raise TranscriptError("expect.row_count must be a non-negative integer")
    rows = data.get("rows")
    if rows is not None and (not isinstance(rows, list) or not all(isinstance(row, list) for row in rows)):
        raise TranscriptError("expect.rows must be a list of rows, each a list of values")
    reference = data.get("rows_equal_sql")
    if reference is not None and reference is not True and not (isinstance(reference, str) and reference.strip()):
        raise TranscriptError("expect.rows_equal_sql must be SQL text, or true for the call's own SQL")
    truncated = data.get("truncated")
    if truncated is not None and not isinstance(truncated, bool):
        raise TranscriptError("expect.truncated must be true or false")
    not_contains = data.get("not_contains", [])
    if isinstance(not_contains, str):
        not_contains = [not_contains]
    return Expectation(
        decision=decision,
        error_contains=_text(data.get("error_contains"), "expect.error_contains"),
        masked_columns=_strings(data["masked_columns"], "expect.masked_columns") if "masked_columns" in data else None,
        row_count=row_count,
        columns=_strings(data["columns"], "expect.columns") if "columns" in data else None,
        rows=rows,
        rows_equal_sql=reference,
        not_contains=_strings(not_contains, "expect.not_contains"),
        truncated=truncated,
    )


def expand(value: Any, where: str) -> Any:
    """Arguments with generated parts expanded: `{"$repeat": "(", "times": 5000}` is that text
    repeated, `{"$concat": [part, ...]}` the parts joined. Huge or deeply nested inputs stay one
    readable line of the transcript instead of megabytes of it."""
    if isinstance(value, list):
        return [expand(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if "$repeat" in value:
        _unknown(value, frozenset({"$repeat", "times"}), where)
        text, times = value["$repeat"], value.get("times")
        if not isinstance(text, str) or not isinstance(times, int) or isinstance(times, bool) or times < 0:
            raise TranscriptError(f"{where}: $repeat needs a string and a non-negative integer `times`")
        if len(text) * times > MAX_GENERATED_CHARS:
            raise TranscriptError(f"{where}: $repeat would generate more than {MAX_GENERATED_CHARS:,} characters")
        return text * times
    if "$concat" in value:
        _unknown(value, frozenset({"$concat"}), where)
        parts = value["$concat"]
        if not isinstance(parts, list):
            raise TranscriptError(f"{where}: $concat needs a list")
        expanded = [expand(part, f"{where}.$concat[{i}]") for i, part in enumerate(parts)]
        if not all(isinstance(part, str) for part in expanded):
            raise TranscriptError(f"{where}: every part of $concat must be (or generate) a string")
        return "".join(expanded)
    return {key: expand(item, f"{where}.{key}") for key, item in value.items()}


# --- checking -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What a call led to, as read from the tool result."""

    decision: str
    #: the error text for a tool error, else None
    error: str | None = None
    columns: tuple[str, ...] | None = None
    masked_columns: tuple[str, ...] = ()
    rows: list[Any] | None = None
    row_count: int | None = None
    truncated: bool | None = None
    #: everything the agent received, as one text, for `not_contains`
    everything: str = ""


@dataclass(frozen=True)
class Reference:
    """The rows the fixture database itself returns for `rows_equal_sql`, or why there are none."""

    columns: tuple[str, ...] = ()
    rows: list[Any] = field(default_factory=list)
    error: str | None = None


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_difference(got: Sequence[Any], want: Sequence[Any]) -> str:
    for index, (mine, theirs) in enumerate(zip(got, want, strict=False)):
        if mine != theirs:
            return f"row {index + 1}: got {_short(mine)}, expected {_short(theirs)}"
    return f"got {len(got)} rows, expected {len(want)}"


def check(expect: Expectation, observed: Observed, reference: Reference | None = None) -> list[str]:
    """Each expectation that did not hold, as a short reason; empty when all held."""
    failures: list[str] = []
    if expect.decision is not None and observed.decision not in expect.decision:
        why = f": {observed.error}" if observed.error else ""
        failures.append(f"decision {observed.decision}, expected {' or '.join(expect.decision)}{_clip(why)}")
    if expect.error_contains is not None:
        if observed.error is None:
            failures.append(f"no error, expected one containing {expect.error_contains!r}")
        elif expect.error_contains.lower() not in observed.error.lower():
            failures.append(f"error lacks {expect.error_contains!r}: {_clip(observed.error)}")
    lowered = observed.everything.lower()
    for raw in expect.not_contains:
        if raw.lower() in lowered:
            failures.append(f"the result contains {raw!r}")
    wants_result = (
        expect.masked_columns is not None
        or expect.row_count is not None
        or expect.columns is not None
        or expect.rows is not None
        or expect.rows_equal_sql is not None
        or expect.truncated is not None
    )
    if not wants_result:
        return failures
    if observed.rows is None:
        if not failures:
            failures.append(f"no result to check ({observed.decision}{_clip(': ' + (observed.error or ''))})")
        return failures
    if expect.masked_columns is not None:
        unmasked = [name for name in expect.masked_columns if name not in observed.masked_columns]
        if unmasked:
            failures.append(f"not masked: {', '.join(unmasked)}")
    if expect.row_count is not None and observed.row_count != expect.row_count:
        failures.append(f"row_count {observed.row_count}, expected {expect.row_count}")
    if expect.truncated is not None and observed.truncated is not expect.truncated:
        failures.append(f"truncated {observed.truncated}, expected {expect.truncated}")
    if expect.columns is not None and observed.columns != expect.columns:
        failures.append(f"columns {list(observed.columns or ())}, expected {list(expect.columns)}")
    if expect.rows is not None and observed.rows != expect.rows:
        failures.append("rows differ: " + _first_difference(observed.rows, expect.rows))
    if expect.rows_equal_sql is not None:
        failures.extend(_against_reference(observed, reference))
    return failures


def _against_reference(observed: Observed, reference: Reference | None) -> list[str]:
    if reference is None or reference.error is not None:
        return [f"rows_equal_sql could not run: {reference.error if reference else 'no database to compare with'}"]
    assert observed.rows is not None
    want = reference.rows[: len(observed.rows)] if observed.truncated else reference.rows
    failures = []
    if observed.columns is not None and observed.columns != reference.columns:
        failures.append(f"columns {list(observed.columns)}, the database's {list(reference.columns)}")
    if observed.rows != want:
        failures.append("rows differ from the database's: " + _first_difference(observed.rows, want))
    return failures


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
