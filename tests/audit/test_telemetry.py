"""OpenTelemetry: spans and metrics captured with the SDK's in-memory exporter and reader.

The pipeline is run here through `traced_run`, which is `server.pipeline.run` with this test's telemetry
(see docs/audit.md), against the real shop database; `test_a_call_over_mcp_is_one_span_with_stages`
drives a real MCP session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from server.app import RuntimeHolder
from server.config import BastionConfig, TelemetryConfig, parse_config
from server.errors import BastionError
from server.identity.agent import ClientInfo, TransportInfo
from server.pipeline import DESCRIBE, QUERY, CallState, Stage, ToolCall, run
from server.runtime import Runtime
from server.telemetry import Telemetry, configure_telemetry, db_system, normalized_sql
from tests.conftest import ScratchDatabase
from tests.shop import create_shop

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


async def traced_run(runtime: Runtime, call: ToolCall, stages: tuple[Stage, ...], telemetry: Telemetry) -> CallState:
    """`server.pipeline.run` itself, with this test's telemetry in the runtime."""
    runtime.telemetry = telemetry
    return await run(runtime, call, stages)


def tool_call(
    sql: str | None, *, tool: str = "query", meta: dict[str, Any] | None = None, **arguments: Any
) -> ToolCall:
    return ToolCall(
        tool=tool,
        arguments={"sql": sql, **arguments} if sql else arguments,
        transport=TransportInfo("stdio", "session-9", ClientInfo("claude-code", "2.1"), request_meta=meta or {}),
        sql=sql,
        purpose=arguments.get("purpose"),
    )


@pytest.fixture(scope="module")
async def shop(scratch_db: ScratchDatabase) -> ScratchDatabase:
    await create_shop(scratch_db.app_dsn)
    return scratch_db


def config_for(db: ScratchDatabase, state_dir: Path) -> BastionConfig:
    return parse_config(
        {
            "databases": {"main": {"dsn": db.app_dsn, "max_rows": 100}},
            "state": {"dsn": "sqlite:///state.db"},
            "identity": {"stdio_agent": "analyst-bot"},
        },
        base_dir=str(state_dir),
    )


@pytest.fixture
async def runtime(shop: ScratchDatabase, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with RuntimeHolder(config_for(shop, tmp_path), "stdio").use() as opened:
        yield opened


@pytest.fixture
def captured(runtime: Runtime) -> Iterator[tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]]:
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = configure_telemetry(
        TelemetryConfig(), databases=runtime.config.databases, span_exporter=spans, metric_reader=metrics
    )
    yield telemetry, spans, metrics
    telemetry.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


