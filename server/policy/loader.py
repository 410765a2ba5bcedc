"""Read a policy directory into one parsed, validated Cedar policy set, or say everything wrong.

The `*.cedar` files directly in the directory are the policies (sub-directories such as
`examples/` and `tests/` are not: a directory is one policy set). Each file is tokenized and split
into single policies (`source.py`) and each policy is parsed and validated against the static
schema on its own, so every problem of every file is reported with its file, line and column.

The policies that load are renamed to their Bastion ids (`@id`, else "file.cedar:line") and built
into ONE `cedarpy.PolicySet` handle through Cedar's JSON policy format, so that Cedar's own
diagnostics name the determining policies by those ids: no positional `policy0` to map back on
the request path. The version is a hash of the file names and contents.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cedarpy

from server.policy.annotations import Obligations, read_obligations
from server.policy.errors import PolicyError, PolicyProblem
from server.policy.schema import static_schema
from server.policy.source import PolicySource, Token, locate, missing_semicolon, split_policies, tokenize
from server.sql.row_filters import RowFilterError, parse_predicate

_FOR_POLICY = re.compile(r"^for policy `[^`]*`, ")
_NO_ACTION = "unable to find an applicable action given the policy scope constraints"
_DIALECTS = ("postgres", "sqlite")


@dataclass(frozen=True)
class EntityLiteral:
    """An entity a policy names, e.g. Table::"main.sales.customers", and where."""

    type: str
    id: str
    line: int
    column: int


@dataclass(frozen=True)
class PolicyInfo:
    id: str
    file: str
    line: int
    column: int
    effect: str  # "permit" | "forbid"
    #: the actions its scope can match; None: any action
    actions: frozenset[str] | None
    obligations: Obligations
    #: the context attributes its conditions read; None: the whole context record
    context_attributes: frozenset[str] | None
    literals: tuple[EntityLiteral, ...]
    text: str
    #: the principal and resource scopes in Cedar's JSON form, e.g. {"op": "in", "entity": {...}}
    principal_scope: Mapping[str, Any]
    resource_scope: Mapping[str, Any]
    #: annotation name -> (line, column) of its `@`
    annotation_locations: Mapping[str, tuple[int, int]]

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class PolicyBundle:
    directory: Path
    files: tuple[str, ...]
    version: str
    policies: Mapping[str, PolicyInfo]  # by id, in file order
    policy_set: cedarpy.PolicySet
    #: each policy in Cedar's JSON form, by id (to build subsets of the set)
    documents: Mapping[str, Mapping[str, Any]]


def policy_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.glob("*.cedar") if path.is_file())


def policy_version(sources: Mapping[str, str]) -> str:
    """A short hash of the sorted file names and contents: what an audit event records."""
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return digest.hexdigest()[:16]


def read_sources(directory: Path) -> dict[str, str]:
    if not directory.is_dir():
        raise PolicyError([PolicyProblem(str(directory), 0, 0, "the policy directory does not exist")])
    sources: dict[str, str] = {}
    problems: list[PolicyProblem] = []
    for path in policy_files(directory):
        try:
            sources[path.name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            problems.append(PolicyProblem(path.name, 0, 0, "the file is not UTF-8 text"))
        except OSError as error:
            problems.append(PolicyProblem(path.name, 0, 0, f"cannot read the file: {error.strerror}"))
    if problems:
        raise PolicyError(problems)
    if not sources:
        raise PolicyError([PolicyProblem(str(directory), 0, 0, "no .cedar policy files in the directory")])
    return sources


def load_directory(directory: Path) -> PolicyBundle:
    return load_sources(read_sources(directory), directory=directory)


def load_sources(sources: Mapping[str, str], *, directory: Path = Path(".")) -> PolicyBundle:
    """Parse, validate and build the policy set from file name -> text, or raise PolicyError
    listing every problem."""
    schema = static_schema()
    problems: list[PolicyProblem] = []
    loaded: list[tuple[PolicyInfo, dict[str, Any]]] = []
    for name in sorted(sources):
        for result in _load_file(name, sources[name], schema):
            if isinstance(result, PolicyProblem):
                problems.append(result)
            else:
                loaded.append(result)
    seen: dict[str, PolicyInfo] = {}
    for info, _ in loaded:
        if info.id in seen:
            first = seen[info.id]
            problems.append(
                PolicyProblem(
                    info.file, info.line, info.column, f"policy id {info.id!r} is also used at {first.location}"
                )
            )
        seen.setdefault(info.id, info)
    if problems:
        raise PolicyError(sorted(problems))
    document = {"staticPolicies": {info.id: est for info, est in loaded}, "templates": {}, "templateLinks": []}
    try:
        policy_set = cedarpy.PolicySet.from_json_str(json.dumps(document))
    except ValueError as error:  # not expected after per-policy checks; still never start on it
        raise PolicyError([PolicyProblem(str(directory), 0, 0, f"Cedar refused the policy set: {error}")]) from None
    return PolicyBundle(
        directory=directory,
        files=tuple(sorted(sources)),
        version=policy_version(sources),
        policies={info.id: info for info, _ in loaded},
        policy_set=policy_set,
        documents={info.id: est for info, est in loaded},
    )


def _load_file(
    name: str, text: str, schema: cedarpy.Schema
) -> Iterator[PolicyProblem | tuple[PolicyInfo, dict[str, Any]]]:
    tokens, lex_problems = tokenize(text)
    for problem in lex_problems:
        yield PolicyProblem(name, problem.line, problem.column, problem.message)
    bad_offsets = {t.offset for t in tokens if t.kind == "invalid"}
    for policy in split_policies(text, tokens):
        if any(t.offset in bad_offsets for t in policy.tokens):
            continue  # already reported by the lexer
        yield from _load_policy(name, policy, schema)


def _load_policy(
    name: str, policy: PolicySource, schema: cedarpy.Schema
) -> Iterator[PolicyProblem | tuple[PolicyInfo, dict[str, Any]]]:
    def at(token: Token | None) -> tuple[int, int]:
        return (token.line, token.column) if token else (policy.line, policy.column)

    error = _parse_error(policy.text)
    if error is not None:
        run_on = missing_semicolon(policy)
        if run_on is not None:
            yield PolicyProblem(name, run_on.line, run_on.column, "expected `;` before this policy")
            return
        line, column = locate(policy, error, _parse_error)
        yield PolicyProblem(name, line, column, error)
        return
    document = json.loads(cedarpy.policies_to_json_str(policy.text))
    if document.get("templates"):
        yield PolicyProblem(name, policy.line, policy.column, "templates (?principal, ?resource) are not supported")
        return
    (est,) = document["staticPolicies"].values()
    found = False
    for message in _validation_errors(policy.text, schema):
        found = True
        line, column = locate(policy, message, _parse_error)
        yield PolicyProblem(name, line, column, message)
    actions = _scope_actions(est.get("action", {}))
    obligations, annotation_problems = read_obligations(est.get("annotations") or {}, est["effect"], actions)
    for problem in annotation_problems:
        found = True
        line, column = at(_annotation_token(policy, problem.annotation))
        yield PolicyProblem(name, line, column, problem.message)
    if obligations.row_filter is not None:
        syntax = _row_filter_syntax(obligations.row_filter)
        if syntax is not None:
            found = True
            line, column = at(_annotation_token(policy, "row_filter"))
            yield PolicyProblem(name, line, column, syntax)
    if found:
        return
    info = PolicyInfo(
        id=obligations.id or f"{name}:{policy.line}",
        file=name,
        line=policy.line,
        column=policy.column,
        effect=est["effect"],
        actions=actions,
        obligations=obligations,
        context_attributes=_context_attributes(est.get("conditions", [])),
        literals=tuple(_literals(policy, est)),
        text=policy.text,
        principal_scope=est.get("principal", {"op": "All"}),
        resource_scope=est.get("resource", {"op": "All"}),
        annotation_locations={name: at(_annotation_token(policy, name)) for name in (est.get("annotations") or {})},
    )
    yield info, est


@lru_cache(maxsize=4096)
def _parse_error(text: str) -> str | None:
    """Cedar's message for a policy text that does not parse, else None (cached: the location
    search parses many prefixes of one policy)."""
    try:
        cedarpy.PolicySet.from_str(text)
    except ValueError as error:
        return str(error)
    return None


def _validation_errors(text: str, schema: cedarpy.Schema) -> list[str]:
    result = cedarpy.validate_policies(text, schema)
    messages = [_FOR_POLICY.sub("", error.error) for error in result.errors]
    if len(messages) > 1:  # the scope error only repeats what an unknown type or action said
        messages = [m for m in messages if m != _NO_ACTION] or messages
    return list(dict.fromkeys(messages))


def _row_filter_syntax(predicate: str) -> str | None:
    errors = []
    for dialect in _DIALECTS:
        try:
            parse_predicate(predicate, dialect)
            return None
        except RowFilterError as error:
            errors.append(str(error))
    return errors[0]


def _scope_actions(scope: Mapping[str, Any]) -> frozenset[str] | None:
    op = scope.get("op")
    if op == "==":
        return frozenset({scope["entity"]["id"]})
    if op == "in":
        entities = scope.get("entities") or [scope["entity"]]
        return frozenset(entity["id"] for entity in entities)
    return None


def _context_attributes(conditions: list[Any]) -> frozenset[str] | None:
    """The context attributes the conditions read, or None if they use `context` as a whole."""
    names: set[str] = set()
    whole = False

    def visit(node: Any) -> None:
        nonlocal whole
        if isinstance(node, dict):
            for key in (".", "has"):
                access = node.get(key)
                if isinstance(access, dict) and access.get("left") == {"Var": "context"}:
                    names.add(access["attr"])
                    return
            if node.get("Var") == "context":
                whole = True
                return
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(conditions)
    return None if whole else frozenset(names)


def _literals(policy: PolicySource, est: Mapping[str, Any]) -> Iterator[EntityLiteral]:
    found: list[tuple[str, str]] = []

    def visit(node: Any, in_scope: bool) -> None:
        if isinstance(node, dict):
            if "__entity" in node:
                found.append((node["__entity"]["type"], node["__entity"]["id"]))
                return
            if in_scope and set(node) == {"type", "id"}:
                found.append((node["type"], node["id"]))
                return
            for value in node.values():
                visit(value, in_scope)
        elif isinstance(node, list):
            for value in node:
                visit(value, in_scope)

    for key in ("principal", "resource"):
        visit(est.get(key, {}), True)
    visit(est.get("conditions", []), False)
    for entity_type, entity_id in dict.fromkeys(found):
        token = _literal_token(policy, entity_type, entity_id)
        line, column = (token.line, token.column) if token else (policy.line, policy.column)
        yield EntityLiteral(entity_type, entity_id, line, column)


def _literal_token(policy: PolicySource, entity_type: str, entity_id: str) -> Token | None:
    tokens = policy.tokens
    for i in range(len(tokens) - 2):
        head, sep, value = tokens[i], tokens[i + 1], tokens[i + 2]
        if (
            head.text == entity_type
            and sep.text == "::"
            and value.kind == "string"
            and _unquote(value.text) == entity_id
        ):
            return head
    return None


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    if "\\" not in body:
        return body
    try:
        return json.loads(f'"{body}"')
    except ValueError:
        return body


def _annotation_token(policy: PolicySource, annotation: str | None) -> Token | None:
    if annotation is None:
        return None
    tokens = policy.tokens
    for i in range(len(tokens) - 1):
        if tokens[i].text == "@" and tokens[i + 1].text == annotation:
            return tokens[i]
    return None
