"""Policy test cases: an agent, its groups and a SQL text in; the expected decision out.

`bastion policy test` runs every `policies/tests/*.yaml` (or the files given). A file names the
policy directory it tests, describes the database as a catalog fixture (`fixtures.py`), and lists
cases:

    policies: ../examples            # relative to this file (default: ..)
    catalog: {database: main, dialect: postgres, tables: {...}}
    defaults: {purpose: "support ticket 4711", hour_utc: 10}
    cases:
      - name: analytics cannot read HR
        agent: analyst-bot
        groups: [analytics]
        sql: SELECT * FROM hr.employees
        expect:
          decision: deny                       # allow | deny | approval_required
          reason: off limits                   # a reason contains this text
          policy_ids: [analytics-no-hr]        # each of these decided
          masks: {sales.customers.email: default}        # exactly these masks (when given)
          row_filters: {sales.orders: "region = 'EU'"}   # exactly these filters (when given)
          max_rows: 500                                  # (when given; null for none)

Each case runs the real stages without a database: the SQL analyzer, table resolution against the
fixture, `statement_actions`, the engine. Which PII columns reach the output is estimated here
(every PII column of a touched table that the SQL names, all of them for `*`) unless the case lists
`unmasked:`; the real server traces lineage (the PII issue). A failure prints what differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import BastionError, ConfigError, PolicyDenied, SQLRejected
from server.identity.agent import Agent
from server.policy.decision import Decision
from server.policy.engine import AuthorizationRequest, PolicyContext, PolicyEngine
from server.policy.errors import PolicyError
from server.policy.fixtures import CatalogFixture, parse_catalog, read_yaml
from server.policy.requests import statement_actions
from server.policy.resources import ResolvedTable, resolve_tables
from server.sql.analyzer import analyze
from server.sql.statement import Statement

_CASE_KEYS = {"name", "agent", "groups", "on_behalf_of", "sql", "unmasked", "expect", *["purpose", "hour_utc"]}
_CONTEXT_KEYS = {"purpose", "hour_utc", "tool", "transport", "row_limit", "approved"}
_EXPECT_KEYS = {"decision", "reason", "policy_ids", "masks", "row_filters", "max_rows"}


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    differences: tuple[str, ...] = ()

    def report(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.file}: {self.name}"
        return "\n".join([head, *(f"    {line}" for line in self.differences)])


@dataclass
class _Engines:
    """Policy directories loaded once per run, whatever number of files test them."""

    loaded: dict[Path, PolicyEngine] = field(default_factory=dict)

    def get(self, directory: Path) -> PolicyEngine:
        key = directory.resolve()
        if key not in self.loaded:
            self.loaded[key] = PolicyEngine.load(key)
        return self.loaded[key]


def discover(paths: Sequence[Path], default_dir: Path) -> list[Path]:
    if not paths:
        found = sorted((default_dir / "tests").glob("*.yaml"))
        if not found:
            raise ConfigError(f"no policy test files in {default_dir / 'tests'}")
        return found
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return files


def run_files(paths: Iterable[Path], *, policies: Path | None = None) -> list[CaseResult]:
    engines = _Engines()
    results: list[CaseResult] = []
    for path in paths:
        results.extend(run_file(path, policies=policies, engines=engines))
    return results


def run_file(path: Path, *, policies: Path | None = None, engines: _Engines | None = None) -> list[CaseResult]:
    """Every case of one file. Problems with the file itself (YAML, catalog, policies that do not
    load or bind) are one failed result naming the file, so a run still reports everything."""
    engines = engines or _Engines()
    name = str(path)
    try:
        data = read_yaml(path)
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            raise ConfigError(f"{name}: expected a mapping with catalog and a list of cases")
        unknown = set(data) - {"policies", "catalog", "defaults", "cases"}
        if unknown:
            raise ConfigError(f"{name}: unknown key {sorted(unknown)[0]}")
        fixture = parse_catalog(data.get("catalog"), source=name)
        directory = policies or (path.parent / str(data.get("policies", ".."))).resolve()
        engine = engines.get(directory)
        problems = engine.bind(fixture.database, fixture.catalog, fixture.pii, fixture.tags)
        if problems:
            return [CaseResult(name, "(policies against the catalog fixture)", False, tuple(map(str, problems)))]
    except PolicyError as error:
        return [CaseResult(name, "(loading the policies)", False, tuple(error.lines()))]
    except BastionError as error:
        return [CaseResult(name, "(reading the file)", False, (error.message,))]
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - _CONTEXT_KEYS - {"groups"}:
        allowed = ", ".join(sorted(_CONTEXT_KEYS | {"groups"}))
        return [CaseResult(name, "(reading the file)", False, (f"{name}: defaults may set only {allowed}",))]
    results = []
    for index, case in enumerate(data["cases"], start=1):
        label = case.get("name", f"case {index}") if isinstance(case, dict) else f"case {index}"
        try:
            results.append(_run_case(name, str(label), case, defaults, engine, fixture))
        except BastionError as error:
            results.append(CaseResult(name, str(label), False, (error.message,)))
    return results


def _run_case(
    file: str, label: str, case: Any, defaults: Mapping[str, Any], engine: PolicyEngine, fixture: CatalogFixture
) -> CaseResult:
    if not isinstance(case, dict):
        raise ConfigError(f"{file}: case {label!r}: must be a mapping")
    unknown = set(case) - _CASE_KEYS - _CONTEXT_KEYS
    if unknown:
        raise ConfigError(f"{file}: case {label!r}: unknown key {sorted(unknown)[0]}")
    for key in ("agent", "sql", "expect"):
        if key not in case:
            raise ConfigError(f"{file}: case {label!r}: {key} is required")
    expect = case["expect"]
    if not isinstance(expect, dict) or "decision" not in expect or set(expect) - _EXPECT_KEYS:
        raise ConfigError(f"{file}: case {label!r}: expect needs decision, and only {', '.join(sorted(_EXPECT_KEYS))}")
    request = build_request(case, defaults, fixture, where=f"{file}: case {label!r}")
    decision = engine.authorize(request)
    return CaseResult(file, label, *_compare(expect, decision))


def build_request(
    case: Mapping[str, Any], defaults: Mapping[str, Any], fixture: CatalogFixture, *, where: str
) -> AuthorizationRequest:
    """The request the server would make for this case's agent and SQL."""
    settings = {**defaults, **case}
    agent = Agent(
        id=str(case["agent"]),
        groups=tuple(str(g) for g in settings.get("groups") or ()),
        on_behalf_of=settings.get("on_behalf_of"),
    )
    try:
        statement = analyze(str(case["sql"]), fixture.catalog.dialect)
        tables = resolve_tables(statement, fixture.catalog)
    except (SQLRejected, PolicyDenied) as error:
        raise ConfigError(f"{where}: {error.message}") from None
    if "unmasked" in case:
        unmasked = tuple((str(c), fixture.pii.get(str(c), "")) for c in case["unmasked"] or ())
    else:
        unmasked = estimate_unmasked(statement, tables, fixture.pii)
    context = PolicyContext(
        purpose=str(settings.get("purpose", "")),
        tool=str(settings.get("tool", "query")),
        transport=str(settings.get("transport", "stdio")),
        row_limit=int(settings.get("row_limit", 1000)),
        statement_kind=statement.kind.value,
        pii_entities=tuple(sorted({entity for _, entity in unmasked if entity})),
        hour_utc=int(settings.get("hour_utc", 12)),
        approved=bool(settings.get("approved", False)),
    )
    return AuthorizationRequest(agent, fixture.database, statement_actions(statement, tables), unmasked, context)


