"""`bastion approvals list|show|approve|deny`: the approver's side, on the command line.

The command works on the configured state store directly (`--config`, `$BASTION_CONFIG`,
`./bastion.yaml`, else the demo), so it needs no running server. Deciding needs `--as NAME`, a person
named in `identity.users` (with the groups listed there); policy (the Cedar `approve` action)
decides whether that person may approve, exactly as on the server's HTTP API, and nobody approves a
request made on their own behalf. A refusal is one line on stderr and exit status 2.

A decision is announced to a server waiting on the same store: at once with PostgreSQL
(LISTEN/NOTIFY), within half a second with SQLite (the server polls while an agent waits). The
webhook, when configured, is sent from this process; the command waits up to `WEBHOOK_WAIT_S`
for it, then says whether it went out, and never fails because of it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from server.approvals.approvers import Approver
from server.approvals.model import Approval
from server.approvals.service import ApprovalService
from server.audit.recorder import AuditRecorder
from server.config import BastionConfig
from server.errors import ConfigError
from server.policy.reload import load_or_refuse
from server.runtime import policy_directory
from server.store import open_state_store

WEBHOOK_WAIT_S = 10.0


def register(commands: Any) -> None:
    """Add `approvals` and its subcommands to the `bastion` parser."""
    approvals = commands.add_parser("approvals", help="list, show, approve or deny approval requests")
    approvals.add_argument("--config", help="bastion.yaml (default: $BASTION_CONFIG, ./bastion.yaml, the demo)")
    actions = approvals.add_subparsers(dest="approvals_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="pending requests (newest first)")
    listing.add_argument("--all", action="store_true", help="every request, not only pending ones")
    listing.add_argument("-n", "--limit", type=int, default=50, help="at most this many (default 50)")
    show = actions.add_parser("show", help="one request in full")
    show.add_argument("id", help="the approval id (apr_...)")
    for name, verb in (("approve", "approve a pending request"), ("deny", "deny a pending request")):
        action = actions.add_parser(name, help=verb)
        action.add_argument("id", help="the approval id (apr_...)")
        action.add_argument("--as", dest="as_user", required=True, metavar="NAME", help="who you are (identity.users)")
        action.add_argument("--reason", default=None, help="why (recorded in the audit trail and sent to the webhook)")
    approvals.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    from server.cli import resolve_config

    config, _ = resolve_config(args.config)
    return asyncio.run(run(config, args))


def approver_from_config(config: BastionConfig, name: str) -> Approver:
    """The person `--as` names, with the groups `identity.users` gives them; ConfigError otherwise."""
    users = config.identity.users
    user = users.get(name)
    if user is None:
        known = ", ".join(sorted(users)) or "none are configured"
        raise ConfigError(
            f"{name!r} is not a user this configuration knows (identity.users: {known})",
            hint="Add the person under identity.users with their groups.",
        )
    return Approver(name, tuple(user.groups), auth_method="config")


def _time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_list(approvals: list[Approval]) -> str:
    if not approvals:
        return "no approval requests"
    now = datetime.now(UTC)
    header = ["id", "status", "agent", "database", "kind", "created (UTC)", "expires (UTC)", "statement"]
    rows = [
        [
            a.id,
            a.status_at(now).value,
            a.agent_id,
            a.database,
            a.statement_kind,
            _time(a.created_at),
            _time(a.expires_at),
            _one_line(a.statement, 60),
        ]
        for a in approvals
    ]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_show(approval: Approval) -> str:
    status = approval.status_at(datetime.now(UTC)).value
    fields = [
        ("approval", approval.id),
        ("status", status),
        ("mode", approval.mode.value),
        ("database", approval.database),
        ("agent", approval.agent_id + (f" (for {approval.on_behalf_of})" if approval.on_behalf_of else "")),
        ("kind", approval.statement_kind),
        ("tables", ", ".join(approval.tables) or "-"),
        ("justification", approval.justification),
        ("why approval", "; ".join(approval.reasons) or "-"),
        ("policies", f"{', '.join(approval.policy_ids) or '-'} (version {approval.policy_version})"),
        ("created", _time(approval.created_at) + " UTC"),
        ("expires", _time(approval.expires_at) + " UTC"),
        (
            "decided",
            f"{approval.decided_by} via {approval.decided_via} at {_time(approval.decided_at)} UTC"
            if approval.decided_by
            else "-",
        ),
        ("reason", approval.decision_reason or "-"),
        ("used", _time(approval.used_at) + " UTC" if approval.used_at else "-"),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {value}" for name, value in fields]
    lines.append("statement:")
    lines.extend("    " + line for line in approval.statement.strip().splitlines())
    return "\n".join(lines)


async def run(config: BastionConfig, args: argparse.Namespace) -> int:
    store = await open_state_store(config.state.dsn, base_dir=config.base_dir)
    engine = load_or_refuse(policy_directory(config))
    service = ApprovalService(config, store, AuditRecorder(store), lambda: engine)
    try:
        command = args.approvals_command
        if command == "list":
            print(format_list(await service.list(pending_only=not args.all, limit=max(1, args.limit))))
            return 0
        if command == "show":
            print(format_show(await service.get(args.id)))
            return 0
        approver = approver_from_config(config, args.as_user)
        approve = command == "approve"
        decided = await service.decide(args.id, approver, approve=approve, reason=args.reason, via="cli")
        if approve:
            print(
                f"approved {decided.id} ({decided.summary()}) as {approver.name}; the agent can now run it once, "
                f"until {_time(decided.expires_at)} UTC"
            )
        else:
            print(f"denied {decided.id} ({decided.summary()}) as {approver.name}")
        if service.notifier.enabled:
            delivered = await service.notifier.drain(WEBHOOK_WAIT_S)
            if not delivered or service.notifier.failures:
                print("bastion: warning: the webhook notification could not be delivered", file=sys.stderr)
        return 0
    finally:
        await service.close()
        await store.close()


async def run_command(config: BastionConfig, argv: list[str]) -> int:
    """`bastion approvals ARGV...` on `config`, in this process (the demo uses it); refusals raise
    BastionError as on the command line."""
    parser = argparse.ArgumentParser(prog="bastion")
    register(parser.add_subparsers(dest="command", required=True))
    return await run(config, parser.parse_args(["approvals", *argv]))
