"""The path of one call, in order.

Each stage is a small async function `(runtime, state) -> state` over a frozen `CallState`; the
pipelines below are tuples of stages, declared as data the way sqlglot's optimizer declares its
rules, so a test can run any prefix and a reader sees the whole path here. `run` always ends in
`audit`: a refused or failed call is recorded too, and no result leaves unless its event is
committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from server.approvals import gate as approvals
from server.approvals.model import Approval
from server.audit.build import event_for
from server.db.base import ExecutionLimits, QueryResult
from server.errors import ApprovalRequired, BastionError, PolicyDenied, QueryFailed
from server.identity.agent import Agent, TransportInfo
from server.identity.resolve import require_tool_scopes, resolve_agent
from server.pii.mask import MaskingFailed
from server.pii.plan import MaskedColumn, plan_masks, unmasked_requests
from server.policy.decision import Decision, Verdict
from server.policy.engine import AuthorizationRequest, PolicyContext
from server.policy.requests import statement_actions
from server.policy.resources import ResolvedTable, resolve_tables
from server.policy.testing import estimate_unmasked
from server.runtime import Runtime, UnknownObject
from server.sql.analyzer import analyze as analyze_sql
from server.sql.lineage import OutputColumn, OutputLineage, lineage
from server.sql.row_filters import apply_row_filters
from server.sql.statement import Statement, TableRef
from server.sql.usercode import refuse_user_code

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
    #: the base columns each output column is computed from (None: not traced)
    lineage: OutputLineage | None = None
    #: "schema.table.column" -> entity, for the database called
    pii: Mapping[str, str] = field(default_factory=dict)
    #: per result column: what masking did to it
    masking: tuple[MaskedColumn, ...] = ()
    masked_cells: tuple[int, ...] = ()
    #: what authorize asked the policies (the approve stage asks again with approved = true)
    authorization: AuthorizationRequest | None = None
    #: the approval this call requested, checked or used (server/approvals)
    approval: Approval | None = None
    audit_id: str | None = None
    #: stage name -> milliseconds; filled as stages run (for the benchmark and spans)
    timings: dict[str, float] = field(default_factory=dict, compare=False)


Stage = Callable[[Runtime, CallState], Awaitable[CallState]]


async def identify(runtime: Runtime, state: CallState) -> CallState:
    agent = resolve_agent(runtime.config, state.call.transport)
    return replace(state, agent=agent, database=runtime.database_name(state.call.database))


async def scopes(runtime: Runtime, state: CallState) -> CallState:
    """Per-tool OAuth scopes: a token may let an agent describe but not query."""
    require_tool_scopes(runtime.config, state.agent, state.call.tool)
    return state


async def analyze(runtime: Runtime, state: CallState) -> CallState:
    database = runtime.database(state.database)
    return replace(state, statement=analyze_sql(state.call.sql or "", database.dialect))


def _policy_context(state: CallState, runtime: Runtime, unmasked: tuple[tuple[str, str], ...]) -> PolicyContext:
    assert state.statement is not None and state.database is not None
    return PolicyContext(
        purpose=state.call.purpose or "",
        tool=state.call.tool,
        transport=state.call.transport.transport,
        row_limit=runtime.limits(state.database, max_rows=state.call.max_rows).max_rows,
        statement_kind=state.statement.kind.value,
        pii_entities=tuple(sorted({entity for _, entity in unmasked if entity})),
        hour_utc=datetime.now(UTC).hour,
        approved=False,
    )


async def authorize(runtime: Runtime, state: CallState) -> CallState:
    """Resolve the tables, then ask the policies: one request per (action, table), one
    read_unmasked per PII column that reaches the output."""
    assert state.statement is not None and state.database is not None and state.agent is not None
    catalog = await runtime.database(state.database).catalog()
    settings = runtime.database_config(state.database)
    tables = resolve_tables(state.statement, catalog, allowed_system_relations=settings.allowed_system_relations)
    pii = await runtime.pii_columns(state.database)
    engine = runtime.policy
    engine.bind(state.database, catalog, pii)
    traced = lineage(state.statement, catalog) if _returns_rows(state.statement) else None
    refuse_user_code(state.statement, catalog, traced)
    if traced is not None:
        traced = untraced_carry_all(traced, tables, pii)
    # statements that return no rows (DDL such as CREATE TABLE AS) are asked about every PII column
    # they name: what they copy can be read later
    unmasked = unmasked_requests(traced.columns, pii) if traced else estimate_unmasked(state.statement, tables, pii)
    probed = compared_pii(traced, pii) if traced is not None else {}
    asked = tuple(dict.fromkeys((*unmasked, *probed.items())))
    request = AuthorizationRequest(
        agent=state.agent,
        database=state.database,
        actions=statement_actions(state.statement, tables),
        unmasked=asked,
        context=_policy_context(state, runtime, unmasked),
    )
    decision = engine.authorize(request)
    spelled = sorted(column for column in probed if column in decision.masks)
    if spelled:
        raise PolicyDenied(
            f"this statement compares the masked column {spelled[0]} with values that vary row by row, which "
            "could spell its values out.",
            hint="Compare PII columns with literals only, or ask for access to the unmasked values.",
            policy_ids=decision.policy_ids,
        )
    return replace(state, tables=tables, decision=decision, lineage=traced, pii=pii, authorization=request)


def compared_pii(traced: OutputLineage, pii: Mapping[str, str]) -> dict[str, str]:
    """PII columns compared, in a filter, with something that varies per row and is not itself PII
    (`substr(email, i, 1) = ch`); a join of two PII columns (`a.email = b.email`) is not a probe."""
    found: dict[str, str] = {}
    for sources, varying, other in traced.comparisons:
        if not varying or any(source in pii for source in other):
            continue
        for source in sources:
            if source in pii:
                found[source] = pii[source]
    return found


def untraced_carry_all(
    traced: OutputLineage, tables: tuple[ResolvedTable, ...], pii: Mapping[str, str]
) -> OutputLineage:
    """Fail closed: a value lineage could not follow may carry any PII column of any table the
    statement touches, so it is masked (and asked about) as if it did, not merely scanned."""
    if all(not column.untraced for column in traced.columns) and traced.exact:
        return traced
    everything = pii_of_tables(tables, pii)
    if not everything:
        return traced
    columns = tuple(
        replace(column, sources=column.sources | everything, revealed=column.revealed | everything, revealing=True)
        if column.untraced or not traced.exact
        else column
        for column in traced.columns
    )
    return replace(traced, columns=columns)


def pii_of_tables(tables: tuple[ResolvedTable, ...], pii: Mapping[str, str]) -> frozenset[str]:
    """Every PII column of the tables a statement touches: what an untraced value may carry."""
    prefixes = tuple(f"{table.qualified}." for table in tables)
    return frozenset(key for key in pii if key.startswith(prefixes))


def _returns_rows(statement: Statement) -> bool:
    return statement.is_read or statement.kind.is_write


async def enforce(runtime: Runtime, state: CallState) -> CallState:
    """Turn a decision other than allow into the refusal the agent sees."""
    decision = state.decision
    if decision is None:
        raise PolicyDenied("no decision was made, so nothing runs.")
    reason = " ".join(decision.reasons) or "policy refuses this call."
    if decision.verdict is Verdict.APPROVAL_REQUIRED:
        raise ApprovalRequired(
            reason,
            hint="Call request_approval with this exact statement and a justification, then call query again "
            "with the approval_id once a human approved it.",
            policy_ids=decision.policy_ids,
        )
    if decision.verdict is not Verdict.ALLOW:
        raise PolicyDenied(
            reason,
            hint="Call describe to see what you may do with each table, or explain to check a statement.",
            policy_ids=decision.policy_ids,
        )
    return state


async def rewrite(runtime: Runtime, state: CallState) -> CallState:
    """Apply the decision's row filters and row limit. What runs is what was analyzed: the text
    itself when nothing is rewritten (both parsers agreed on it), else the SQL regenerated from the
    rewritten tree."""
    assert state.statement is not None and state.decision is not None and state.database is not None
    requested = state.call.max_rows
    if state.decision.max_rows is not None:
        requested = min(requested or state.decision.max_rows, state.decision.max_rows)
    statement = state.statement
    named = set(statement.tables)
    direct = {table.qualified for table in state.tables if table.ref in named}
    hidden = sorted(set(state.decision.row_filters) - direct)
    if hidden:
        # a child table read through its parent cannot be filtered by rewriting the parent's reference
        raise PolicyDenied(
            f"table {hidden[0]} is under a row filter and this statement reads it only through its parent.",
            hint=f"Query {hidden[0]} by name, or the parent with ONLY.",
            policy_ids=state.decision.policy_ids,
        )
    if state.decision.row_filters:
        catalog = await runtime.database(state.database).catalog()
        tree = apply_row_filters(statement.ast, state.decision.row_filters, dialect=statement.dialect, catalog=catalog)
        sql = tree.sql(dialect=statement.dialect)
    else:
        # PostgreSQL's own parser read this text exactly as the analysis did (crosscheck), and
        # SQLite runs it under an authorizer: the text the agent wrote runs, so its functions,
        # column names and types are the database's own (sqlglot's rendering renames some)
        sql = statement.sql
    return replace(state, sql_to_run=sql, limits=runtime.limits(state.database, max_rows=requested))


async def execute(runtime: Runtime, state: CallState) -> CallState:
    """Reads in a read-only transaction; writes (which policy allowed) in a read-write one."""
    assert state.sql_to_run is not None and state.limits is not None and state.database is not None
    assert state.statement is not None
    database = runtime.database(state.database)
    if state.statement.is_read:
        result = await database.fetch_read(state.sql_to_run, state.limits)
    else:
        result = await database.execute_write(state.sql_to_run, state.limits)
    return replace(state, result=result)


#: results larger than this many cells are masked off the event loop, so other calls keep flowing
_MASK_INLINE_CELLS = 4_000


async def mask(runtime: Runtime, state: CallState) -> CallState:
    """Mask every value derived from PII the agent may not read unmasked; scan free text and what
    lineage could not trace. Fails closed: no masker, or any fault, and no data leaves."""
    result, decision = state.result, state.decision
    assert result is not None and decision is not None
    if not result.columns:
        return state
    if runtime.masker is None:
        raise MaskingFailed("masking is not available, so no data was returned.")
    if state.lineage is not None:
        traced = state.lineage.aligned(len(result.columns))
    else:
        # nothing traced: every value may carry any PII column of the tables touched
        sources = pii_of_tables(state.tables, state.pii)
        traced = tuple(OutputColumn(c.name, sources, True, True, sources) for c in result.columns)
    plans, described = plan_masks(traced, state.pii, decision, runtime.masker.operators)
    if not any(p is not None and p.active for p in plans):
        return replace(state, masking=tuple(described), masked_cells=(0,) * len(plans))
    if len(result.rows) * len(result.columns) > _MASK_INLINE_CELLS:
        masked = await asyncio.to_thread(runtime.masker.mask, result.columns, result.rows, plans)
    else:
        masked = runtime.masker.mask(result.columns, result.rows, plans)
    return replace(
        state,
        result=replace(result, rows=masked.rows),
        masking=tuple(described),
        masked_cells=tuple(masked.masked_cells),
    )


async def plan(runtime: Runtime, state: CallState) -> CallState:
    """The database's plan, only for a read policy would allow (a plan reveals nothing a read would not)."""
    if state.decision is None or not state.decision.allowed or state.statement is None or not state.statement.is_read:
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


