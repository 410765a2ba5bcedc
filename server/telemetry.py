"""OpenTelemetry: a span per tool call with a child span per stage, and call metrics.

Off by default (`telemetry.exporter: off`), and then nearly free: `configure_telemetry` returns a
`Telemetry` whose context managers are shared no-op objects and whose `record_call` returns at once.
With `console` (to stderr: stdout is the stdio transport's wire) or `otlp` (OTLP over HTTP to
`telemetry.otlp_endpoint`, or the standard `OTEL_EXPORTER_OTLP_*` variables), the tracer and meter
providers are built here and installed as the process's global ones, so the MCP SDK's own spans go to
the same place.

One span per call, not two. The MCP SDK (2.3, `mcp/server/_otel.py`) already opens a SERVER span
named `tools/call <tool>` around every tool call, continuing the client's `_meta.traceparent`. When
that span is recording, Bastion adds its attributes to it and hangs the stage spans under it. When it
is not (no global provider, or a call that did not come through MCP), Bastion opens its own
`execute_tool <tool>` span, under the current span if there is one, else under the client's
`traceparent` from the call's `_meta` (W3C trace context).

Attributes follow the semantic conventions (`gen_ai.*`, `mcp.*`, `db.*`) plus `bastion.decision`,
`bastion.policy_ids`, `bastion.masked_columns`. The query goes into `db.query.text` only as sqlglot
renders it with every literal replaced by `?`, and only for a statement that was analyzed: a span
never carries a value from the SQL text or from a row.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import server

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter

    from server.audit.event import AuditEvent
    from server.config import DatabaseConfig, TelemetryConfig
    from server.pipeline import CallState, ToolCall

log = logging.getLogger(__name__)

MAX_QUERY_TEXT = 2_000
METRIC_EXPORT_INTERVAL_MS = 30_000
_PROPAGATOR = TraceContextTextMapPropagator()
_NETWORK_TRANSPORTS = {"stdio": "pipe", "http": "tcp", "sse": "tcp"}
_DB_SYSTEMS = {"postgres": "postgresql", "postgresql": "postgresql", "sqlite": "sqlite"}


@dataclass
class CallSpan:
    """The span a call is recorded on, and whether Bastion opened it or enriches the SDK's."""

    span: Span
    owned: bool
    started: float


_NOOP_CALL = CallSpan(trace.INVALID_SPAN, False, 0.0)


