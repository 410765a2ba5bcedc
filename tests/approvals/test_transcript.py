"""evals/transcripts/approvals.jsonl, replayed through real MCP sessions on a scratch fixture
database: bogus approval ids, requests no approval could help and out-of-range waits are refused
line by line, and no write runs (a transcript has no human to approve anything)."""

from __future__ import annotations

from pathlib import Path

from evals.replay import ReplayOptions, replay_file

TRANSCRIPT = Path(__file__).resolve().parents[2] / "evals" / "transcripts" / "approvals.jsonl"


async def test_every_line_of_the_approvals_suite_holds() -> None:
    report = await replay_file(TRANSCRIPT, ReplayOptions())
    assert report.setup_error is None, report.setup_error
    failed = [o for o in report.outcomes if o.failed]
    assert not failed, "\n".join(f"{o.id} (line {o.line}, {o.decision}): {'; '.join(o.reasons)}" for o in failed)
    assert len(report.outcomes) >= 20
    assert not [o for o in report.outcomes if o.status in ("known_gap", "gap_closed")]
