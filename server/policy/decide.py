"""From Cedar's answers to one `Decision`: the verdict, its reasons and its obligations.

- Any denied (action, table) request denies the call. A call denied with `approved = false` that
  would be allowed with `approved = true` needs approval instead; its reasons and ids are those of
  the denial, so the agent reads what a human has to agree to.
- A denied `read_unmasked` does not deny the call: the column is masked, with the operator of the
  determining forbid's `@mask` (the most protective when several decide), else "default" (the
  operator configured for the column's PII entity).
- `@max_rows`: the smallest over the permits of `select` that decided.
- `@row_filter`: for each table, the AND of the filters of every permit of `select` that decided.
  A filter restricts whoever it applies to; another permit without one does not lift it.
- Reasons come from `@reason` of the determining policies; a policy without one, or a request no
  policy decided, gets a default sentence naming the action and the resource.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from server.identity.agent import Agent
from server.policy.annotations import strongest_mask
from server.policy.decision import Decision, Verdict
from server.policy.evaluate import Outcome
from server.policy.loader import PolicyInfo

DEFAULT_DENY_ID = "bastion:default-deny"


def describe_target(outcome: Outcome, database: str) -> str:
    kind = {"Table": "table", "Schema": "schema", "Column": "column", "Database": "database"}[outcome.resource_type]
    return f"{kind} {outcome.target or database}"


def denial_reasons(
    outcome: Outcome, policies: Mapping[str, PolicyInfo], agent: Agent, database: str, *, approval: bool = False
) -> list[str]:
    what = describe_target(outcome, database)
    if outcome.note:
        return [outcome.note]
    if outcome.errored_forbids:
        ids = ", ".join(outcome.errored_forbids)
        return [f"{outcome.action} on {what} is refused: policy {ids} could not be evaluated"]
    reasons = [_reason(pid, policies) for pid in outcome.policy_ids]
    reasons = [r for r in reasons if r]
    if reasons:
        return reasons
    if outcome.policy_ids:
        return [f"{outcome.action} on {what} is forbidden by policy {', '.join(outcome.policy_ids)}"]
    if approval:
        return [f"{outcome.action} on {what} needs a human's approval"]
    return [f"no policy permits {outcome.action} on {what} for agent {agent.id}"]


def _reason(policy_id: str, policies: Mapping[str, PolicyInfo]) -> str | None:
    policy = policies.get(policy_id)
    return policy.obligations.reason if policy else None


def denial_ids(outcomes: Iterable[Outcome]) -> tuple[str, ...]:
    ids: list[str] = []
    for outcome in outcomes:
        ids.extend(outcome.errored_forbids or outcome.policy_ids or (DEFAULT_DENY_ID,))
    return tuple(dict.fromkeys(ids))


def refuse(
    verdict: Verdict,
    denied: Sequence[Outcome],
    policies: Mapping[str, PolicyInfo],
    agent: Agent,
    database: str,
    version: str,
    masks: Mapping[str, str] | None = None,
) -> Decision:
    reasons: list[str] = []
    for outcome in denied:
        reasons.extend(
            denial_reasons(outcome, policies, agent, database, approval=verdict is Verdict.APPROVAL_REQUIRED)
        )
    return Decision(
        verdict=verdict,
        reasons=tuple(dict.fromkeys(reasons)),
        policy_ids=denial_ids(denied),
        policy_version=version,
        masks=dict(masks or {}),
    )


def masks_of(unmasked: Sequence[Outcome], policies: Mapping[str, PolicyInfo]) -> dict[str, str]:
    masks: dict[str, str] = {}
    for outcome in unmasked:
        if outcome.allowed:
            continue
        deciding = [policies[pid] for pid in outcome.policy_ids if pid in policies]
        masks[outcome.target] = strongest_mask([p.obligations.mask for p in deciding if p.obligations.mask])
    return masks


def allow(
    actions: Sequence[Outcome],
    unmasked: Sequence[Outcome],
    policies: Mapping[str, PolicyInfo],
    agent: Agent,
    database: str,
    version: str,
) -> Decision:
    reasons: list[str] = []
    ids: list[str] = []
    max_rows: int | None = None
    filters: dict[str, list[str]] = {}
    for outcome in actions:
        ids.extend(outcome.policy_ids)
        deciding = [policies[pid] for pid in outcome.policy_ids if pid in policies]
        texts = [p.obligations.reason for p in deciding if p.obligations.reason]
        what = describe_target(outcome, database)
        reasons.extend(texts or [f"{outcome.action} on {what} is permitted by policy {', '.join(outcome.policy_ids)}"])
        if outcome.action != "select":
            continue
        for policy in deciding:
            limit = policy.obligations.max_rows
            if limit is not None:
                max_rows = limit if max_rows is None else min(max_rows, limit)
            predicate = policy.obligations.row_filter
            if predicate is not None and outcome.resource_type == "Table":
                filters.setdefault(outcome.target, [])
                if predicate not in filters[outcome.target]:
                    filters[outcome.target].append(predicate)
    masks = masks_of(unmasked, policies)
    for outcome in unmasked:
        ids.extend(outcome.policy_ids)
        if outcome.allowed:
            continue
        deciding = [policies[pid] for pid in outcome.policy_ids if pid in policies]
        texts = [p.obligations.reason for p in deciding if p.obligations.reason]
        pii = f" ({outcome.pii})" if outcome.pii else ""
        reasons.extend([outcome.note] if outcome.note else texts or [f"column {outcome.target}{pii} is masked"])
    return Decision(
        verdict=Verdict.ALLOW,
        reasons=tuple(dict.fromkeys(reasons)),
        policy_ids=tuple(dict.fromkeys(ids)),
        policy_version=version,
        max_rows=max_rows,
        row_filters={table: _conjunction(predicates) for table, predicates in filters.items()},
        masks=masks,
    )


def _conjunction(predicates: Sequence[str]) -> str:
    if len(predicates) == 1:
        return predicates[0]
    return " AND ".join(f"({p})" for p in predicates)
