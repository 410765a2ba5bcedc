"""Where MCP meets the pipeline: what the transport knows, and errors as tool errors.

Everything the SDK hands a tool is read here and nowhere else, so the stages never see MCP types.
A `BastionError` becomes a tool error (`isError`) whose text says what was refused, why, and what to
do next; nothing else ever reaches the agent.
"""

from __future__ import annotations

import contextvars
import json
import uuid
import weakref
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent

from server.audit.context import prompt_context
from server.errors import BastionError
from server.identity.agent import ClientInfo, TransportInfo
from server.runtime import Runtime

_session_ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

#: set by `audited_call` when the pipeline recorded the call; the middleware audits the rest
call_was_audited: contextvars.ContextVar[bool] = contextvars.ContextVar("call_was_audited", default=False)


def runtime_of(ctx: Context) -> Runtime:
    return ctx.request_context.lifespan_context  # type: ignore[no-any-return]


def _session_id(rctx: ServerRequestContext[Any, Any]) -> str:
    headers = getattr(rctx.request, "headers", None)
    if headers is not None and (header := headers.get("mcp-session-id")):
        return str(header)
    connection = getattr(rctx.session, "_connection", None)
    if connection is None:
        return str(uuid.uuid4())
    if getattr(connection, "session_id", None):
        return str(connection.session_id)
    if connection not in _session_ids:
        _session_ids[connection] = str(uuid.uuid4())
    return _session_ids[connection]


def _client_info(rctx: ServerRequestContext[Any, Any]) -> ClientInfo:
    params = rctx.session.client_params
    info = getattr(params, "client_info", None)
    if info is None:
        return ClientInfo()
    return ClientInfo(name=info.name, version=info.version)


def _request_meta(rctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
    """The client's `_meta` as the audit event keeps it: protocol keys removed, values capped, the
    whole size-capped with a marker (server/audit/context.py; the keys are listed in docs/audit.md)."""
    return prompt_context(rctx.meta)


def transport_info_of(rctx: ServerRequestContext[Any, Any], transport: str) -> TransportInfo:
    return TransportInfo(
        transport=transport,
        session_id=_session_id(rctx),
        client=_client_info(rctx),
        request_meta=_request_meta(rctx),
    )


def transport_info(ctx: Context) -> TransportInfo:
    return transport_info_of(ctx.request_context, runtime_of(ctx).transport)


def tool_error(error: BastionError) -> CallToolResult:
    """The tool error an agent reads: what happened and, when there is one, what to do next."""
    label = {
        "denied": "Refused",
        "approval_required": "Needs approval",
        "sql_rejected": "Refused",
        "audit_unavailable": "Failed",
        "query_failed": "Query failed",
    }.get(error.code, "Error")
    message = error.message.rstrip()
    text = f"{label}: {message}" if message.endswith((".", "!", "?")) else f"{label}: {message}."
    if error.hint:
        text += f" Next: {error.hint}"
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def structured(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The JSON text for clients that read only text content, and the structured payload."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False), payload