# approvals.approve: a named approval_id turns approval_required into allow (server/approvals/gate.py);
# approvals.consume: spends it, atomically, right before execute
QUERY: tuple[Stage, ...] = (
    identify,
    scopes,
    analyze,
    authorize,
    approvals.approve,
    enforce,
    rewrite,
    approvals.consume,
    execute,
    mask,
)
EXPLAIN: tuple[Stage, ...] = (identify, scopes, analyze, authorize, rewrite, plan)
DESCRIBE: tuple[Stage, ...] = (identify, scopes, lookup)


async def run(runtime: Runtime, call: ToolCall, stages: tuple[Stage, ...]) -> CallState:
    """Run the stages in order, then audit; re-raise a stage's refusal after it is on record."""
    telemetry = runtime.telemetry
    started = time.perf_counter()
    state = CallState(call=call)
    error: BastionError | None = None
    with telemetry.call_span(call) as span:
        try:
            for stage in stages:
                stage_started = time.perf_counter()
                with telemetry.stage_span(stage.__name__):
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
        event = approvals.audit_approval(event_for(state, error, duration_ms=(audit_started - started) * 1000), state)
        with telemetry.stage_span("audit"):
            await runtime.recorder.record(event)
        state.timings["audit"] = (time.perf_counter() - audit_started) * 1000
        telemetry.record_call(span, state, event)
    if error is not None:
        raise error
    return replace(state, audit_id=event.id)
