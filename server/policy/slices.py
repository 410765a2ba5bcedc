"""Only the policies that can apply: per caller and action, a smaller Cedar policy set.

Cedar evaluates every policy of a set for every request (about a microsecond each), so a request
pays for policies that cannot possibly match it. Two parts of a policy's scope are decidable
before any request is made: its action (`action == Action::"select"`) and its principal
(`principal in Group::"analytics"`, `principal == Agent::"scraper-bot"`). For an agent, whose
entity's only ancestors are its groups (Bastion builds it that way), a policy whose principal or
action scope cannot match is never satisfied and never errors (Cedar checks the scope before the
conditions), so leaving it out changes no decision, determining policy or error. Subsets are
parsed once into `PolicySet` handles and shared by every caller with the same subset.

Any scope form not understood here is kept (over-including is always correct).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import cedarpy

from server.identity.agent import Agent
from server.policy.entities import AgentKey, agent_key
from server.policy.loader import PolicyBundle

_CACHE_SIZE = 4096


def principal_may_match(scope: Mapping[str, Any], agent: Agent) -> bool:
    op = scope.get("op")
    if op == "==":
        entity = scope.get("entity") or {}
        return entity.get("type") == "Agent" and entity.get("id") == agent.id
    if op == "in":
        return _within(scope.get("entity") or {}, agent)
    if op == "is":
        if scope.get("entity_type") != "Agent":
            return False
        inside = scope.get("in")
        return inside is None or _within(inside.get("entity") or {}, agent)
    return True  # "All", or a form this module does not know


def _within(entity: Mapping[str, Any], agent: Agent) -> bool:
    if entity.get("type") == "Agent":
        return entity.get("id") == agent.id
    if entity.get("type") == "Group":
        return entity.get("id") in agent.groups
    return entity.get("type") not in ("User", "Database", "Schema", "Table", "Column")


class PolicySlices:
    def __init__(self, bundle: PolicyBundle) -> None:
        self._bundle = bundle
        self._all = frozenset(bundle.policies)
        self._sets: dict[frozenset[str], cedarpy.PolicySet] = {self._all: bundle.policy_set}
        self._chosen: OrderedDict[tuple[AgentKey, str], frozenset[str]] = OrderedDict()

    def ids_for(self, agent: Agent, action: str) -> frozenset[str]:
        key = (agent_key(agent), action)
        ids = self._chosen.get(key)
        if ids is None:
            ids = frozenset(
                pid
                for pid, policy in self._bundle.policies.items()
                if (policy.actions is None or action in policy.actions)
                and principal_may_match(policy.principal_scope, agent)
            )
            self._chosen[key] = ids
            if len(self._chosen) > _CACHE_SIZE:
                self._chosen.popitem(last=False)
        else:
            self._chosen.move_to_end(key)
        return ids

    def policy_set(self, ids: frozenset[str]) -> cedarpy.PolicySet:
        handle = self._sets.get(ids)
        if handle is None:
            documents = self._bundle.documents
            document = {"staticPolicies": {pid: documents[pid] for pid in ids}, "templates": {}, "templateLinks": []}
            handle = cedarpy.PolicySet.from_json_str(json.dumps(document))
            if len(self._sets) > _CACHE_SIZE:  # many distinct group combinations: start over
                self._sets = {self._all: self._bundle.policy_set}
            self._sets[ids] = handle
        return handle
