"""`bastion eval replay FILE... [--config F] [--url URL] [--policies DIR] [--junit FILE]`.

Replays transcripts (evals/README.md) through real MCP sessions, prints one line per call (its id,
agent, tool, decision, and whether its expectations held, with a short reason when not) and a
summary, and exits 1 when an expectation failed or a line was invalid, so CI can gate on it.
`--junit` writes the same outcomes as JUnit XML for CI dashboards.

Without `--config` the replay never touches a configured database: each file gets a scratch
fixture database (`BASTION_TEST_DSN` names the PostgreSQL server that creates it). `BASTION_CONFIG`
and `./bastion.yaml` are deliberately not picked up implicitly, so a transcript full of attacks
cannot be pointed at production by accident.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the replayer pulls in the server and the MCP SDK: loaded only when used
    from evals.replay import FileReport

_MARKS = {"pass": "✓", "fail": "✗", "invalid": "✗", "known_gap": "✗ gap", "gap_closed": "✓ gap?"}


def register(commands: Any) -> None:
    """Add `eval` and its `replay` action to the `bastion` command's subparsers."""
    evals = commands.add_parser("eval", help="replay agent transcripts and check their expectations")
    actions = evals.add_subparsers(dest="eval_command", required=True, metavar="ACTION")
    replay_parser = actions.add_parser(
        "replay",
        help="run transcripts through real MCP sessions; exit 1 when an expectation fails",
        description="Replay JSON Lines transcripts (evals/README.md) and check each call's expectations.",
    )
    replay_parser.add_argument("files", nargs="+", metavar="FILE", help="transcript files (.jsonl)")
    replay_parser.add_argument(
        "--config", help="use this bastion.yaml as given instead of creating the header's fixture database"
    )
    replay_parser.add_argument("--url", help="replay against a running server's MCP endpoint (streamable HTTP)")
    replay_parser.add_argument("--policies", help="policy directory to use instead of the header's or the config's")
    replay_parser.add_argument("--junit", metavar="FILE", help="also write the outcomes as JUnit XML")
    replay_parser.add_argument("--failures-only", action="store_true", help="list only calls that did not pass")
    diff = actions.add_parser(
        "diff",
        help="list the recorded calls whose decision would change under candidate policies",
        description="Evaluate the audit trail's recorded calls under the policies in service and under a "
        "candidate policy directory, without running them; list every call whose decision, masks, row filters "
        "or row limit would change. Exit 1 when some would.",
    )
    diff.add_argument("--policies", required=True, metavar="DIR", help="the candidate policy directory")
    diff.add_argument("--config", help="bastion.yaml (default: $BASTION_CONFIG, ./bastion.yaml, the demo)")
    diff.add_argument("--since", help="ISO date or time (UTC when no zone is given)")
    diff.add_argument("--until", help="ISO date or time (UTC when no zone is given)")
    evals.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.eval_command == "diff":
        return asyncio.run(_diff(args))
    from evals.replay import ReplayOptions, replay

    options = ReplayOptions(config_path=args.config, url=args.url, policies=args.policies)
    reports = asyncio.run(replay(args.files, options))
    print_reports(reports, sys.stdout, failures_only=args.failures_only)
    if args.junit:
        write_junit(reports, args.junit)
    return 1 if any(report.failed for report in reports) else 0


async def _diff(args: argparse.Namespace) -> int:
    from pathlib import Path

    from server.audit.export import parse_time
    from server.cli import resolve_config
    from server.errors import ConfigError
    from server.policy.engine import PolicyEngine
    from server.policy.impact import compare
    from server.runtime import Runtime, policy_directory
    from server.store import open_state_store

    config, _ = resolve_config(args.config)
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    current = PolicyEngine.load(policy_directory(config))
    candidate = PolicyEngine.load(Path(args.policies))
    from server.app import RuntimeHolder

    async with RuntimeHolder(config, "cli").use() as runtime:
        assert isinstance(runtime, Runtime)
        catalogs = {name: await db.catalog() for name, db in runtime.databases.items()}
        pii = {name: await runtime.pii_columns(name) for name in runtime.databases}
        for name, catalog in catalogs.items():
            current.bind(name, catalog, pii[name])
            candidate.bind(name, catalog, pii[name])
        store = await open_state_store(config.state.dsn, base_dir=config.base_dir)
        try:
            events = [stored.event for stored in await store.audit_events(since=since, until=until)]
        finally:
            await store.close()
    changes, compared, skipped = compare(events, current, candidate, catalogs, pii)
    print(
        f"policies {current.version} -> candidate {candidate.version}: {compared} recorded calls compared, "
        f"{len(changes)} would change, {len(skipped)} skipped"
    )
    for change in changes:
        event = change.event
        sql = _clip(str(event.arguments.get("sql", "")), 70)
        print(f"- {event.time:%Y-%m-%d %H:%M} {event.agent_id} [{','.join(event.groups)}] {event.tool}: {sql}")
        for detail in change.details:
            print(f"    {detail}")
    for reason in skipped[:20]:
        print(f"  skipped {reason}")
    return 1 if changes else 0


