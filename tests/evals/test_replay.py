"""`bastion eval replay` as a user runs it: bad input reported with line numbers, a non-zero exit on a
broken expectation, JUnit XML that parses, and the configured database used as given."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import server.cli
from server.cli import main
from tests.conftest import ScratchDatabase

TINY_FIXTURE = """
CREATE TABLE items (id integer PRIMARY KEY, label text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 30) AS i;
"""


@pytest.fixture(autouse=True)
def eval_command(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`bastion eval` whether or not server/cli.py lists the module yet."""
    if "server.eval_cli" not in server.cli._COMMAND_MODULES:
        monkeypatch.setattr(server.cli, "_COMMAND_MODULES", (*server.cli._COMMAND_MODULES, "server.eval_cli"))
    yield


def write_transcript(folder: Path, *lines: object) -> Path:
    (folder / "tiny.sql").write_text(TINY_FIXTURE)
    path = folder / "calls.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


HEADER = {"header": {"fixture": "tiny.sql", "agent": {"id": "eval-bot", "groups": ["analytics"]}}}
GOOD = {
    "id": "good",
    "tool": "query",
    "arguments": {"sql": "SELECT id, label FROM items WHERE id <= 2 ORDER BY id", "purpose": "test"},
    "expect": {"decision": "allow", "rows": [[1, "item 1"], [2, "item 2"]], "rows_equal_sql": True},
}


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["eval", "replay", *args])
    return code, capsys.readouterr().out


def test_bad_lines_are_reported_with_their_numbers_and_the_rest_of_the_file_still_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_transcript(
        tmp_path,
        HEADER,
        GOOD,
        '{"id": "broken", "tool": "query", "arguments": {',
        {"id": "typo", "tool": "qurey", "arguments": {"sql": "SELECT 1"}},
        {"id": "bad-key", "tool": "query", "arguments": {"sql": "SELECT 1"}, "expect": {"decison": "deny"}},
        {"id": "last", "tool": "query", "arguments": {"sql": "DROP TABLE items"}, "expect": {"decision": "deny"}},
    )
    code, out = replay(capsys, str(path))
    assert code == 1
    assert "line 3: not valid JSON" in out
    typo_row = next(row for row in out.splitlines() if row.strip().startswith("typo "))
    assert "unknown tool 'qurey' (the server offers:" in typo_row and "query" in typo_row
    assert "line 5: unknown key in expect: decison" in out
    good_row = next(row for row in out.splitlines() if row.strip().startswith("good "))
    last_row = next(row for row in out.splitlines() if row.strip().startswith("last "))
    assert "✓" in good_row and "allow" in good_row
    assert "✓" in last_row and "deny" in last_row
    assert "5 calls, 2 passed, 0 failed, 3 invalid" in out
    assert "Traceback" not in out


def test_a_broken_expectation_exits_non_zero_and_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weakened = {
        "id": "drop",
        "tool": "query",
        "arguments": {"sql": "DROP TABLE items"},
        "expect": {"decision": "allow"},
    }
    code, out = replay(capsys, str(write_transcript(tmp_path, HEADER, GOOD, weakened)))
    assert code == 1
    drop_row = next(row for row in out.splitlines() if row.strip().startswith("drop "))
    assert "✗" in drop_row and "decision deny, expected allow" in drop_row
    assert "2 calls, 1 passed, 1 failed" in out


def test_junit_output_parses_and_counts_each_outcome(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_transcript(
        tmp_path,
        HEADER,
        GOOD,
        {"id": "fails", "tool": "query", "arguments": {"sql": "SELECT 1"}, "expect": {"row_count": 5}},
        {
            "id": "gap",
            "tool": "query",
            "arguments": {"sql": "SELECT 1"},
            "expect": {"decision": "deny"},
            "known_gap": True,
        },
        "not json",
    )
    junit = tmp_path / "report.xml"
    code, _ = replay(capsys, str(path), "--junit", str(junit))
    assert code == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "calls"
    counts = {key: suite.get(key) for key in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": "4", "failures": "1", "errors": "1", "skipped": "1"}
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert set(cases) == {"good", "fails", "gap", "line-5"}
    failure = cases["fails"].find("failure")
    assert failure is not None and "row_count 1, expected 5" in (failure.get("message") or "")


def test_a_known_gap_is_listed_without_failing_and_says_when_it_holds_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    still_open = {"id": "open", "tool": "query", "arguments": {"sql": "SELECT 1"}, "expect": {"decision": "deny"}}
    fixed = {"id": "fixed", "tool": "query", "arguments": {"sql": "DROP TABLE items"}, "expect": {"decision": "deny"}}
    path = write_transcript(tmp_path, HEADER, {**still_open, "known_gap": True}, {**fixed, "known_gap": True})
    code, out = replay(capsys, str(path))
    assert code == 0
    assert "1 known gaps" in out and "remove known_gap" in out


def test_a_missing_fixture_is_one_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_text(json.dumps({"header": {"fixture": "nope.sql"}}) + "\n" + json.dumps(GOOD) + "\n")
    code, out = replay(capsys, str(path))
    assert code == 1
    assert "could not replay: fixture 'nope.sql' not found" in out


async def test_a_config_is_used_as_given_and_the_prompt_context_reaches_the_audit_trail(
    scratch_db: ScratchDatabase, tmp_path: Path
) -> None:
    import asyncpg

    from evals.replay import ReplayOptions, replay_file
    from server.config import load_config
    from server.store import open_state_store

    conn = await asyncpg.connect(scratch_db.app_dsn)
    try:
        await conn.execute(TINY_FIXTURE)
    finally:
        await conn.close()
    config = tmp_path / "bastion.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "databases": {"main": {"dsn": scratch_db.app_dsn, "max_rows": 10}},
                "state": {"dsn": f"sqlite:///{tmp_path / 'state.db'}"},
            }
        )
    )
    calls = tmp_path / "calls.jsonl"
    call = {
        **GOOD,
        "arguments": {"sql": GOOD["arguments"]["sql"]},  # purpose comes from the context
        "agent": {"id": "replayed-bot", "groups": ["analytics"]},
        "context": {"conversation_id": "conv-7", "user_prompt": "list two items", "purpose": "checking"},
    }
    capped = {"id": "capped", "tool": "query", "arguments": {"sql": "SELECT id FROM items ORDER BY id"}}
    capped["expect"] = {"truncated": True, "row_count": 10, "rows_equal_sql": True}
    calls.write_text(json.dumps(call) + "\n" + json.dumps(capped) + "\n")

    report = await replay_file(calls, ReplayOptions(config_path=str(config)))
    assert report.setup_error is None and [o.status for o in report.outcomes] == ["pass", "pass"], report.outcomes

    store = await open_state_store(load_config(config).state.dsn, base_dir=str(tmp_path))
    try:
        events = await store.last_audit_events(10)
    finally:
        await store.close()
    by_id = {e.event.request_meta.get("bastion/eval_call_id"): e.event for e in events if e.event.tool == "query"}
    assert by_id["capped"].agent_id == "eval-agent"  # the default agent of a transcript without a header
    first = by_id["good"]
    assert first.agent_id == "replayed-bot" and first.groups == ("analytics",)
    assert first.request_meta["bastion/conversation_id"] == "conv-7"
    assert first.request_meta["bastion/user_prompt_excerpt"] == "list two items"
    assert first.purpose == "checking"
