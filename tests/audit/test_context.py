"""Prompt context: the client's `_meta` kept with each event, capped, never breaking the call."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from mcp import Client

from server.app import build_server
from server.audit.context import MAX_META_BYTES, TRUNCATED_KEY, conversation_id, prompt_context
from server.store import open_state_store
from tests.audit.test_telemetry import config_for
from tests.conftest import ScratchDatabase
from tests.shop import create_shop


def test_protocol_keys_are_dropped_and_the_rest_kept() -> None:
    meta = {
        "io.modelcontextprotocol/related-task": {"taskId": "t"},
        "progressToken": 7,
        "bastion/conversation_id": "conv-1",
        "bastion/prompt": "Which customers churned last week?",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "vendor.example/run": {"step": 3},
    }

    kept = prompt_context(meta)

    assert kept == {k: v for k, v in meta.items() if k not in ("io.modelcontextprotocol/related-task", "progressToken")}


def test_long_values_are_cut_with_a_marker_per_key() -> None:
    kept = prompt_context({"bastion/user_prompt_excerpt": "x" * 900, "bastion/prompt": "p" * 5000, "other": "o" * 3000})

    assert kept["bastion/user_prompt_excerpt"] == "x" * 500 + "… [400 more characters]"
    assert kept["bastion/prompt"].startswith("p" * 2000) and kept["bastion/prompt"].endswith("[3000 more characters]")
    assert len(kept["other"]) < 1100


def test_values_that_are_not_json_are_kept_as_text() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque-thing"

    kept = prompt_context({"a": Opaque(), "b": {1, 2}, "c": float("nan"), "d": b"bytes", "e": [1, {"x": None}]})

    assert kept["a"] == "opaque-thing"
    assert kept["b"] in ("{1, 2}", "{2, 1}")
    assert kept["c"] == "nan"
    assert kept["d"] == "b'bytes'"
    assert kept["e"] == [1, {"x": None}]
    json.dumps(kept, allow_nan=False)  # what is kept always encodes


def test_an_oversized_meta_keeps_the_known_keys_and_says_what_it_dropped() -> None:
    meta = {f"vendor/key-{i:03}": "v" * 900 for i in range(40)}
    meta["bastion/conversation_id"] = "conv-big"
    meta["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    kept = prompt_context(meta)

    assert len(json.dumps(kept).encode()) <= MAX_META_BYTES
    assert kept["bastion/conversation_id"] == "conv-big" and "traceparent" in kept
    marker = kept[TRUNCATED_KEY]
    assert marker["dropped"] == 40 - sum(1 for k in kept if k.startswith("vendor/"))
    assert marker["dropped_keys"][0].startswith("vendor/key-")


def test_a_meta_that_is_not_a_map_is_replaced_by_a_marker() -> None:
    assert prompt_context(["not", "a", "map"])[TRUNCATED_KEY]  # type: ignore[arg-type]
    assert prompt_context(None) == {}


def test_the_conversation_id_comes_from_its_key() -> None:
    assert conversation_id({"bastion/conversation_id": " conv-9 "}) == "conv-9"
    assert conversation_id({"bastion/conversation_id": 42}) == "42"
    assert conversation_id({"bastion/conversation_id": True}) is None
    assert conversation_id({"bastion/conversation_id": {"x": 1}}) is None
    assert conversation_id({}) is None


async def test_prompt_context_reaches_the_event_through_mcp(scratch_db: ScratchDatabase, tmp_path: Path) -> None:
    await create_shop(scratch_db.app_dsn)
    config = config_for(scratch_db, tmp_path)
    meta = {
        "bastion/conversation_id": "conv-77",
        "bastion/user_prompt_excerpt": "how many customers per country?",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "huge": "z" * 20_000,
    }
    async with Client(build_server(config, transport="memory"), mode="legacy") as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT country, count(*) FROM customers GROUP BY 1", "purpose": "dashboard"}, meta=meta
        )
        assert not result.is_error

    store = await open_state_store(config.state.dsn, base_dir=config.base_dir)
    try:
        (stored,) = [s for s in await store.audit_events() if s.event.tool == "query"]
    finally:
        await store.close()
    event = stored.event
    assert event.conversation_id == "conv-77" and event.purpose == "dashboard"
    assert event.request_meta["bastion/user_prompt_excerpt"] == "how many customers per country?"
    assert len(event.request_meta["huge"]) < 1_100
    assert event.client_name and event.session_id
    assert event.time <= datetime.now(UTC)
