"""Policy impact: replay recorded calls' decisions under candidate policies, without running them.

A security team reviews a policy pull request against last week's real traffic: every `query` and
`explain` call in the audit trail is analyzed again, authorized under the policies in service and
under the candidate ones, and the calls whose verdict, masks, row filters or row limit would change
are listed. Nothing is executed; the catalog and PII classification are the live ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from server.audit.event import AuditEvent
from server.db.base import Catalog
from server.errors import BastionError
from server.identity.agent import Agent
from server.pii.plan import unmasked_requests
from server.policy.decision import Decision
from server.policy.engine import AuthorizationRequest, NoPolicyEngine, PolicyContext, PolicyEngine
from server.policy.requests import statement_actions
from server.policy.resources import resolve_tables
from server.sql.analyzer import analyze
from server.sql.lineage import lineage

Engine = PolicyEngine | NoPolicyEngine
REPLAYED_TOOLS = frozenset({"query", "explain", "request_approval"})


@dataclass(frozen=True)
class Change:
    event: AuditEvent
    before: str
    after: str
    details: tuple[str, ...]


def _summary(decision: Decision) -> str:
    return decision.verdict.value


def _differences(before: Decision, after: Decision) -> tuple[str, ...]:
    found: list[str] = []
    if before.verdict != after.verdict:
        found.append(f"decision {before.verdict.value} -> {after.verdict.value}")
    if dict(before.masks) != dict(after.masks):
        gone = sorted(set(before.masks) - set(after.masks))
        new = sorted(set(after.masks) - set(before.masks))
        changed = sorted(k for k in set(before.masks) & set(after.masks) if before.masks[k] != after.masks[k])
        if new:
            found.append("newly masked: " + ", ".join(new))
        if gone:
            found.append("no longer masked: " + ", ".join(gone))
        for key in changed:
            found.append(f"mask of {key}: {before.masks[key]} -> {after.masks[key]}")
    if dict(before.row_filters) != dict(after.row_filters):
        found.append(f"row filters {dict(before.row_filters) or '{}'} -> {dict(after.row_filters) or '{}'}")
    if before.max_rows != after.max_rows:
        found.append(f"max_rows {before.max_rows} -> {after.max_rows}")
    return tuple(found)


def request_for(event: AuditEvent, catalog: Catalog, pii: Mapping[str, str]) -> AuthorizationRequest:
    """The authorization request the server made for this recorded call (BastionError when the
    recorded SQL no longer analyzes or names tables that are gone)."""
    sql = str(event.arguments.get("sql") or "")
    statement = analyze(sql, catalog.dialect)
    tables = resolve_tables(statement, catalog)
    traced = lineage(statement, catalog) if statement.is_read or statement.kind.is_write else None
    unmasked = unmasked_requests(traced.columns, pii) if traced else ()
    agent = Agent(id=event.agent_id or "", groups=tuple(event.groups), on_behalf_of=event.on_behalf_of)
    context = PolicyContext(
        purpose=event.purpose or "",
        tool=event.tool,
        transport=event.transport or "stdio",
        row_limit=int(event.arguments.get("max_rows") or 1000),
        statement_kind=statement.kind.value,
        pii_entities=tuple(sorted({entity for _, entity in unmasked if entity})),
        hour_utc=event.time.hour,
    )
    return AuthorizationRequest(
        agent, event.database or catalog.database, statement_actions(statement, tables), unmasked, context
    )


def compare(
    events: Iterable[AuditEvent],
    current: Engine,
    candidate: Engine,
    catalogs: Mapping[str, Catalog],
    pii: Mapping[str, Mapping[str, str]],
) -> tuple[list[Change], int, list[str]]:
    """(changes, calls compared, calls skipped with why)."""
    changes: list[Change] = []
    skipped: list[str] = []
    compared = 0
    for event in events:
        if event.tool not in REPLAYED_TOOLS or not event.arguments.get("sql"):
            continue
        catalog = catalogs.get(event.database or "")
        if catalog is None:
            skipped.append(f"{event.id}: database {event.database!r} is not configured")
            continue
        try:
            request = request_for(event, catalog, pii.get(catalog.database, {}))
        except BastionError as error:
            skipped.append(f"{event.id}: {error.message}")
            continue
        compared += 1
        before, after = current.authorize(request), candidate.authorize(request)
        details = _differences(before, after)
        if details:
            changes.append(Change(event, _summary(before), _summary(after), details))
    return changes, compared, skipped
