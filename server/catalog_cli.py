"""`bastion catalog scan [--database NAME] [--refresh] [--config F]`.

Classifies every column of the configured databases (PII entity or none, confidence, source and
evidence), stores the result in the state store, and prints one table per database. Columns
classified before and unchanged since are reused (`--refresh` classifies everything again). A
progress bar goes to stderr when the catalog is large and stderr is a terminal, so piping the
table elsewhere stays clean. Failures are BastionErrors: the `bastion` command prints one line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from server.errors import ConfigError

if TYPE_CHECKING:
    from server.config import BastionConfig
    from server.pii.model import ColumnClassification

#: catalogs with at least this many columns get a progress bar
PROGRESS_THRESHOLD = 50
_BAR_WIDTH = 30


def register(commands: Any) -> None:
    """Add `catalog` and its `scan` action to the `bastion` command's subparsers."""
    catalog = commands.add_parser("catalog", help="classify the columns of the configured databases")
    actions = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    scan = actions.add_parser(
        "scan",
        help="classify every column (PII entity, confidence, evidence) and store the result",
        description="Classify every column of the configured databases and store the result.",
    )
    scan.add_argument("--database", help="only this configured database (default: all)")
    scan.add_argument("--refresh", action="store_true", help="classify every column again, ignoring stored results")
    scan.add_argument("--config", help="bastion.yaml (default: $BASTION_CONFIG, ./bastion.yaml, the demo)")
    catalog.set_defaults(handler=_cmd_catalog)


def _cmd_catalog(args: argparse.Namespace) -> int:
    from server.cli import resolve_config

    config, _ = resolve_config(args.config)
    return asyncio.run(scan(config, database=args.database, refresh=args.refresh, out=sys.stdout, err=sys.stderr))


async def scan(
    config: BastionConfig,
    *,
    database: str | None = None,
    refresh: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    from server.db import open_database
    from server.pii.catalog_scan import classify_catalog
    from server.store import open_state_store

    if database is not None and database not in config.databases:
        known = ", ".join(config.databases)
        raise ConfigError(f"--database: no database named {database!r} is configured (configured: {known})")
    names = [database] if database is not None else list(config.databases)
    store = await open_state_store(config.state.dsn, base_dir=config.base_dir)
    try:
        for index, name in enumerate(names):
            db = open_database(name, config.databases[name], base_dir=config.base_dir)
            await db.open()
            try:
                catalog = await db.catalog(refresh=True)
                started = time.perf_counter()
                bar = _progress_bar(err, name)
                classified = await classify_catalog(
                    db, catalog, config.pii, store, progress=bar, refresh=refresh, base_dir=config.base_dir
                )
                elapsed = time.perf_counter() - started
                if bar is not None:
                    bar(-1, -1)
            finally:
                await db.close()
            if index:
                print(file=out)
            print(format_table(name, list(classified.values())), file=out)
            pii = sum(1 for c in classified.values() if c.entity is not None)
            print(f"{name}: {len(classified)} columns, {pii} with PII, classified in {elapsed:.1f} s", file=out)
    finally:
        await store.close()
    return 0


def _progress_bar(err: TextIO, name: str) -> Callable[[int, int], None] | None:
    """A one-line text bar redrawn in place; None when stderr is not a terminal."""
    if not getattr(err, "isatty", lambda: False)():
        return None
    shown = False

    def update(done: int, total: int) -> None:
        nonlocal shown
        if done < 0:  # finished: clear the line
            if shown:
                err.write("\r" + " " * (_BAR_WIDTH + len(name) + 30) + "\r")
                err.flush()
            return
        if total < PROGRESS_THRESHOLD:
            return
        filled = int(_BAR_WIDTH * done / total) if total else _BAR_WIDTH
        err.write(f"\r{name} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total} columns")
        err.flush()
        shown = True

    return update


def format_table(database: str, classifications: list[ColumnClassification]) -> str:
    """table.column, entity (or -), confidence, source, evidence; sorted by schema, table, column."""
    rows = [("column", "entity", "conf", "source", "evidence")]
    for c in sorted(classifications, key=lambda c: (c.schema, c.table, c.column)):
        where = f"{c.table}.{c.column}" if c.schema in ("public", "main") else f"{c.schema}.{c.table}.{c.column}"
        rows.append((where, c.entity or "-", f"{c.confidence:.2f}", c.source, c.evidence))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"database {database}"]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    return "\n".join(line.rstrip() for line in lines)
