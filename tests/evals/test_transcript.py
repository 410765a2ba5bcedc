"""The transcript format: strict parsing with line numbers, and what each expectation means."""

from __future__ import annotations

import json

import pytest

from evals.transcript import Expectation, Observed, Reference, TranscriptError, check, expand, parse_text


def lines(*objects: object) -> str:
    return "\n".join(item if isinstance(item, str) else json.dumps(item) for item in objects)


def test_a_header_sets_the_fixture_and_defaults_for_every_call() -> None:
    text = lines(
        {"header": {"fixture": "shop.sql", "agent": {"id": "bot", "groups": ["g"]}, "context": {"purpose": "p"}}},
        {"id": "a", "tool": "query", "arguments": {"sql": "SELECT 1"}},
        {"tool": "describe", "agent": "other", "context": {"conversation_id": "c"}},
    )
    transcript = parse_text(text)
    assert transcript.problems == ()
    assert transcript.header.fixture == ("shop.sql",)
    first, second = transcript.calls
    assert (first.id, first.agent.id, first.agent.groups, first.context.purpose) == ("a", "bot", ("g",), "p")
    assert (second.id, second.agent.id, second.context.conversation_id, second.context.purpose) == (
        "line-3",
        "other",
        "c",
        "p",
    )


def test_a_malformed_line_is_reported_with_its_number_and_the_rest_still_parses() -> None:
    text = lines(
        {"id": "a", "tool": "query", "arguments": {"sql": "SELECT 1"}},
        '{"id": "b", "tool": "query",',
        "",
        {"id": "c", "tool": "query", "arguments": {"sql": "SELECT 2"}},
    )
    transcript = parse_text(text)
    assert [call.id for call in transcript.calls] == ["a", "c"]
    (problem,) = transcript.problems
    assert problem.line == 2 and "not valid JSON" in problem.message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"tool": "query", "expect": {"decison": "deny"}}, "unknown key in expect: decison"),
        ({"tool": "query", "expectations": {}}, "unknown key in the call: expectations"),
        ({"tool": "query", "agent": {"id": "a", "role": "admin"}}, "unknown key in agent: role"),
        ({"tool": "query", "expect": {"decision": "maybe"}}, "expect.decision must be one of"),
        ({"tool": "query", "expect": {"row_count": -1}}, "non-negative integer"),
        ({"tool": "query", "expect": {"rows": [1, 2]}}, "each a list of values"),
        ({"tool": "query", "known_gap": "yes"}, "known_gap must be true or false"),
        ({"arguments": {}}, "tool must be a non-empty string"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_lines_say_what_is_wrong(line: object, message: str) -> None:
    transcript = parse_text(lines({"id": "ok", "tool": "query"}, line))
    assert [call.id for call in transcript.calls] == ["ok"]
    (problem,) = transcript.problems
    assert problem.line == 2 and message in problem.message, problem.message


def test_the_header_must_come_first_and_ids_must_be_unique() -> None:
    transcript = parse_text(
        lines({"id": "a", "tool": "query"}, {"header": {"fixture": "x.sql"}}, {"id": "a", "tool": "describe"})
    )
    assert [(p.line, p.message) for p in transcript.problems] == [
        (2, "the header must be the first line"),
        (3, "id 'a' is already used on line 1"),
    ]


def test_generated_arguments_expand_to_one_string() -> None:
    value = expand(
        {"sql": {"$concat": ["SELECT ", {"$repeat": "(", "times": 3}, "1", {"$repeat": ")", "times": 3}]}}, "a"
    )
    assert value == {"sql": "SELECT (((1)))"}
    with pytest.raises(TranscriptError, match="more than"):
        expand({"$repeat": "x", "times": 10**9}, "a")
    with pytest.raises(TranscriptError, match="unknown key"):
        expand({"$repeat": "x", "times": 2, "sep": ","}, "a")


def test_a_decision_may_be_any_of_a_list() -> None:
    expect = Expectation(decision=("deny", "approval_required"))
    assert check(expect, Observed(decision="approval_required", error="Needs approval: ...")) == []
    (failure,) = check(expect, Observed(decision="allow", rows=[]))
    assert "decision allow, expected deny or approval_required" in failure


def test_result_expectations_are_checked_against_what_came_back() -> None:
    observed = Observed(
        decision="allow",
        columns=("id", "email"),
        masked_columns=("email",),
        rows=[[1, "email:5f2c"]],
        row_count=1,
        truncated=False,
        everything='{"rows": [[1, "email:5f2c"]]}',
    )
    expect = Expectation(
        decision=("allow",),
        masked_columns=("email",),
        columns=("id", "email"),
        rows=[[1, "email:5f2c"]],
        row_count=1,
        truncated=False,
        not_contains=("ben@example.com",),
    )
    assert check(expect, observed) == []
    failures = check(Expectation(masked_columns=("id",), row_count=2, not_contains=("5F2C",)), observed)
    assert failures == ["the result contains '5F2C'", "not masked: id", "row_count 1, expected 2"]


def test_rows_equal_sql_compares_with_the_database_rows_and_a_prefix_when_truncated() -> None:
    observed = Observed(decision="allow", columns=("n",), rows=[[1], [2]], row_count=2, truncated=True)
    expect = Expectation(rows_equal_sql=True)
    assert check(expect, observed, Reference(columns=("n",), rows=[[1], [2], [3]])) == []
    (failure,) = check(expect, observed, Reference(columns=("n",), rows=[[1], [5], [3]]))
    assert "row 2: got [2], expected [5]" in failure
    (failure,) = check(expect, observed, Reference(error="no database"))
    assert "could not run" in failure


def test_an_error_expectation_on_an_allowed_call_fails_clearly() -> None:
    (failure,) = check(Expectation(error_contains="timeout"), Observed(decision="allow", rows=[]))
    assert failure == "no error, expected one containing 'timeout'"
