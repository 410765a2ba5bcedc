"""Build the MCP server: open what the tools need, register the tools, audit what they can't.

`build_server(config)` is the composition root. The runtime (database pools, the state store, the
audit recorder) is opened by the first lifespan that needs it and closed by the last one to leave, so
stdio, streamable HTTP (one lifespan for the app) and legacy SSE or in-memory sessions (one per
connection) all share one set of pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse

import server
from server.approvals.http_api import ApprovalsHttpApi
from server.approvals.service import start_approvals
from server.audit.checkpoint import audit_key_from_env
from server.audit.context import conversation_id
from server.audit.event import AuditEvent
from server.audit.recorder import AuditRecorder
from server.audit.retention import start_audit_maintenance
from server.audit.verify import check_trail_at_start
from server.config import BastionConfig
from server.db import open_database
from server.errors import AuditUnavailable
from server.identity.http_auth import auth_kwargs
from server.identity.resolve import resolve_agent
from server.pii.mask import Masker
from server.policy.engine import NoPolicyEngine, PolicyEngine
from server.policy.errors import PolicyError
from server.policy.reload import PolicyWatcher, load_or_refuse
from server.runtime import Runtime, policy_directory
from server.store import open_state_store
from server.telemetry import configure_telemetry
from tools import approval_status as approval_status_tool
from tools import describe as describe_tool
from tools import explain as explain_tool
from tools import query as query_tool
from tools import request_approval as request_approval_tool
from tools.boundary import call_was_audited, transport_info_of

log = logging.getLogger(__name__)

INSTRUCTIONS = """Bastion governs this database access. Start with `describe` to see the tables and what you
may do with them, use `explain` to check a statement without running it, and `query` to read. When a statement
needs a human's approval, call `request_approval`, wait with `approval_status`, then `query` with the
`approval_id`. Every call is recorded with the `purpose` you give. A refusal says why and what to do next."""


class RuntimeHolder:
    """Opens the runtime on first use and closes it when the last user leaves."""

    def __init__(self, config: BastionConfig, transport: str) -> None:
        self.config = config
        self.transport = transport
        self.runtime: Runtime | None = None
        self._users = 0
        self._lock = anyio.Lock()
        self._stack: contextlib.AsyncExitStack | None = None

    async def _open(self) -> Runtime:
        stack = contextlib.AsyncExitStack()
        directory = policy_directory(self.config)
        engine = load_or_refuse(directory)
        if isinstance(engine, NoPolicyEngine):
            log.error("%s: every call will be refused until the policies in %s validate", engine.reason, directory)
        # the pii section and the mask key are checked now: a bad one stops start-up, not a query
        masker = Masker.from_config(self.config.pii, self.config.base_dir)
        await asyncio.to_thread(masker.warm)
        try:
            store = await open_state_store(self.config.state.dsn, base_dir=self.config.base_dir)
            stack.push_async_callback(store.close)
            # a broken chain is said loudly (CRITICAL) and start-up continues; verify pinpoints it
            await check_trail_at_start(store, audit_key_from_env())
            maintenance = start_audit_maintenance(store, self.config)
            stack.push_async_callback(maintenance.stop)
            telemetry = configure_telemetry(self.config.telemetry, databases=self.config.databases)
            stack.callback(telemetry.shutdown)
            databases = {}
            for name, settings in self.config.databases.items():
                database = open_database(name, settings, base_dir=self.config.base_dir)
                await database.open()
                stack.push_async_callback(database.close)
                databases[name] = database
        except BaseException:
            await stack.aclose()
            raise
        runtime = Runtime(
            config=self.config,
            databases=databases,
            recorder=AuditRecorder(store),
            transport=self.transport,
            policy=engine,
            masker=masker,
            store=store,
            telemetry=telemetry,
        )
        watcher = self._watch_policies(runtime, directory)
        stack.callback(watcher.stop)
        approvals = await start_approvals(runtime)  # decision waiters and the webhook notifier
        stack.push_async_callback(approvals.close)
        self._stack = stack
        return runtime

    def _watch_policies(self, runtime: Runtime, directory: Path) -> PolicyWatcher:
        """Hot reload: a valid edit is swapped in; an invalid one is refused, logged and audited."""
        loop = asyncio.get_running_loop()

        def swap(engine: PolicyEngine) -> None:
            runtime.policy = engine
            log.warning("policies reloaded from %s (version %s)", directory, engine.version)

        def refused(error: PolicyError) -> None:
            log.error("policy change refused, the running policies stay: %s", error.message)
            event = AuditEvent(
                id=str(uuid.uuid4()),
                time=datetime.now(UTC),
                tool="(policy reload)",
                decision="error",
                transport=runtime.transport,
                policy_version=getattr(runtime.policy, "version", None),
                reasons=tuple(error.lines())[:20],
                error=f"policy_rejected: {error.message}"[:2000],
            )
            loop.call_soon_threadsafe(lambda: loop.create_task(self._record_quietly(runtime, event)))

        watcher = PolicyWatcher(directory, lambda: runtime.policy, swap, refused)
        watcher.start()
        return watcher

    @staticmethod
    async def _record_quietly(runtime: Runtime, event: AuditEvent) -> None:
        try:
            await runtime.recorder.record(event)
        except AuditUnavailable:
            log.error("could not audit a refused policy change")

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[Runtime]:
        async with self._lock:
            if self.runtime is None:
                self.runtime = await self._open()
            self._users += 1
            runtime = self.runtime
        try:
            yield runtime
        finally:
            async with self._lock:
                self._users -= 1
                if self._users == 0 and self._stack is not None:
                    stack, self._stack, self.runtime = self._stack, None, None
                    with anyio.CancelScope(shield=True):
                        await stack.aclose()


class AuditUnhandledCalls:
    """Audit the tool calls that never reached a tool: unknown tools, arguments that failed the
    input schema. A tool that ran has audited itself (it sets `call_was_audited`)."""

    def __init__(self, holder: RuntimeHolder) -> None:
        self.holder = holder

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        started = time.perf_counter()
        token = call_was_audited.set(False)
        try:
            result = await call_next(ctx)
            audited = call_was_audited.get()
        finally:
            call_was_audited.reset(token)
        if audited or self.holder.runtime is None:
            return result
        await self._record(ctx, result, (time.perf_counter() - started) * 1000)
        return result

    async def _record(self, ctx: ServerRequestContext[Any, Any], result: HandlerResult, duration: float) -> None:
        params = dict(ctx.params or {})
        error_text = None
        content = getattr(result, "content", None) or (result.get("content") if isinstance(result, dict) else None)
        if content:
            first = content[0]
            error_text = getattr(first, "text", None) or (first.get("text") if isinstance(first, dict) else None)
        runtime = self.holder.runtime
        assert runtime is not None
        arguments = params.get("arguments")
        transport = transport_info_of(ctx, runtime.transport)
        agent = resolve_agent(runtime.config, transport)
        event = AuditEvent(
            id=str(uuid.uuid4()),
            time=datetime.now(UTC),
            tool=str(params.get("name", "?"))[:200],
            decision="error",
            session_id=transport.session_id,
            transport=transport.transport,
            client_name=transport.client.name,
            client_version=transport.client.version,
            agent_id=agent.id,
            groups=agent.groups,
            auth_method=agent.auth_method,
            request_meta=transport.request_meta,
            conversation_id=conversation_id(transport.request_meta),
            arguments={"_raw": str(arguments)[:4000]} if arguments is not None else {},
            duration_ms=round(duration, 3),
            error=f"invalid_call: {(error_text or 'the call was rejected before reaching a tool')[:500]}",
        )
        try:
            await runtime.recorder.record(event)
        except AuditUnavailable:
            log.error("could not audit a rejected tool call")


def build_server(config: BastionConfig, *, transport: str = "stdio") -> MCPServer[Runtime]:
    holder = RuntimeHolder(config, transport)

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer[Runtime]) -> AsyncIterator[Runtime]:
        async with holder.use() as runtime:
            yield runtime

    mcp = MCPServer[Runtime](
        "bastion",
        title="Bastion",
        version=server.__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        middleware=[AuditUnhandledCalls(holder)],
        log_level="WARNING",
        **auth_kwargs(config, transport, runtime=lambda: holder.runtime),
    )
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
    mcp.add_tool(
        query_tool.query,
        title="Query a governed database",
        description=query_tool.DESCRIPTION,
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False),
    )
    mcp.add_tool(
        describe_tool.describe,
        title="Describe the schema",
        description=describe_tool.DESCRIPTION,
        annotations=read_only,
    )
    mcp.add_tool(
        explain_tool.explain,
        title="Explain a statement",
        description=explain_tool.DESCRIPTION,
        annotations=read_only,
    )

    mcp.add_tool(
        request_approval_tool.request_approval,
        title="Request a human's approval",
        description=request_approval_tool.DESCRIPTION,
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
    )
    mcp.add_tool(
        approval_status_tool.approval_status,
        title="Approval status",
        description=approval_status_tool.DESCRIPTION,
        annotations=read_only,
    )
    for path, methods, endpoint in ApprovalsHttpApi(holder).routes():  # the approver's HTTP API
        mcp.custom_route(path, methods=methods)(endpoint)

    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": server.__version__})

    mcp.holder = holder  # type: ignore[attr-defined]  # for the CLI and tests
    return mcp
