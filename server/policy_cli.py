"""`bastion policy validate|test|explain|schema`: the policy author's tools.

Every subcommand takes `--config F` (for the policy directory, the databases and their live
catalogs) and `--policies DIR` (to check a directory other than the configured one, e.g. in a
pull request's CI). The policy directory is `--policies`, else `policies:` of the config, else the
shipped `policies/`. Without `--config`, `$BASTION_CONFIG` or `./bastion.yaml` no configuration is
used (the embedded demo is not built for this). Failures are readable lines and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from server.config import BastionConfig, resolve_path
from server.db.base import Catalog
from server.errors import BastionError, ConfigError
from server.policy.engine import Explanation, PolicyEngine
from server.policy.errors import PolicyError, PolicyProblem
from server.policy.fixtures import CatalogFixture, load_catalog_file
from server.policy.schema import SHIPPED_POLICIES, render_schema
from server.policy.testing import build_request, discover, run_files, summary
from server.sql.analyzer import analyze
from server.sql.row_filters import apply_row_filters


def register(commands: Any) -> None:
    """Add `policy` and its subcommands to the `bastion` parser."""
    policy = commands.add_parser("policy", help="validate, test and explain Cedar policies")
    actions = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--config", help="bastion.yaml (default: $BASTION_CONFIG, ./bastion.yaml)")
        parser.add_argument(
            "--policies", help="policy directory (default: policies: of the config, or the shipped one)"
        )
        return parser

    validate = common(actions.add_parser("validate", help="check syntax, schema, entities and row filters"))
    validate.add_argument("--catalog", help="a YAML catalog fixture instead of the configured databases")
    test = common(actions.add_parser("test", help="run policy test cases (policies/tests/*.yaml)"))
    test.add_argument("files", nargs="*", help="test files or directories (default: <policies>/tests/*.yaml)")
    test.add_argument("-a", "--all", action="store_true", help="list passing cases too")
    explain = common(actions.add_parser("explain", help="the decision for an agent and a SQL text"))
    explain.add_argument("--agent", required=True, help="agent id")
    explain.add_argument(
        "--group", action="append", default=[], help="a group of the agent (repeatable; default: identity.agents)"
    )
    explain.add_argument("--sql", required=True, help="the statement")
    explain.add_argument("--database", help="configured database name (default: the first)")
    explain.add_argument("--catalog", help="a YAML catalog fixture instead of the live catalog")
    explain.add_argument("--purpose", default="", help="the purpose the agent gives")
    explain.add_argument("--hour", type=int, help="hour of day, UTC (default: now)")
    explain.add_argument("--approved", action="store_true", help="as if a human approved the statement")
    schema = common(actions.add_parser("schema", help="print the Cedar schema and the catalog's entities"))
    schema.add_argument("--catalog", help="a YAML catalog fixture instead of the configured databases")
    policy.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    handlers = {"validate": _validate, "test": _test, "explain": _explain, "schema": _schema}
    try:
        return handlers[args.policy_command](args)
    except PolicyError as error:
        for line in error.lines():
            print(line, file=sys.stderr)
        print(f"bastion: {len(error.problems)} problem(s) in the policies", file=sys.stderr)
        return 1


# -- where things come from ----------------------------------------------------------------------


def _config(args: argparse.Namespace) -> BastionConfig | None:
    if not (args.config or os.environ.get("BASTION_CONFIG") or Path("bastion.yaml").exists()):
        return None
    from server.cli import resolve_config

    config, _ = resolve_config(args.config)
    return config


def policy_directory(args: argparse.Namespace, config: BastionConfig | None) -> Path:
    if getattr(args, "policies", None):
        return Path(args.policies)
    if config is not None and config.policies:
        return resolve_path(config, config.policies)
    return SHIPPED_POLICIES


async def _live_catalogs(config: BastionConfig, only: str | None = None) -> dict[str, Catalog]:
    """The catalog of each configured database that can be reached (the others are skipped with
    a note: validation of syntax and schema does not need them)."""
    from server.db import open_database

    catalogs: dict[str, Catalog] = {}
    for name, settings in config.databases.items():
        if only is not None and name != only:
            continue
        database = open_database(name, settings, base_dir=config.base_dir)
        try:
            await database.open()
            catalogs[name] = await database.catalog()
        except BastionError as error:
            print(
                f"note: database {name} is not reachable ({error.message}); its catalog is not checked", file=sys.stderr
            )
        finally:
            await database.close()
    return catalogs


def _fixtures(args: argparse.Namespace, config: BastionConfig | None, only: str | None = None) -> list[CatalogFixture]:
    if getattr(args, "catalog", None):
        return [load_catalog_file(Path(args.catalog))]
    if config is None:
        return []
    catalogs = asyncio.run(_live_catalogs(config, only))
    # the catalog scan's classifications live in the state store (the PII issue); the config's
    # column overrides are what is known here
    pii = {column: entity for column, entity in config.pii.columns.items() if entity.upper() != "NONE"}
    return [CatalogFixture(name, catalog, pii=pii) for name, catalog in catalogs.items()]


# -- the subcommands -----------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    config = _config(args)
    directory = policy_directory(args, config)
    engine = PolicyEngine.load(directory)
    fixtures = _fixtures(args, config)
    problems: list[PolicyProblem] = []
    for fixture in fixtures:
        problems.extend(engine.bind(fixture.database, fixture.catalog, fixture.pii, fixture.tags))
    known = {fixture.database for fixture in fixtures} | set(config.databases if config else ())
    if known:
        problems.extend(_foreign_literals(engine, known))
    if problems:
        raise PolicyError(sorted(set(problems)))
    checked = ", ".join(f"database {f.database}" for f in fixtures) or "no catalog (syntax and schema only)"
    print(
        f"ok: {len(engine.policies)} policies in {len(engine.bundle.files)} files, version {engine.version}; {checked}"
    )
    return 0


def _foreign_literals(engine: PolicyEngine, databases: set[str]) -> list[PolicyProblem]:
    problems = []
    for policy in engine.policies.values():
        for literal in policy.literals:
            if literal.type in ("Database", "Schema", "Table", "Column"):
                database = literal.id.split(".", 1)[0]
                if database not in databases:
                    message = f'{literal.type}::"{literal.id}" names database {database}, which is not configured'
                    problems.append(PolicyProblem(policy.file, literal.line, literal.column, message))
    return problems


def _test(args: argparse.Namespace) -> int:
    config = _config(args)
    override = Path(args.policies) if args.policies else None
    directory = policy_directory(args, config)
    files = discover([Path(f) for f in args.files], directory)
    results = run_files(files, policies=override)
    print(summary(results, verbose=args.all))
    return 0 if all(r.passed for r in results) else 1


def _explain(args: argparse.Namespace) -> int:
    config = _config(args)
    engine = PolicyEngine.load(policy_directory(args, config))
    database = args.database or (config.default_database if config and not args.catalog else None)
    fixtures = _fixtures(args, config, only=database)
    if not fixtures:
        raise ConfigError(
            "no catalog to explain against: give --catalog FILE, or a --config whose database is reachable"
        )
    fixture = fixtures[0]
    engine.bind(fixture.database, fixture.catalog, fixture.pii, fixture.tags)
    groups = args.group
    if not groups and config is not None and args.agent in config.identity.agents:
        groups = list(config.identity.agents[args.agent].groups)  # as the server would resolve it
    case: dict[str, Any] = {"agent": args.agent, "groups": groups, "sql": args.sql, "purpose": args.purpose}
    if args.hour is not None:
        case["hour_utc"] = args.hour
    else:
        from datetime import UTC, datetime

        case["hour_utc"] = datetime.now(UTC).hour
    case["approved"] = args.approved
    request = build_request(case, {}, fixture, where="explain")
    explanation = engine.explain(request)
    print(format_explanation(explanation, fixture.database))
    decision = explanation.decision
    if decision.allowed and decision.row_filters:
        statement = analyze(args.sql, fixture.catalog.dialect)
        tree = apply_row_filters(
            statement.ast, decision.row_filters, dialect=statement.dialect, catalog=fixture.catalog
        )
        print("rewritten SQL:\n  " + tree.sql(dialect=statement.dialect))
    return 0


def format_explanation(explanation: Explanation, database: str) -> str:
    decision = explanation.decision
    lines = [f"decision: {decision.verdict.value}  (policy version {decision.policy_version})"]
    lines += ["reasons:", *(f"  - {reason}" for reason in decision.reasons)]
    lines.append("policy ids: " + (", ".join(decision.policy_ids) or "-"))
    if explanation.outcomes:
        lines.append("requests:")
        for outcome in explanation.outcomes:
            verdict = "allow" if outcome.allowed else "deny"
            if outcome.action == "read_unmasked" and not outcome.allowed:
                verdict = f"masked ({decision.masks.get(outcome.target, 'default')})"
            what = f"{outcome.resource_type.lower()} {outcome.target or database}"
            by = ", ".join(outcome.errored_forbids or outcome.policy_ids) or "no policy"
            lines.append(f"  {outcome.action:<14} {what:<48} {verdict:<16} by {by}")
    if explanation.approved_outcomes:
        approvable = all(o.allowed for o in explanation.approved_outcomes)
        lines.append(f"with approval: {'allowed' if approvable else 'still denied'}")
    obligations = _obligations(decision.max_rows, decision.row_filters, decision.masks)
    if obligations:
        lines += ["obligations:", *obligations]
    return "\n".join(lines)


def _obligations(max_rows: int | None, filters: Mapping[str, str], masks: Mapping[str, str]) -> list[str]:
    lines = [f"  max_rows: {max_rows}"] if max_rows is not None else []
    lines += [f"  row filter on {table}: {predicate}" for table, predicate in filters.items()]
    lines += [f"  mask {column}: {operator}" for column, operator in masks.items()]
    return lines


def _schema(args: argparse.Namespace) -> int:
    config = _config(args)
    fixtures = _fixtures(args, config)
    print(
        render_schema(
            {f.database: f.catalog for f in fixtures},
            {f.database: f.pii for f in fixtures},
        )
    )
    return 0
