"""`bastion audit export|verify|checkpoint|prune|report` as an operator runs them."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from server.audit.export import CSV_COLUMNS
from server.store import open_state_store
from tests.audit.conftest import KEY, call
from tests.conftest import ScratchDatabase
from tests.store.test_audit_store import new_pg_schema


def bastion(*args: str, cwd: Path, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    if key:
        env["BASTION_AUDIT_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "server", "audit", "--config", "bastion.yaml", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_config(folder: Path, state_dsn: str = "sqlite:///state.db") -> None:
    (folder / "bastion.yaml").write_text(
        yaml.safe_dump({"databases": {"main": {"dsn": "sqlite:///app.db"}}, "state": {"dsn": state_dsn}})
    )


@pytest.fixture
async def trail_dir(tmp_path: Path) -> Path:
    """A folder with a config and a SQLite trail of 10 calls, one an hour from 2026-06-01 10:00."""
    write_config(tmp_path)
    store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        for n in range(1, 11):
            changes: dict[str, object] = {}
            if n == 4:
                changes = {"decision": "deny", "reasons": ("DROP TABLE is never allowed",), "row_count": None}
            if n == 7:
                changes = {"statement_kind": "update", "approval_id": "apr-1", "approver": "bob@example.com"}
            if n == 8:
                changes = {"arguments": {"sql": '=HYPERLINK("http://evil")'}, "purpose": "-2+3"}
            await store.append_audit(call(n, **changes))
    finally:
        await store.close()
    return tmp_path


def tamper(folder: Path, sql: str) -> None:
    conn = sqlite3.connect(folder / "state.db")
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def test_csv_export_has_a_header_and_one_row_an_event_in_the_window(trail_dir: Path) -> None:
    result = bastion(
        "export", "--format", "csv", "--since", "2026-06-01T11:00", "--until", "2026-06-01T18:00", cwd=trail_dir
    )

    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [r["sequence"] for r in records] == ["2", "3", "4", "5", "6", "7", "8"]
    by_sequence = {r["sequence"]: r for r in records}
    assert by_sequence["4"]["decision"] == "deny" and by_sequence["4"]["reasons"] == "DROP TABLE is never allowed"
    assert by_sequence["7"]["approver"] == "bob@example.com"
    assert by_sequence["2"]["tables"] == "public.customers"
    assert by_sequence["2"]["sql"].startswith("SELECT email FROM customers")
    assert json.loads(by_sequence["2"]["arguments"])["purpose"] == "audit test"
    assert by_sequence["8"]["sql"].startswith("'=HYPERLINK")  # no formula runs when a spreadsheet opens it
    assert by_sequence["8"]["purpose"] == "'-2+3"
    assert len(by_sequence["2"]["hash"]) == 64


def test_verify_says_intact_then_pinpoints_an_edit(trail_dir: Path) -> None:
    intact = bastion("verify", cwd=trail_dir)
    assert intact.returncode == 0 and intact.stdout.startswith("audit chain intact: 10 events verified")

    tamper(
        trail_dir,
        "UPDATE audit_events SET record = replace(record, '\"row_count\":1', '\"row_count\":0') WHERE sequence = 6",
    )
    broken = bastion("verify", cwd=trail_dir)
    assert broken.returncode == 1
    assert (
        broken.stdout.strip()
        == "audit chain BROKEN at sequence 6: event 6 was altered: its content does not match its hash"
    )


def test_a_signed_checkpoint_then_a_rewritten_tail_fails_verify(trail_dir: Path) -> None:
    made = bastion("checkpoint", cwd=trail_dir, key=KEY)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("checkpoint of event 10 written as event 11, signed")
    pinned = json.loads(made.stdout.splitlines()[1])
    assert pinned["sequence"] == 10 and len(pinned["signature"]) == 64
    verified = bastion("verify", cwd=trail_dir, key=KEY)
    assert verified.returncode == 0 and "1 signed checkpoint(s) verified" in verified.stdout

    unsigned = bastion("checkpoint", cwd=trail_dir)
    assert "UNSIGNED (set BASTION_AUDIT_KEY" in unsigned.stdout
    without_key = bastion("verify", cwd=trail_dir)
    assert without_key.returncode == 0 and "note: checkpoint at event 11: signed" in without_key.stdout


def test_prune_keeps_the_rest_verifiable(trail_dir: Path) -> None:
    pruned = bastion("prune", "--before", "2026-06-01T15:00", cwd=trail_dir, key=KEY)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 5 events up to event 5")

    verified = bastion("verify", cwd=trail_dir, key=KEY)
    assert verified.returncode == 0, verified.stdout
    assert "6 events verified (sequence 6 to 11), starting from the checkpoint of event 5" in verified.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("prune",), "give --before DATE, or set state.audit_retention_days"),
        (("prune", "--before", "2999-01-01"), "--before is in the future"),
        (("report", "--since", "2026-07-01", "--until", "2026-06-01"), "--until must be after --since"),
    ],
)
def test_bad_arguments_are_one_line(trail_dir: Path, args: tuple[str, ...], message: str) -> None:
    result = bastion(*args, cwd=trail_dir)
    assert result.returncode == 2
    assert result.stderr.strip() == f"bastion: {message}" or message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_short_key_is_one_line(trail_dir: Path) -> None:
    result = bastion("verify", cwd=trail_dir, key="too-short")
    assert result.returncode == 2 and "at least 32 characters" in result.stderr


@pytest.mark.parametrize("action", ["verify", "report", "export", "checkpoint", "prune"])
def test_an_unreachable_store_fails_with_one_line(tmp_path: Path, action: str) -> None:
    write_config(tmp_path, "postgresql://auditor:s3cret@127.0.0.1:1/state")
    result = (
        bastion(action, "--before", "2026-01-01", cwd=tmp_path) if action == "prune" else bastion(action, cwd=tmp_path)
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bastion: cannot connect to the PostgreSQL state store")
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


async def test_the_commands_work_on_a_postgres_store(scratch_db: ScratchDatabase, tmp_path: Path) -> None:
    dsn = await new_pg_schema(scratch_db)
    write_config(tmp_path, dsn)
    store = await open_state_store(dsn, base_dir=str(tmp_path))
    try:
        for n in range(1, 6):
            await store.append_audit(call(n))
    finally:
        await store.close()

    assert bastion("checkpoint", cwd=tmp_path, key=KEY).returncode == 0
    assert bastion("prune", "--before", "2026-06-01T12:30", cwd=tmp_path, key=KEY).returncode == 0
    verified = bastion("verify", cwd=tmp_path, key=KEY)
    assert verified.returncode == 0 and "starting from the checkpoint of event 3" in verified.stdout
    exported = bastion("export", "--format", "csv", cwd=tmp_path)
    assert exported.returncode == 0 and len(exported.stdout.strip().splitlines()) == 1 + 4
    report = bastion("report", "--out", "out/r.html", cwd=tmp_path, key=KEY)
    assert report.returncode == 0, report.stderr
    assert "Audit trail verified" in (tmp_path / "out" / "r.html").read_text()