async def test_a_query_is_one_span_with_a_child_per_stage_and_the_conventions(
    runtime: Runtime, captured: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    telemetry, spans, _ = captured
    call = tool_call("SELECT email FROM customers WHERE id = 42 AND country = 'DE'", purpose="support ticket 7")

    await traced_run(runtime, call, QUERY, telemetry)

    named = by_name(spans.get_finished_spans())
    root = named["execute_tool query"]
    assert [s.name for s in spans.get_finished_spans() if s is not root] == [*(s.__name__ for s in QUERY), "audit"]
    assert all(
        s.parent is not None and s.parent.span_id == root.context.span_id for s in named.values() if s is not root
    )
    attributes = dict(root.attributes or {})
    assert attributes["gen_ai.tool.name"] == "query"
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["mcp.session.id"] == "session-9"
    assert attributes["db.system.name"] == "postgresql"
    assert attributes["db.namespace"] == "main"
    assert attributes["db.collection.name"] == "public.customers"
    assert attributes["db.operation.name"] == "SELECT"
    assert attributes["db.response.returned_rows"] == 0
    assert attributes["bastion.decision"] == "allow"
    assert "default-pii-needs-purpose" not in attributes["bastion.policy_ids"]
    assert attributes["bastion.masked_columns"] == ("public.customers.email",)
    query_text = attributes["db.query.text"]
    assert "42" not in query_text and "DE" not in query_text and query_text.count("?") == 2
    assert root.kind is SpanKind.INTERNAL


async def test_the_client_traceparent_is_continued(
    runtime: Runtime, captured: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    telemetry, spans, _ = captured

    await traced_run(runtime, tool_call(None, tool="describe", meta={"traceparent": TRACEPARENT}), DESCRIBE, telemetry)

    root = by_name(spans.get_finished_spans())["execute_tool describe"]
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID
    assert root.attributes is not None and root.attributes["db.system.name"] == "postgresql"


async def test_a_malformed_traceparent_starts_a_new_trace(
    runtime: Runtime, captured: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    telemetry, spans, _ = captured

    await traced_run(
        runtime, tool_call(None, tool="describe", meta={"traceparent": "00-zz-yy-01"}), DESCRIBE, telemetry
    )

    root = by_name(spans.get_finished_spans())["execute_tool describe"]
    assert root.parent is None


async def test_a_refused_call_carries_its_decision_and_error_type(
    runtime: Runtime, captured: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    telemetry, spans, _ = captured

    with pytest.raises(BastionError):
        await traced_run(runtime, tool_call("DROP TABLE customers", purpose="cleanup"), QUERY, telemetry)

    named = by_name(spans.get_finished_spans())
    attributes = dict(named["execute_tool query"].attributes or {})
    assert attributes["bastion.decision"] == "deny"
    assert attributes["error.type"] in {"denied", "sql_rejected"}
    assert attributes["db.operation.name"] == "DDL"
    refused_stage = next(s for s in named.values() if s.name in {"analyze", "enforce"} and s.attributes)
    assert refused_stage.attributes is not None and "error.type" in refused_stage.attributes


async def test_unparsable_sql_never_reaches_a_span(
    runtime: Runtime, captured: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    telemetry, spans, _ = captured

    with pytest.raises(BastionError):
        await traced_run(runtime, tool_call("SELEC secret_value_123 FROM x", purpose="p"), QUERY, telemetry)

    for span in spans.get_finished_spans():
        assert "secret_value_123" not in str(dict(span.attributes or {}))


async def test_metrics_count_calls_by_decision_and_tool_and_time_the_stages(
    runtime: Runtime, captured: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    telemetry, _, reader = captured
    await traced_run(runtime, tool_call("SELECT email FROM customers LIMIT 3", purpose="p"), QUERY, telemetry)
    await traced_run(runtime, tool_call("SELECT id FROM customers LIMIT 5", purpose="p"), QUERY, telemetry)
    with pytest.raises(BastionError):
        await traced_run(runtime, tool_call("DELETE FROM customers", purpose="p"), QUERY, telemetry)

    data = reader.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    calls = {
        (p.attributes["gen_ai.tool.name"], p.attributes["bastion.decision"]): p.value
        for p in metrics["bastion.tool.calls"].data.data_points
    }
    assert calls[("query", "allow")] == 2
    assert sum(v for (tool, decision), v in calls.items() if decision != "allow") == 1
    stages = {p.attributes["bastion.stage"] for p in metrics["bastion.stage.duration"].data.data_points}
    assert {"analyze", "authorize", "execute", "audit"} <= stages
    rows = metrics["db.client.response.returned_rows"].data.data_points
    assert sum(p.sum for p in rows) == 8
    masked = metrics["bastion.masked_cells"].data.data_points
    assert sum(p.value for p in masked) == 3
    assert "mcp.server.operation.duration" in metrics


async def test_an_sdk_tools_call_span_is_enriched_not_duplicated(
    runtime: Runtime, captured: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    telemetry, spans, _ = captured
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    sdk_tracer = provider.get_tracer("mcp-python-sdk")

    with sdk_tracer.start_as_current_span(
        "tools/call describe", kind=SpanKind.SERVER, attributes={"mcp.method.name": "tools/call"}
    ):
        await traced_run(runtime, tool_call(None, tool="describe"), DESCRIBE, telemetry)

    named = by_name(spans.get_finished_spans())
    assert "execute_tool describe" not in named
    outer = named["tools/call describe"]
    assert outer.attributes is not None and outer.attributes["bastion.decision"] == "allow"
    assert outer.attributes["gen_ai.tool.name"] == "describe"
    assert named["identify"].parent is not None and named["identify"].parent.span_id == outer.context.span_id


def test_off_is_the_default_and_costs_nothing() -> None:
    telemetry = configure_telemetry(TelemetryConfig())
    call = tool_call("SELECT 1")

    assert not telemetry.enabled
    with telemetry.call_span(call) as span, telemetry.stage_span("analyze"):
        pass
    assert telemetry.call_span(call) is telemetry.call_span(call)  # shared no-op objects, no allocation
    telemetry.record_call(span, CallState(call=call), None)  # type: ignore[arg-type]
    telemetry.shutdown()


def test_console_telemetry_writes_to_stderr_not_the_stdio_wire(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = configure_telemetry(TelemetryConfig(exporter="console"), install_global=False)
    with telemetry.call_span(tool_call(None, tool="describe")):
        pass
    telemetry.shutdown()

    out, err = capsys.readouterr()
    assert out == "" and "execute_tool describe" in err


def test_otlp_builds_http_exporters_for_the_endpoint() -> None:
    telemetry = configure_telemetry(
        TelemetryConfig(exporter="otlp", otlp_endpoint="http://127.0.0.1:9/"), install_global=False
    )
    try:
        processor = telemetry._tracer_provider._active_span_processor._span_processors[0]  # type: ignore[attr-defined]
        exporter = processor._batch_processor._exporter
        assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize(
    ("dsn", "system"),
    [("postgresql://u@h/db", "postgresql"), ("postgres://h/db", "postgresql"), ("sqlite:///x.db", "sqlite")],
)
def test_database_systems_use_the_convention_names(dsn: str, system: str) -> None:
    assert db_system(dsn) == system


# --- end to end, once server.pipeline.run is wired ------------------------------------------------


def _pipeline_is_wired() -> bool:
    return "telemetry" in getattr(Runtime, "__dataclass_fields__", {})


@pytest.mark.skipif(not _pipeline_is_wired(), reason="server.pipeline.run is not wired to server/telemetry.py yet")
async def test_a_call_over_mcp_is_one_span_with_stages(
    shop: ScratchDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mcp.shared._otel as sdk_otel
    from mcp import Client

    from server.app import build_server

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(sdk_otel, "_tracer", provider.get_tracer("mcp-python-sdk"))
    config = config_for(shop, tmp_path)
    server = build_server(config, transport="memory")
    async with Client(server, mode="legacy") as client:
        runtime = server.holder.runtime  # type: ignore[attr-defined]
        runtime.telemetry = configure_telemetry(
            TelemetryConfig(), databases=config.databases, span_exporter=spans, install_global=False
        )
        result = await client.call_tool(
            "query",
            {"sql": "SELECT email FROM customers WHERE id = 7", "purpose": "ticket"},
            meta={"traceparent": TRACEPARENT, "bastion/conversation_id": "conv-1"},
        )
        assert not result.is_error

    named = by_name(spans.get_finished_spans())
    outer = named["tools/call query"]
    assert "execute_tool query" not in named
    attributes = dict(outer.attributes or {})
    assert attributes["bastion.decision"] == "allow"
    assert attributes["db.collection.name"] == "public.customers"
    assert attributes["mcp.session.id"]
    client_span = named["MCP send tools/call query"]  # the SDK's client puts its own traceparent in _meta
    assert outer.parent is not None and outer.parent.span_id == client_span.context.span_id
    assert outer.context.trace_id == client_span.context.trace_id
    assert named["execute"].parent is not None and named["execute"].parent.span_id == outer.context.span_id


@pytest.mark.parametrize(
    ("sql", "secrets"),
    [
        ("SELECT * FROM customers WHERE email = 'ann@example.com' AND id IN (1, 2, -3) LIMIT 10", ["ann@", "-3"]),
        (
            "SELECT $$secret-1$$, E'\\x41', x'ff', B'101', N'nat-2', U&'uni-3' FROM t",
            ["secret-1", "ff", "nat-2", "uni-3"],
        ),
        ("SELECT id FROM t WHERE created_at > DATE '2020-01-01' + INTERVAL '7 days'", ["2020", "7"]),
    ],
)
def test_query_text_in_spans_has_no_literal(sql: str, secrets: list[str]) -> None:
    from server.sql.analyzer import analyze

    text = normalized_sql(CallState(call=tool_call(sql), statement=analyze(sql, "postgres")))

    assert text is not None and "?" in text
    for secret in secrets:
        assert secret not in text, text
