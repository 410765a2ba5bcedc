"""One batch of Cedar requests, and what each answer means for Bastion.

All requests of a statement (one per action and table, one `read_unmasked` per PII column) go to
Cedar in a single `is_authorized_batch` call over the warm `PolicySet` and `Entities` handles.

Two details keep this fast and fail-closed:

- Context projection. Cedar parses each request's context; for a handful of attributes that is
  most of the cost of a request. A policy can only observe the context attributes its conditions
  name (the loader lists them per policy; a policy that uses `context` as a whole gets all), and
  Cedar checks the scope before the conditions, so each request carries only the attributes read
  by policies whose action scope can match it. Decisions are identical; requests are cheaper.
- Errors. Cedar skips a policy whose evaluation errors (a missing attribute, an overflow). For a
  permit that is the safe outcome (it grants nothing); for a forbid it would fail open, so an
  errored forbid denies here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from server.policy.loader import PolicyInfo

_ERRORED_POLICY = re.compile(r"policy `([^`]*)`")


@dataclass(frozen=True)
class Item:
    """One request to make: the action, the resource, and what Bastion calls the resource."""

    action: str
    resource_type: str  # "Table" | "Schema" | "Database" | "Column"
    resource_id: str  # the Cedar id, e.g. "main.sales.customers"
    target: str  # as the caller named it: "sales.customers", "sales.customers.email", ""
    pii: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Cedar's answer to one request, as Bastion reads it."""

    action: str
    target: str
    resource_type: str
    allowed: bool
    #: ids of the determining policies: the satisfied permits when allowed, the satisfied forbids
    #: when denied (empty when nothing permitted it)
    policy_ids: tuple[str, ...]
    #: evaluation errors Cedar reported for this request
    errors: tuple[str, ...] = ()
    #: ids of forbids that errored: the request is denied because of them
    errored_forbids: tuple[str, ...] = ()
    #: why an allowed answer was overruled (a row filter that cannot apply)
    note: str | None = None
    pii: str = ""


def context_attributes(policies: Mapping[str, PolicyInfo], actions: Sequence[str], every: Sequence[str]) -> dict:
    """action -> the context attributes the policies that can apply to it read (sorted)."""
    result: dict[str, tuple[str, ...]] = {}
    for action in actions:
        names: set[str] = set()
        for policy in policies.values():
            if policy.actions is not None and action not in policy.actions:
                continue
            names |= set(every) if policy.context_attributes is None else policy.context_attributes
        result[action] = tuple(sorted(names & set(every)))
    return result


def run_batch(
    items: Sequence[Item],
    principal: Mapping[str, str],
    contexts: Mapping[str, str],
    policy_set: cedarpy.PolicySet,
    entities: cedarpy.Entities,
    policies: Mapping[str, PolicyInfo],
    order: Mapping[str, int],
) -> list[Outcome]:
    """Evaluate every item in one Cedar call. `contexts` maps an action to its context as JSON
    text (serialized once per call, not per request); `order` ranks policy ids (file order), so
    the determining policies, and the obligations built from them, are the same on every run.
    Raises ValueError when Cedar refuses the batch itself; the engine turns that into a denial."""
    if not items:
        return []
    actions = {action: {"type": "Action", "id": action} for action in contexts}
    requests: list[dict[str, Any]] = [
        {
            "principal": principal,
            "action": actions[item.action],
            "resource": {"type": item.resource_type, "id": item.resource_id},
            "context": contexts[item.action],
        }
        for item in items
    ]
    answers = cedarpy.is_authorized_batch(requests, policy_set, entities)
    rank = order.get
    outcomes: list[Outcome] = []
    for item, answer in zip(items, answers, strict=True):
        diagnostics = answer.diagnostics
        errors = tuple(diagnostics.errors)
        errored_forbids: tuple[str, ...] = ()
        if errors:
            errored = [m.group(1) if (m := _ERRORED_POLICY.search(e)) else "" for e in errors]
            errored_forbids = tuple(pid for pid in errored if pid not in policies or policies[pid].effect == "forbid")
        reasons = diagnostics.reasons
        deciding = tuple(reasons) if len(reasons) < 2 else tuple(sorted(reasons, key=lambda pid: rank(pid, -1)))
        outcomes.append(
            Outcome(
                item.action,
                item.target,
                item.resource_type,
                answer.allowed and not errored_forbids,
                deciding,
                errors,
                errored_forbids,
                None,
                item.pii,
            )
        )
    return outcomes


def context_json(values: Mapping[str, Any], attributes: Sequence[str]) -> str:
    return json.dumps({name: values[name] for name in attributes}, separators=(",", ":"))