def estimate_unmasked(
    statement: Statement, tables: Sequence[ResolvedTable], pii: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """PII columns of the touched tables that the SQL names (all of them for `*`): an
    over-approximation of lineage, good enough to test and explain policies offline."""
    named = {column.name for column in statement.columns}
    star = "*" in named
    found: list[tuple[str, str]] = []
    for table in tables:
        if table.info is None:
            continue
        for column in table.info.columns:
            key = f"{table.info.qualified}.{column.name}"
            if key in pii and (star or column.name in named):
                found.append((key, pii[key]))
    return tuple(dict.fromkeys(found))


def _compare(expect: Mapping[str, Any], decision: Decision) -> tuple[bool, tuple[str, ...]]:
    diffs: list[str] = []
    if str(expect["decision"]) != decision.verdict.value:
        diffs.append(f"decision: expected {expect['decision']}, got {decision.verdict.value}")
    if "reason" in expect and not any(str(expect["reason"]) in reason for reason in decision.reasons):
        diffs.append(f"reason: expected one containing {expect['reason']!r}")
    for pid in expect.get("policy_ids") or ():
        if pid not in decision.policy_ids:
            diffs.append(f"policy_ids: expected {pid!r} among them")
    if "masks" in expect and dict(expect["masks"] or {}) != dict(decision.masks):
        diffs.append(f"masks: expected {dict(expect['masks'] or {})}, got {dict(decision.masks)}")
    if "row_filters" in expect and dict(expect["row_filters"] or {}) != dict(decision.row_filters):
        diffs.append(f"row_filters: expected {dict(expect['row_filters'] or {})}, got {dict(decision.row_filters)}")
    if "max_rows" in expect and expect["max_rows"] != decision.max_rows:
        diffs.append(f"max_rows: expected {expect['max_rows']}, got {decision.max_rows}")
    if diffs:
        diffs.append(
            f"(got: {decision.verdict.value}; reasons: {list(decision.reasons)}; ids: {list(decision.policy_ids)})"
        )
    return not diffs, tuple(diffs)


def summary(results: Sequence[CaseResult], *, verbose: bool = False) -> str:
    lines = [result.report() for result in results if verbose or not result.passed]
    failed = sum(not r.passed for r in results)
    files = len({r.file for r in results})
    lines.append(f"{len(results) - failed} passed, {failed} failed ({len(results)} cases in {files} files)")
    return "\n".join(lines)