# --- the table ------------------------------------------------------------------------------------


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _row(cells: Sequence[str], reason: str, widths: Sequence[int], reason_width: int) -> str:
    left = "  ".join(_clip(cell, width).ljust(width) for cell, width in zip(cells, widths, strict=True))
    return f"  {left}  {_clip(reason, reason_width)}".rstrip()


def summary_line(report: FileReport) -> str:
    parts = [
        f"{len(report.outcomes)} calls",
        f"{report.count('pass')} passed",
        f"{report.count('fail')} failed",
    ]
    if report.count("invalid"):
        parts.append(f"{report.count('invalid')} invalid")
    if report.count("known_gap"):
        parts.append(f"{report.count('known_gap')} known gaps")
    if report.count("gap_closed"):
        parts.append(f"{report.count('gap_closed')} known gaps that now hold (remove known_gap)")
    return ", ".join(parts) + f" in {report.duration_s:.1f} s"


def _reason_width(out: TextIO, used: int) -> int:
    """On a terminal, what is left of its width; in a CI log (not a terminal) reasons stay whole,
    since a clipped reason is the one thing a reader of a failed build needs."""
    isatty = getattr(out, "isatty", None)
    if isatty is None or not isatty():
        return 2_000
    return max(shutil.get_terminal_size((140, 24)).columns - used, 40)


def print_reports(reports: Sequence[FileReport], out: TextIO, *, failures_only: bool = False) -> None:
    for report in reports:
        print(report.source, file=out)
        if report.setup_error is not None:
            print(f"  ✗ could not replay: {report.setup_error}", file=out)
        shown = [o for o in report.outcomes if not failures_only or o.status != "pass"]
        if shown:
            widths = [
                min(max(2, *(len(o.id) for o in shown)), 26),
                min(max(5, *(len(o.agent) for o in shown)), 22),
                min(max(4, *(len(o.tool) for o in shown)), 16),
                17,
                6,
            ]
            reason_width = _reason_width(out, sum(widths) + 2 * len(widths) + 2)
            print(_row(("id", "agent", "tool", "decision", "ok"), "reason", widths, reason_width), file=out)
            for o in shown:
                cells = (o.id, o.agent, o.tool, o.decision, _MARKS.get(o.status, "?"))
                print(_row(cells, "; ".join(o.reasons), widths, reason_width), file=out)
        print(f"  {summary_line(report)}", file=out)
    if len(reports) > 1:
        failed = sum(1 for report in reports if report.failed)
        print(f"{len(reports)} files, {failed} with failures", file=out)


# --- JUnit XML ------------------------------------------------------------------------------------


def junit_tree(reports: Sequence[FileReport]) -> ET.ElementTree:
    """One testsuite per file, one testcase per call: failures for broken expectations, errors for
    invalid lines and files that could not run, skipped for known gaps."""
    root = ET.Element("testsuites", name="bastion-evals")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for report in reports:
        suite_name = Path(report.source).stem
        suite = ET.SubElement(root, "testsuite", name=suite_name, time=f"{report.duration_s:.3f}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if report.setup_error is not None:
            case = ET.SubElement(suite, "testcase", classname=f"evals.{suite_name}", name="setup", time="0")
            ET.SubElement(case, "error", message=report.setup_error[:500]).text = report.setup_error
            counts["tests"] += 1
            counts["errors"] += 1
        for outcome in report.outcomes:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"evals.{suite_name}",
                name=outcome.id,
                time=f"{outcome.duration_ms / 1000:.3f}",
            )
            counts["tests"] += 1
            detail = "\n".join(outcome.reasons)
            context = f"line {outcome.line}, agent {outcome.agent}, tool {outcome.tool}, decision {outcome.decision}"
            if outcome.status == "fail":
                ET.SubElement(case, "failure", message=detail[:500]).text = f"{context}\n{detail}"
                counts["failures"] += 1
            elif outcome.status == "invalid":
                ET.SubElement(case, "error", message=detail[:500]).text = f"{context}\n{detail}"
                counts["errors"] += 1
            elif outcome.status in ("known_gap", "gap_closed"):
                ET.SubElement(case, "skipped", message=f"known gap: {detail}"[:500])
                counts["skipped"] += 1
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(reports: Sequence[FileReport], path: str | Path) -> None:
    junit_tree(reports).write(path, encoding="utf-8", xml_declaration=True)
