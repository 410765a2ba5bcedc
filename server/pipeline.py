"""The path of one call, in order.

Each stage is a small async function `(runtime, state) -> state` over a frozen `CallState`; the
pipelines below are tuples of stages, declared as data the way sqlglot's optimizer declares its
rules, so a test can run any prefix and a reader sees the whole path here. `run` always ends in
`audit`: a refused or failed call is recorded too, and no result leaves unless its event is
committed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from server.audit.build import event_for
from server.db.base import ExecutionLimits, QueryResult
from server.errors import BastionError, PolicyDenied, QueryFailed
from server.identity.agent import Agent, TransportInfo
from server.identity.resolve import resolve_agent
from server.policy.decision import Decision, Verdict
from server.policy.interim import decide_read_only
from server.policy.resources import ResolvedTable, resolve_tables
from server.runtime import Runtime, UnknownObject
from server.sql.analyzer import analyze as analyze_sql
from server.sql.statement import Statement, TableRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolCall:
    """What arrived: the tool, its arguments as sent, and what the transport knows."""

    tool: str
    arguments: Mapping[str, Any]
    transport: TransportInfo
    database: str | None = None
    sql: str | None = None
    purpose: str | None = None
    max_rows: int | None = None


@dataclass(frozen=True)
class CallState:
    call: ToolCall
    agent: Agent | None = None
    database: str | None = None
    statement: Statement | None = None
    tables: tuple[ResolvedTable, ...] = ()
    decision: Decision | None = None
    sql_to_run: str | None = None
    limits: ExecutionLimits | None = None
    result: QueryResult | None = None
    plan: tuple[str, ...] = ()
    audit_id: str | None = None
    #: stage name -> milliseconds; filled as stages run (for the benchmark and spans)
    timings: dict[str, float] = field(default_factory=dict, compare=False)


Stage = Callable[[Runtime, CallState], Awaitable[CallState]]


async def identify(runtime: Runtime, state: CallState) -> CallState:
    agent = resolve_agent(runtime.config, state.call.transport)
    return replace(state, agent=agent, database=runtime.database_name(state.call.database))


async def analyze(runtime: Runtime, state: CallState) -> CallState:
    database = runtime.database(state.database)
    return replace(state, statement=analyze_sql(state.call.sql or "", database.dialect))


async def authorize(runtime: Runtime, state: CallState) -> CallState:
    assert state.statement is not None and state.database is not None
    catalog = await runtime.database(state.database).catalog()
    settings = runtime.database_config(state.database)
    tables = resolve_tables(state.statement, catalog, allowed_system_relations=settings.allowed_system_relations)
    decision = decide_read_only(state.statement, tables)
    return replace(state, tables=tables, decision=decision)


async def enforce(runtime: Runtime, state: CallState) -> CallState:
    """Turn a decision other than allow into the refusal the agent sees."""
    decision = state.decision
    if decision is None:
        raise PolicyDenied("no decision was made, so nothing runs.")
    if decision.verdict is not Verdict.ALLOW:
        reason = " ".join(decision.reasons) or "policy refuses this call."
        raise PolicyDenied(
            reason,
            hint="Only reads of the tables describe lists are allowed.",
            policy_ids=decision.policy_ids,
        )
    return state


@functools.lru_cache(maxsize=1024)
def regenerated_sql(sql: str, dialect: str) -> str:
    """The analyzed tree rendered back to SQL, cached like the analysis itself (same key)."""
    return analyze_sql(sql, dialect).ast.sql(dialect=dialect)


async def rewrite(runtime: Runtime, state: CallState) -> CallState:
    """What runs is what was analyzed: the SQL regenerated from the AST, never the raw text, so a
    parser difference between sqlglot and the database cannot smuggle in what analysis missed."""
    assert state.statement is not None and state.decision is not None and state.database is not None
    requested = state.call.max_rows
    if state.decision.max_rows is not None:
        requested = min(requested or state.decision.max_rows, state.decision.max_rows)
    sql = regenerated_sql(state.statement.sql, state.statement.dialect)
    return replace(state, sql_to_run=sql, limits=runtime.limits(state.database, max_rows=requested))


async def execute(runtime: Runtime, state: CallState) -> CallState:
    assert state.sql_to_run is not None and state.limits is not None and state.database is not None
    result = await runtime.database(state.database).fetch_read(state.sql_to_run, state.limits)
    return replace(state, result=result)


async def plan(runtime: Runtime, state: CallState) -> CallState:
    """The database's plan, only for a statement policy would allow."""
    if state.decision is None or not state.decision.allowed:
        return state
    assert state.sql_to_run is not None and state.limits is not None and state.database is not None
    lines = await runtime.database(state.database).explain(state.sql_to_run, state.limits)
    return replace(state, plan=tuple(lines))


async def lookup(runtime: Runtime, state: CallState) -> CallState:
    """For describe: the table asked about, resolved like a query would resolve it."""
    assert state.database is not None
    table = state.call.arguments.get("table")
    if not table:
        return state
    catalog = await runtime.database(state.database).catalog()
    schema, _, name = str(table).rpartition(".")
    info = catalog.find(name, schema or None)
    if info is None:
        raise UnknownObject(
            f"table {table} does not exist in database {state.database}.",
            hint="Call describe without a table to list the tables.",
        )
    return replace(state, tables=(ResolvedTable(TableRef(info.name, info.schema), info),))


QUERY: tuple[Stage, ...] = (identify, analyze, authorize, enforce, rewrite, execute)
EXPLAIN: tuple[Stage, ...] = (identify, analyze, authorize, rewrite, plan)
DESCRIBE: tuple[Stage, ...] = (identify, lookup)


async def run(runtime: Runtime, call: ToolCall, stages: tuple[Stage, ...]) -> CallState:
    """Run the stages in order, then audit; re-raise a stage's refusal after it is on record."""
    started = time.perf_counter()
    state = CallState(call=call)
    error: BastionError | None = None
    try:
        for stage in stages:
            stage_started = time.perf_counter()
            state = await stage(runtime, state)
            state.timings[stage.__name__] = (time.perf_counter() - stage_started) * 1000
    except BastionError as refusal:
        error = refusal
    except Exception:
        # Fail closed: an unexpected fault is a failed call, described without its internals.
        log.exception("unexpected error in the %s pipeline", call.tool)
        error = QueryFailed(
            "Bastion hit an internal error and returned no data.",
            hint="Try again; if it persists, tell the operator (the server log has the details).",
        )
    audit_started = time.perf_counter()
    event = event_for(state, error, duration_ms=(audit_started - started) * 1000)
    await runtime.recorder.record(event)
    state.timings["audit"] = (time.perf_counter() - audit_started) * 1000
    if error is not None:
        raise error
    return replace(state, audit_id=event.id)
