"""The auditor's report: built from a real trail, rendered in headless Chromium when it is installed.

The screenshots and the PDF are kept under `artifacts/` (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.audit.checkpoint import AuditKey
from server.audit.report import build_report
from server.audit.report_html import render_report
from server.audit.retention import write_checkpoint
from server.store import StateStore, open_state_store
from tests.audit.conftest import KEY, call

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
JUNE = datetime(2026, 6, 1, tzinfo=UTC)
EMAIL = "public.customers.email"


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def render_in_chromium(html: Path, name: str, *, height: int = 2400) -> subprocess.CompletedProcess[str]:
    """Screenshot and PDF of the page into artifacts/, with everything that could reach a network off."""
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the report was not rendered")
    ARTIFACTS.mkdir(exist_ok=True)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    with tempfile.TemporaryDirectory() as profile:
        shot = subprocess.run(
            [
                browser,
                *flags,
                f"--user-data-dir={profile}",
                f"--screenshot={ARTIFACTS / (name + '.png')}",
                f"--window-size=1280,{height}",
                html.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *flags,
                f"--user-data-dir={profile}",
                "--no-pdf-header-footer",
                f"--print-to-pdf={ARTIFACTS / (name + '.pdf')}",
                html.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    return shot


async def month_of_calls(store: StateStore) -> None:
    """June: the support bot reads customer emails in the clear, the analyst only masked; the ETL job
    writes with Bob's approval, once without; some reads are refused."""
    moment = JUNE + timedelta(hours=9)
    n = 0
    for day in range(30):
        for agent in ("support-bot", "analyst-bot"):
            n += 1
            masked = (EMAIL,) if agent == "analyst-bot" else ()
            await store.append_audit(
                call(n, time=moment + timedelta(days=day), agent_id=agent, masked_columns=masked, row_count=5)
            )
        if day % 7 == 0:
            n += 1
            await store.append_audit(
                call(
                    n,
                    time=moment + timedelta(days=day, hours=1),
                    agent_id="etl-bot",
                    statement_kind="update",
                    tables=("public.orders",),
                    pii_columns=(),
                    masked_columns=(),
                    arguments={"sql": "UPDATE orders SET status = 'shipped' WHERE id < 100"},
                    approval_id=f"apr-{day}" if day else None,
                    approver="bob@example.com" if day else None,
                    row_count=99,
                )
            )
        if day % 7 == 0 and day:
            n += 1  # Bob's decision on the approval the write below ran under (issue 6's event)
            await store.append_audit(
                call(
                    n,
                    time=moment + timedelta(days=day, minutes=30),
                    tool="(approve)",
                    agent_id="etl-bot",
                    statement_kind="update",
                    tables=("public.orders",),
                    pii_columns=(),
                    masked_columns=(),
                    arguments={
                        "approval_id": f"apr-{day}",
                        "sql": "UPDATE orders SET status = 'shipped' WHERE id < 100",
                    },
                    approval_id=f"apr-{day}",
                    approver="bob@example.com",
                    reasons=("approved by bob@example.com: nightly fix-up",),
                    row_count=None,
                )
            )
        if day % 5 == 0:
            n += 1
            await store.append_audit(
                call(
                    n,
                    time=moment + timedelta(days=day, hours=2),
                    agent_id="analyst-bot",
                    decision="deny",
                    statement_kind="ddl",
                    arguments={"sql": "DROP TABLE customers <script>alert(1)</script>"},
                    reasons=("DROP TABLE is never allowed through Bastion",),
                    policy_ids=("default-no-ddl",),
                    pii_columns=(),
                    masked_columns=(),
                    row_count=None,
                )
            )


@pytest.fixture
async def june(tmp_path: Path) -> StateStore:
    store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    await month_of_calls(store)
    await write_checkpoint(store, AuditKey.from_text(KEY))
    return store


async def test_the_report_answers_who_saw_emails_and_who_approved_writes(june: StateStore, tmp_path: Path) -> None:
    try:
        report = await build_report(june, JUNE, JUNE + timedelta(days=30), AuditKey.from_text(KEY))
    finally:
        await june.close()
    html = render_report(report)
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")

    assert report.calls == 60 + 5 + 6 and report.verification.intact
    assert report.verification.signed_checkpoints == 1
    seen = {(p.agent, p.unmasked_calls, p.masked_calls) for p in report.pii.values() if p.column.endswith(EMAIL)}
    assert seen == {("support-bot", 30, 0), ("analyst-bot", 0, 30)}
    text = re.sub(r"<[^>]+>", "", html)
    assert f"main: {EMAIL} was seen unmasked by support-bot." in text
    assert "5 write(s) ran, approved by bob@example.com; 1 without a recorded approver." in text
    assert "4 approval decision(s) by bob@example.com: 4 approved." in text
    assert "Decisions by approvers" in text and "approved by bob@example.com: nightly fix-up" in text
    assert text.count("DROP TABLE is never allowed through Bastion") == 6
    assert "Audit trail verified" in text and "1 signature(s) verified" in text
    # self-contained and safe: no script, nothing fetched, agent text escaped
    assert "<script" not in html.lower().replace("&lt;script", "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html

    result = render_in_chromium(page, "audit-report", height=2600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (ARTIFACTS / "audit-report.png").stat().st_size > 20_000
    assert (ARTIFACTS / "audit-report.pdf").stat().st_size > 10_000


async def test_a_period_with_no_events_says_so(june: StateStore, tmp_path: Path) -> None:
    try:
        report = await build_report(june, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC))
    finally:
        await june.close()
    html = render_report(report)

    assert report.empty
    assert "No tool calls were recorded in this period (2025-01-01 00:00 — 2025-02-01 00:00 UTC)" in html
    page = tmp_path / "empty.html"
    page.write_text(html, encoding="utf-8")
    assert render_in_chromium(page, "audit-report-empty", height=1100).returncode == 0


async def test_a_broken_chain_makes_the_report_say_so_loudly(tmp_path: Path) -> None:
    store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        await month_of_calls(store)
        await store.close()
        import sqlite3

        conn = sqlite3.connect(tmp_path / "state.db")
        conn.execute("UPDATE audit_events SET record = replace(record, 'support-bot', 'nobody') WHERE sequence = 11")
        conn.commit()
        conn.close()
        store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
        report = await build_report(store, JUNE, JUNE + timedelta(days=30))
    finally:
        await store.close()
    html = render_report(report)

    assert not report.verification.intact
    assert "Audit trail BROKEN" in html and "at sequence 11" in html
    page = tmp_path / "broken.html"
    page.write_text(html, encoding="utf-8")
    assert render_in_chromium(page, "audit-report-broken", height=900).returncode == 0


def test_the_artifacts_folder_is_ignored_by_git() -> None:
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "artifacts/" in ignored or os.environ.get("CI") is None


async def test_a_record_edited_into_garbage_is_reported_not_fatal(tmp_path: Path) -> None:
    store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    await month_of_calls(store)
    await store.close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute('UPDATE audit_events SET record = \'{"not": "an event"}\' WHERE sequence IN (3, 40)')
    conn.commit()
    conn.close()
    store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        report = await build_report(store, JUNE, JUNE + timedelta(days=30))
    finally:
        await store.close()
    html = render_report(report)

    assert report.unreadable == [3, 40] and report.calls == 71 - 2
    assert report.verification.broken is not None and report.verification.broken.sequence == 3
    assert "2 record(s) in this period could not be read" in html and "sequence 3, 40" in html
