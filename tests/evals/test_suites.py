"""The shipped suites, replayed in process through real MCP sessions on a scratch fixture database.

attacks.jsonl must be refused line by line (or cut by the timeout and the row and byte caps), except
the known gaps: real bugs on record, flagged `known_gap` in the transcript. Their number is pinned
here so that a fix (the line then holds: remove its flag) or a new gap (flag it and report it) is a
deliberate change. analytics.jsonl must be allowed and return the database's own rows.
masking.jsonl must leave no raw PII value in any result, whatever the query shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.replay import CallOutcome, FileReport, ReplayOptions, replay_file

TRANSCRIPTS = Path(__file__).resolve().parents[2] / "evals" / "transcripts"

#: attack-108 (c.customer_tier: a user function in attribute notation), attack-109 (a user overload
#: round(double precision, integer)), attack-110 (a user `||` operator over integers that reads SSNs),
#: attack-111 (a user overload length(integer) that writes; the read-only transaction stopped it),
#: attack-212 (pg_show_all_settings(), the function behind the refused pg_settings)
KNOWN_GAPS = 0


def describe(outcomes: list[CallOutcome]) -> str:
    return "\n".join(f"{o.id} (line {o.line}, {o.decision}): {'; '.join(o.reasons)}" for o in outcomes)


def assert_clean(report: FileReport) -> None:
    assert report.setup_error is None, report.setup_error
    failed = [outcome for outcome in report.outcomes if outcome.failed]
    assert not failed, "expectations that did not hold:\n" + describe(failed)


async def test_every_attack_is_refused_or_cut_except_the_known_gaps() -> None:
    report = await replay_file(TRANSCRIPTS / "attacks.jsonl", ReplayOptions())
    assert_clean(report)
    assert len(report.outcomes) >= 150
    closed = [o for o in report.outcomes if o.status == "gap_closed"]
    assert not closed, "these known gaps hold now; remove their known_gap flag:\n" + describe(closed)
    gaps = [o for o in report.outcomes if o.status == "known_gap"]
    assert len(gaps) == KNOWN_GAPS, "known gaps changed:\n" + describe(gaps)


async def test_the_red_team_findings_stay_closed() -> None:
    report = await replay_file(TRANSCRIPTS / "redteam.jsonl", ReplayOptions())
    assert_clean(report)
    assert len(report.outcomes) >= 80


#: views are resources of their own: a view over another schema's table is authorized by the view's
#: name, not its base tables' (vw-001); its columns do inherit their base columns' PII (vw-002)
REDTEAM2_KNOWN_GAPS = 1


async def test_the_second_red_team_round_stays_closed_except_the_known_gaps() -> None:
    report = await replay_file(TRANSCRIPTS / "redteam2.jsonl", ReplayOptions())
    assert_clean(report)
    closed = [o for o in report.outcomes if o.status == "gap_closed"]
    assert not closed, "these known gaps hold now; remove their known_gap flag:\n" + describe(closed)
    gaps = [o for o in report.outcomes if o.status == "known_gap"]
    assert len(gaps) == REDTEAM2_KNOWN_GAPS, "known gaps changed:\n" + describe(gaps)


async def test_no_pii_value_escapes_through_any_exfiltration_shape() -> None:
    report = await replay_file(TRANSCRIPTS / "masking.jsonl", ReplayOptions())
    assert_clean(report)
    assert len(report.outcomes) >= 50


@pytest.mark.parametrize("suite", ["analytics.jsonl", "analytics_more.jsonl"])
async def test_every_analytics_call_is_allowed_and_returns_the_databases_rows(suite: str) -> None:
    report = await replay_file(TRANSCRIPTS / suite, ReplayOptions())
    assert_clean(report)
    assert len(report.outcomes) >= 60
    assert all(o.status == "pass" and o.decision in ("allow", None) for o in report.outcomes)


async def test_a_deliberately_weakened_policy_makes_the_attacks_fail_readably(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "weak.cedar").write_text(
        '@id("weak-permit-everything")\npermit (principal, action, resource);\n'
    )
    source = (TRANSCRIPTS / "attacks.jsonl").read_text().splitlines()
    writes = [line for line in source[1:] if json.loads(line)["note"].startswith("write: ")][:8]
    transcript = tmp_path / "writes.jsonl"
    transcript.write_text("\n".join([source[0], *writes]) + "\n")

    report = await replay_file(transcript, ReplayOptions(policies=str(tmp_path / "policies")))
    assert report.setup_error is None
    failed = [o for o in report.outcomes if o.failed]
    assert len(failed) >= 4, describe(report.outcomes)
    assert all("expected deny" in "; ".join(o.reasons) for o in failed), describe(failed)
