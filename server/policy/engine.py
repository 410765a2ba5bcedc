"""The policy engine: Cedar policies in, one `Decision` per statement out.

`PolicyEngine.load(directory)` parses and validates the policy files once (`loader.py`);
`bind(database, catalog, pii)` builds that database's entities once (`binding.py`);
`authorize(request)` then evaluates every request of a statement in one batch over those warm
handles (`evaluate.py`) and turns the answers into a verdict with obligations (`decide.py`).

An engine is immutable once bound, apart from its bindings and caches, so hot reload swaps a whole
new engine in (`reload.py`); `NoPolicyEngine` stands in when no valid policy exists and refuses
every call: a server never runs without policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from server.db.base import Catalog
from server.identity.agent import Agent
from server.policy import decide
from server.policy.binding import Binding
from server.policy.decision import Decision, Verdict
from server.policy.errors import PolicyError, PolicyProblem
from server.policy.evaluate import Item, Outcome, context_attributes, context_json, run_batch
from server.policy.loader import PolicyBundle, PolicyInfo, load_directory, load_sources
from server.policy.schema import ACTIONS, CONTEXT_ATTRIBUTES, static_schema
from server.policy.slices import PolicySlices

_KIND_ACTIONS = {"select": "select", "insert": "insert", "update": "update", "delete": "delete", "ddl": "ddl"}


@dataclass(frozen=True)
class PolicyContext:
    """The Cedar context of every request of one statement (DESIGN: Policy model)."""

    purpose: str
    tool: str
    transport: str
    row_limit: int
    statement_kind: str
    pii_entities: tuple[str, ...]
    hour_utc: int
    approved: bool = False

    def values(self, *, approved: bool | None = None) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "approved": self.approved if approved is None else approved,
            "tool": self.tool,
            "transport": self.transport,
            "row_limit": int(self.row_limit),
            "statement_kind": self.statement_kind,
            "pii_entities": sorted(set(self.pii_entities)),
            "hour_utc": int(self.hour_utc),
        }


@dataclass(frozen=True)
class AuthorizationRequest:
    agent: Agent
    #: the configured database name, e.g. "main"
    database: str
    #: (action, "schema.table") per table touched; "schema" or "" name a schema or the database
    #: (ddl, admin, describe, and statements that touch no table). Empty: the statement kind's
    #: action on the database.
    actions: tuple[tuple[str, str], ...]
    #: ("schema.table.column", pii entity) per PII column reaching the output
    unmasked: tuple[tuple[str, str], ...]
    context: PolicyContext


@dataclass(frozen=True)
class Explanation:
    """A decision with the per-request answers behind it (for `explain`, `describe`, the CLI)."""

    decision: Decision
    outcomes: tuple[Outcome, ...] = ()
    #: the same action requests with approved = true, when the first evaluation denied
    approved_outcomes: tuple[Outcome, ...] = ()
    policies: Mapping[str, PolicyInfo] = field(default_factory=dict)


class PolicyEngine:
    """Loaded, validated policies plus, per database, the catalog they are bound to."""

    def __init__(self, bundle: PolicyBundle) -> None:
        self.bundle = bundle
        self.version: str = bundle.version
        self.policies: Mapping[str, PolicyInfo] = bundle.policies
        self._bindings: dict[str, Binding] = {}
        self._inputs: dict[str, tuple[Catalog, dict[str, str], dict[str, tuple[str, ...]]]] = {}
        self._slices = PolicySlices(bundle)
        self._order = {pid: index for index, pid in enumerate(self.policies)}
        self._attributes = context_attributes(self.policies, ACTIONS, CONTEXT_ATTRIBUTES)
        self._reads_approved = any(
            p.context_attributes is None or "approved" in p.context_attributes for p in self.policies.values()
        )

    @classmethod
    def load(cls, directory: Path) -> PolicyEngine:
        """Parse and validate every `*.cedar` file of `directory`; PolicyError lists each problem."""
        return cls(load_directory(Path(directory)))

    @classmethod
    def from_sources(cls, sources: Mapping[str, str]) -> PolicyEngine:
        """From file name -> policy text (tests, `bastion eval diff`)."""
        return cls(load_sources(sources))

    @staticmethod
    def deny_all(reason: str) -> NoPolicyEngine:
        return NoPolicyEngine(reason)

    # -- binding -------------------------------------------------------------------------------

    def bind(
        self,
        database: str,
        catalog: Catalog,
        pii: Mapping[str, str] = {},
        tags: Mapping[str, Iterable[str]] = {},
    ) -> tuple[PolicyProblem, ...]:
        """Build (or keep) `database`'s entities from `catalog` and the PII classification
        ("schema.table.column" -> entity), and check the policies against it. Cheap when nothing
        changed. Returns the problems found (unknown entities, row filters that do not fit);
        they are also in `problems`, and a row filter that does not fit a table refuses reads of
        that table."""
        current = self._bindings.get(database)
        if current is not None and current.entities.same_inputs(catalog, pii, tags):
            return current.problems
        binding = Binding(database, catalog, pii, tags, static_schema(), self.policies)
        self._bindings[database] = binding
        self._inputs[database] = (catalog, dict(pii), {k: tuple(v) for k, v in tags.items()})
        return binding.problems

    def adopt_bindings(self, other: PolicyEngine | NoPolicyEngine) -> tuple[PolicyProblem, ...]:
        """Bind to every catalog `other` is bound to (hot reload: the new engine serves the same
        databases at once)."""
        problems: list[PolicyProblem] = []
        for database, (catalog, pii, tags) in list(getattr(other, "_inputs", {}).items()):
            problems.extend(self.bind(database, catalog, pii, tags))
        return tuple(problems)

    @property
    def problems(self) -> tuple[PolicyProblem, ...]:
        return tuple(p for binding in self._bindings.values() for p in binding.problems)

    def binding(self, database: str) -> Binding | None:
        return self._bindings.get(database)

    # -- decisions -----------------------------------------------------------------------------

    def authorize(self, request: AuthorizationRequest) -> Decision:
        """The decision for one statement: allow (with obligations), deny or approval_required."""
        return self.explain(request).decision

    def explain(self, request: AuthorizationRequest) -> Explanation:
        """The decision with the answer to every request behind it (`bastion policy explain`, the
        explain and describe tools)."""
        binding = self._bindings.get(request.database)
        if binding is None:
            return self._refusal(f"database {request.database} is not bound to the policies", "bastion:unbound")
        action_items, unmasked_items, extra = self._items(request, binding)
        values = request.context.values()
        try:  # Cedar refusing the caller's entities or the batch: fail closed
            entities = binding.entities.for_caller(request.agent, extra)
            outcomes = self._evaluate(action_items + unmasked_items, request.agent, values, entities, binding)
        except ValueError:
            return self._refusal("the policies could not be evaluated for this request", "bastion:evaluation-error")
        actions = outcomes[: len(action_items)]
        unmasked = [self._check_classification(o, binding) for o in outcomes[len(action_items) :]]
        outcomes = actions + unmasked
        args = (self.policies, request.agent, request.database, self.version)
        denied = [o for o in actions if not o.allowed]
        if not denied:
            decision = decide.allow(actions, unmasked, *args)
            return Explanation(decision, tuple(outcomes), (), self.policies)
        masks = decide.masks_of(unmasked, self.policies)
        approved: list[Outcome] = []
        if not request.context.approved and self._reads_approved:
            try:
                approved = self._evaluate(
                    action_items, request.agent, request.context.values(approved=True), entities, binding
                )
            except ValueError:
                approved = []
            if approved and all(o.allowed for o in approved):
                decision = decide.refuse(Verdict.APPROVAL_REQUIRED, denied, *args, masks=masks)
                return Explanation(decision, tuple(outcomes), tuple(approved), self.policies)
        decision = decide.refuse(Verdict.DENY, denied, *args, masks=masks)
        return Explanation(decision, tuple(outcomes), tuple(approved), self.policies)

    def _evaluate(
        self,
        items: list[Item],
        agent: Agent,
        values: Mapping[str, Any],
        entities: Any,
        binding: Binding,
    ) -> list[Outcome]:
        """One Cedar batch per action (each over only the policies that can apply to this agent
        and action, `slices.py`), answers in the order of `items`."""
        groups: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item.action, []).append(index)
        principal = {"type": "Agent", "id": agent.id}
        by_attributes: dict[tuple[str, ...], str] = {}
        outcomes: list[Outcome | None] = [None] * len(items)
        for action, indexes in groups.items():
            batch = [items[i] for i in indexes]
            ids = self._slices.ids_for(agent, action)
            if not ids:  # nothing can permit (or forbid) it: Cedar's default deny
                answers = [Outcome(i.action, i.target, i.resource_type, False, (), pii=i.pii) for i in batch]
            else:
                attributes = self._attributes.get(action, CONTEXT_ATTRIBUTES)
                if attributes not in by_attributes:
                    by_attributes[attributes] = context_json(values, attributes)
                policy_set = self._slices.policy_set(ids)
                contexts = {action: by_attributes[attributes]}
                answers = run_batch(batch, principal, contexts, policy_set, entities, self.policies, self._order)
            for index, outcome in zip(indexes, answers, strict=True):
                outcomes[index] = self._check_filters(outcome, binding)
        return [outcome for outcome in outcomes if outcome is not None]

    def _check_filters(self, outcome: Outcome, binding: Binding) -> Outcome:
        """An allowed select whose row filter cannot apply to the table is refused, not run."""
        if not outcome.allowed or outcome.action != "select" or outcome.resource_type != "Table":
            return outcome
        for pid in outcome.policy_ids:
            policy = self.policies.get(pid)
            if policy is None or policy.obligations.row_filter is None:
                continue
            failure = binding.filter_failure(pid, outcome.target)
            if failure is not None:
                note = (
                    f"select on table {outcome.target} is refused: the row filter of policy {pid} "
                    f"cannot apply ({failure})"
                )
                return replace(outcome, allowed=False, note=note, policy_ids=(pid,))
        return outcome

    def _check_classification(self, outcome: Outcome, binding: Binding) -> Outcome:
        """A column the caller calls PII (`outcome.pii`) that the bound entities classify
        differently was decided on stale attributes: it is masked until `bind` sees the new
        classification."""
        if not outcome.allowed or outcome.target not in binding.entities.column_ids:
            return outcome
        bound = binding.entities.pii.get(outcome.target, "")
        if outcome.pii == bound:
            return outcome
        note = f"column {outcome.target} is masked: its PII classification changed since the policies were bound"
        return replace(outcome, allowed=False, note=note, policy_ids=())

    def _items(
        self, request: AuthorizationRequest, binding: Binding
    ) -> tuple[list[Item], list[Item], tuple[dict[str, Any], ...]]:
        database = request.database
        entities = binding.entities
        extra: list[dict[str, Any]] = []
        pairs = request.actions or ((_KIND_ACTIONS.get(request.context.statement_kind, "admin"), ""),)
        action_items: list[Item] = []
        for action, target in pairs:
            if target == "":
                action_items.append(Item(action, "Database", database, ""))
                continue
            kind = "Table" if "." in target else "Schema"
            resource_id = f"{database}.{target}"
            extra.extend(entities.missing(kind, resource_id))
            action_items.append(Item(action, kind, resource_id, target))
        unmasked_items: list[Item] = []
        for column, pii in request.unmasked:
            resource_id = f"{database}.{column}"
            extra.extend(entities.missing("Column", resource_id, pii))
            unmasked_items.append(Item("read_unmasked", "Column", resource_id, column, pii))
        unique = {(e["uid"]["type"], e["uid"]["id"]): e for e in extra}  # one entity per uid
        return action_items, unmasked_items, tuple(unique.values())

    def _refusal(self, reason: str, policy_id: str) -> Explanation:
        decision = Decision(Verdict.DENY, reasons=(reason,), policy_ids=(policy_id,), policy_version=self.version)
        return Explanation(decision, policies=self.policies)


class NoPolicyEngine:
    """What serves when no valid policy exists: every call is refused, saying why. It remembers
    the catalogs it was bound to, so the first valid policy serves them at once (hot reload)."""

    version = "none"
    policies: Mapping[str, PolicyInfo] = {}
    problems: tuple[PolicyProblem, ...] = ()

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._inputs: dict[str, tuple[Catalog, dict[str, str], dict[str, tuple[str, ...]]]] = {}

    @classmethod
    def from_error(cls, error: PolicyError) -> NoPolicyEngine:
        return cls(f"no valid policy is loaded ({error.message})")

    def bind(
        self,
        database: str,
        catalog: Catalog,
        pii: Mapping[str, str] = {},
        tags: Mapping[str, Iterable[str]] = {},
    ) -> tuple[PolicyProblem, ...]:
        self._inputs[database] = (catalog, dict(pii), {k: tuple(v) for k, v in tags.items()})
        return ()

    def adopt_bindings(self, other: PolicyEngine | NoPolicyEngine) -> tuple[PolicyProblem, ...]:
        self._inputs.update(list(getattr(other, "_inputs", {}).items()))
        return ()

    def authorize(self, request: AuthorizationRequest) -> Decision:
        return self.explain(request).decision

    def explain(self, request: AuthorizationRequest) -> Explanation:
        decision = Decision(
            Verdict.DENY,
            reasons=(f"{self.reason}: every call is refused until valid policies are in place",),
            policy_ids=("bastion:no-policy",),
            policy_version=self.version,
        )
        return Explanation(decision)
