"""`bastion audit tail|export|verify|checkpoint|prune|report`.

Every action opens the configured state store and fails with one line when it cannot (an unreachable
store, a bad DSN), like the rest of the CLI. `verify` exits 1 when the chain is broken, naming the
first broken link; `report` still writes its page then (saying so loudly) and exits 1 too, so a
scheduled report job notices. Signing uses `BASTION_AUDIT_KEY` from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from server.config import BastionConfig, redact_dsn
from server.errors import ConfigError

TIME_HELP = "ISO date or time (UTC when no zone is given)"


def register(commands: Any) -> None:
    """Add `audit` and its actions to the `bastion` parser (server/cli.py calls this)."""
    audit = commands.add_parser("audit", help="read, export, verify, prune and report on the audit trail")
    audit.add_argument("--config", help="bastion.yaml (default: $BASTION_CONFIG, ./bastion.yaml, the demo)")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    tail = actions.add_parser("tail", help="show the latest events as a table")
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many events (default 20)")
    export = actions.add_parser("export", help="print events as JSON Lines or CSV")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--since", help=TIME_HELP)
    export.add_argument("--until", help=TIME_HELP)
    actions.add_parser("verify", help="recompute the hash chain and checkpoints; report the first broken link")
    actions.add_parser("checkpoint", help="record the chain head in the trail, signed with $BASTION_AUDIT_KEY")
    prune = actions.add_parser("prune", help="delete events before a date, keeping the rest verifiable")
    prune.add_argument("--before", help=f"{TIME_HELP}; default: now minus state.audit_retention_days")
    report = actions.add_parser("report", help="write the auditor's HTML report for a period")
    report.add_argument("--since", help=TIME_HELP)
    report.add_argument("--until", help=TIME_HELP)
    report.add_argument("--out", default="audit-report.html", help="the HTML file to write (default audit-report.html)")
    report.add_argument("--title", default="Database access audit report")
    audit.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from server.cli import resolve_config

    config, _ = resolve_config(args.config)
    return asyncio.run(run(config, args))


def _times(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    from server.audit.export import parse_time

    try:
        since = parse_time(args.since) if getattr(args, "since", None) else None
        until = parse_time(args.until) if getattr(args, "until", None) else None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if since is not None and until is not None and until <= since:
        raise ConfigError("--until must be after --since")
    return since, until


def _actor() -> str:
    try:
        return f"{getpass.getuser()} (bastion audit)"
    except (KeyError, OSError):
        return "bastion audit"


def store_label(config: BastionConfig) -> str:
    """The store named for a person, with any password replaced."""
    return redact_dsn(config.state.dsn)


async def run(config: BastionConfig, args: argparse.Namespace) -> int:
    from server.audit.checkpoint import audit_key_from_env
    from server.store import open_state_store

    since, until = _times(args)
    key = audit_key_from_env()  # a bad key fails before the store is touched
    store = await open_state_store(config.state.dsn, base_dir=config.base_dir)
    try:
        action = args.audit_command
        if action == "tail":
            from server.audit.export import format_tail

            print(format_tail(await store.last_audit_events(max(1, args.lines))))
            return 0
        if action == "export":
            from server.audit.export import export_csv, export_jsonl

            exporter = export_csv if args.format == "csv" else export_jsonl
            await exporter(store, sys.stdout, since=since, until=until)
            return 0
        if action == "verify":
            return await _verify(store, key)
        if action == "checkpoint":
            return await _checkpoint(store, key)
        if action == "prune":
            return await _prune(config, store, key, args.before)
        return await _report(config, store, key, since, until, args)
    finally:
        await store.close()


async def _verify(store: Any, key: Any) -> int:
    from server.audit.verify import verify_trail

    verification = await verify_trail(store, key)
    print(verification.summary())
    for line in verification.unchecked:
        print(f"  note: {line}")
    return 0 if verification.intact else 1


async def _checkpoint(store: Any, key: Any) -> int:
    import json

    from server.audit.checkpoint import KEY_ENV, checkpoint_of
    from server.audit.retention import write_checkpoint

    stored = await write_checkpoint(store, key, actor=_actor())
    checkpoint = checkpoint_of(stored)
    assert checkpoint is not None
    state = "signed" if key else f"UNSIGNED (set {KEY_ENV} to sign checkpoints)"
    print(f"checkpoint of event {checkpoint.sequence} written as event {stored.sequence}, {state}")
    # the line to keep somewhere the store's writers cannot reach: it pins the trail up to here
    print(json.dumps({"sequence": checkpoint.sequence, "hash": checkpoint.hash, "signature": checkpoint.signature}))
    return 0


async def _prune(config: BastionConfig, store: Any, key: Any, before_text: str | None) -> int:
    from server.audit.export import parse_time
    from server.audit.retention import prune, retention_days

    if before_text:
        try:
            before = parse_time(before_text)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    else:
        days = retention_days(config)
        if days is None:
            raise ConfigError("give --before DATE, or set state.audit_retention_days in the configuration")
        before = datetime.now(UTC) - timedelta(days=days)
    if before > datetime.now(UTC):
        raise ConfigError("--before is in the future; prune only deletes events older than a past date")
    result = await prune(store, before, key, actor=_actor())
    if result.anchor is None:
        print(f"nothing to prune: no event before {before.isoformat()}")
    else:
        print(
            f"pruned {result.deleted} events up to event {result.anchor.sequence} (before {before.isoformat()}); "
            "the trail now verifies from the checkpoint recorded as event "
            f"{result.checkpoint.sequence if result.checkpoint else '?'}"
        )
    return 0


async def _report(
    config: BastionConfig, store: Any, key: Any, since: datetime | None, until: datetime | None, args: Any
) -> int:
    from server.audit.report import build_report
    from server.audit.report_html import render_report

    report = await build_report(store, since, until, key, store_label=store_label(config))
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_report(report, title=args.title), encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write the report to {out}: {error.strerror or error}") from None
    what = "no calls in the period" if report.empty else f"{report.calls} calls, {len(report.agents)} agents"
    print(f"report written to {out} ({what}); {report.verification.summary()}")
    return 0 if report.verification.intact else 1