class Telemetry:
    """Disabled: every method is a no-op. Subclassed by `_LiveTelemetry` when an exporter is set."""

    enabled = False
    _NULL: contextlib.nullcontext[CallSpan] = contextlib.nullcontext(_NOOP_CALL)
    _NULL_STAGE: contextlib.nullcontext[None] = contextlib.nullcontext()

    def call_span(self, call: ToolCall) -> contextlib.AbstractContextManager[CallSpan]:
        """Around the whole call, audit included."""
        return self._NULL

    def stage_span(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Around one stage; a refusal raised inside marks it with `error.type`."""
        return self._NULL_STAGE

    def record_call(self, span: CallSpan, state: CallState, event: AuditEvent) -> None:
        """Once the event is committed: its outcome on the span, and the metrics."""

    def shutdown(self) -> None:
        """Flush and stop the exporters (the lifespan's exit)."""


def db_system(dsn: str) -> str:
    scheme = dsn.split("://", 1)[0].split("+", 1)[0].lower()
    return _DB_SYSTEMS.get(scheme, scheme)


def normalized_sql(state: CallState) -> str | None:
    """The analyzed statement with every literal replaced by `?`, capped; None before analysis."""
    statement = state.statement
    if statement is None:
        return None
    from sqlglot import exp

    constants = (
        exp.Literal,
        exp.RawString,
        exp.ByteString,
        exp.HexString,
        exp.BitString,
        exp.National,
        exp.UnicodeString,
    )

    def placeholder(node: exp.Expression) -> exp.Expression:
        # a bare `?` in every dialect (a Placeholder would print as %s for PostgreSQL)
        return exp.Var(this="?") if isinstance(node, constants) else node

    try:
        text = statement.ast.copy().transform(placeholder).sql(dialect=statement.dialect)
    except Exception:  # rendering is best effort; never the raw text instead
        return None
    return text if len(text) <= MAX_QUERY_TEXT else text[:MAX_QUERY_TEXT] + " …"


class _LiveTelemetry(Telemetry):
    enabled = True

    def __init__(self, tracer_provider: Any, meter_provider: Any, db_systems: Mapping[str, str]) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracer = tracer_provider.get_tracer("bastion", server.__version__)
        self._db_systems = dict(db_systems)
        meter = meter_provider.get_meter("bastion", server.__version__)
        self._calls = meter.create_counter("bastion.tool.calls", unit="{call}", description="Tool calls by decision")
        self._duration = meter.create_histogram(
            "mcp.server.operation.duration", unit="s", description="Tool call duration, audit included"
        )
        self._stages = meter.create_histogram(
            "bastion.stage.duration", unit="s", description="Duration of each pipeline stage"
        )
        self._rows = meter.create_histogram(
            "db.client.response.returned_rows", unit="{row}", description="Rows returned to the agent"
        )
        self._masked = meter.create_counter("bastion.masked_cells", unit="{cell}", description="Cells masked")

    @contextlib.contextmanager
    def call_span(self, call: ToolCall) -> Iterator[CallSpan]:
        transport = call.transport
        attributes: dict[str, Any] = {
            "gen_ai.tool.name": call.tool,
            "gen_ai.operation.name": "execute_tool",
            "mcp.method.name": "tools/call",
            "mcp.session.id": transport.session_id,
        }
        if transport.transport in _NETWORK_TRANSPORTS:
            attributes["network.transport"] = _NETWORK_TRANSPORTS[transport.transport]
        current = trace.get_current_span()
        if current.is_recording() and _is_mcp_tool_span(current):
            current.set_attributes(attributes)
            yield CallSpan(current, False, time.perf_counter())
            return
        parent = None
        if not current.get_span_context().is_valid:
            parent = _client_context(transport.request_meta)
        with self._tracer.start_as_current_span(
            f"execute_tool {call.tool}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            handle = CallSpan(span, True, time.perf_counter())
            try:
                yield handle
            except BaseException as error:
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(StatusCode.ERROR)
                raise

    @contextlib.contextmanager
    def stage_span(self, name: str) -> Iterator[None]:
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.INTERNAL, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield
            except BaseException as error:
                span.set_attribute("error.type", getattr(error, "code", None) or type(error).__qualname__)
                span.set_status(StatusCode.ERROR)
                raise

    def record_call(self, span: CallSpan, state: CallState, event: AuditEvent) -> None:
        try:
            self._record(span, state, event)
        except Exception:  # telemetry must never fail a call that is already on record
            log.debug("telemetry for call %s failed", event.id, exc_info=True)

    def _record(self, handle: CallSpan, state: CallState, event: AuditEvent) -> None:
        database = event.database
        system = self._db_systems.get(database or "") or (
            _DB_SYSTEMS.get(state.statement.dialect) if state.statement else None
        )
        operation = event.statement_kind.upper() if event.statement_kind else None
        attributes: dict[str, Any] = {
            "bastion.decision": event.decision,
            "bastion.policy_ids": list(event.policy_ids),
            "bastion.masked_columns": list(event.masked_columns),
            "bastion.audit.id": event.id,
        }
        optional = {
            "bastion.agent.id": event.agent_id,
            "bastion.policy_version": event.policy_version,
            "db.system.name": system,
            "db.namespace": database,
            "db.operation.name": operation,
            "db.response.returned_rows": event.row_count,
            "db.collection.name": event.tables[0] if len(event.tables) == 1 else None,
            "db.query.text": normalized_sql(state),
            "error.type": event.error.split(":", 1)[0] if event.error else None,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        if event.tables:
            attributes["bastion.tables"] = list(event.tables)
        span = handle.span
        span.set_attributes(attributes)
        if event.error:
            span.set_status(StatusCode.ERROR)
        tool = {"gen_ai.tool.name": event.tool, "mcp.method.name": "tools/call"}
        self._calls.add(1, {**tool, "bastion.decision": event.decision})
        if handle.started:
            extra = {"error.type": attributes["error.type"]} if "error.type" in attributes else {}
            self._duration.record(time.perf_counter() - handle.started, {**tool, **extra})
        for stage, ms in state.timings.items():
            self._stages.record(ms / 1000, {"gen_ai.tool.name": event.tool, "bastion.stage": stage})
        db = {k: v for k, v in (("db.system.name", system), ("db.namespace", database)) if v}
        if event.row_count is not None:
            self._rows.record(event.row_count, {**db, **({"db.operation.name": operation} if operation else {})})
        masked = sum(event.masked_cells.values())
        if masked:
            self._masked.add(masked, {"gen_ai.tool.name": event.tool, **db})

    def shutdown(self) -> None:
        for provider in (self._tracer_provider, self._meter_provider):
            try:
                provider.shutdown()
            except Exception:  # an unreachable collector must not stop the server from stopping
                log.warning("telemetry exporter did not shut down cleanly", exc_info=True)


def _is_mcp_tool_span(span: Span) -> bool:
    """The SDK's `tools/call` span (an SDK span exposes its attributes; an API span does not)."""
    attributes = getattr(span, "attributes", None) or {}
    return attributes.get("mcp.method.name") == "tools/call"


def _client_context(meta: Mapping[str, Any]) -> otel_context.Context | None:
    """The client's trace context from `_meta.traceparent`/`tracestate`, or None when absent or
    malformed (then the span starts a new trace rather than hanging off an invalid parent)."""
    carrier = {k: v for k, v in meta.items() if k in ("traceparent", "tracestate") and isinstance(v, str)}
    if "traceparent" not in carrier:
        return None
    extracted = _PROPAGATOR.extract(carrier)
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def _endpoint(base: str | None, signal: str) -> str | None:
    """`http://collector:4318` -> `http://collector:4318/v1/traces`; a full signal URL is kept."""
    if not base:
        return None  # the exporter reads OTEL_EXPORTER_OTLP_* itself
    base = base.rstrip("/")
    return base if base.endswith(f"/v1/{signal}") else f"{base}/v1/{signal}"


def configure_telemetry(
    settings: TelemetryConfig,
    *,
    databases: Mapping[str, DatabaseConfig] | None = None,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
    install_global: bool | None = None,
) -> Telemetry:
    """Build the telemetry the settings ask for. `span_exporter` / `metric_reader` (tests) turn it on
    whatever the settings say, without touching the global providers unless `install_global`."""
    exporter = settings.exporter
    if exporter == "off" and span_exporter is None and metric_reader is None:
        return Telemetry()
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": "bastion", "service.version": server.__version__})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[Any] = []
    if span_exporter is not None or metric_reader is not None:
        if span_exporter is not None:
            tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        if metric_reader is not None:
            readers.append(metric_reader)
    elif exporter == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr), METRIC_EXPORT_INTERVAL_MS))
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_endpoint(endpoint, "traces"))))
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=_endpoint(endpoint, "metrics")), METRIC_EXPORT_INTERVAL_MS
            )
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if install_global if install_global is not None else span_exporter is None:
        _install_global(tracer_provider, meter_provider)
    systems = {name: db_system(db.dsn) for name, db in (databases or {}).items()}
    return _LiveTelemetry(tracer_provider, meter_provider, systems)


def _install_global(tracer_provider: Any, meter_provider: Any) -> None:
    """Make these the process's providers, so the MCP SDK's spans are exported alongside; only the
    first configured server in a process gets to (OpenTelemetry allows one), later ones keep theirs."""
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        log.info("a global tracer provider is already set; Bastion's telemetry uses its own")
        return
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
