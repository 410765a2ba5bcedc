"""Bastion as an OAuth 2.1 resource server over HTTP, on the MCP SDK's own auth machinery.

With `identity.oauth` or `identity.api_keys` configured, `auth_kwargs` gives `MCPServer` a token
verifier and `AuthSettings`, and the SDK then:
- runs every request to `/mcp` (and `/sse`, `/messages/`) through `BearerAuthBackend` with our
  verifier, answering 401 with `WWW-Authenticate: Bearer error="invalid_token", ...,
  resource_metadata="<resource origin>/.well-known/oauth-protected-resource/mcp"` when it refuses,
  and 403 `insufficient_scope` when a required scope is missing, so no such call reaches a tool;
- serves the RFC 9728 metadata at that path-inserted URL.

`guard_http_app` (installed by `bastion serve`) adds what the SDK leaves out: the metadata also at
the root `/.well-known/oauth-protected-resource` (clients of earlier MCP revisions look there), with
the per-tool scopes in `scopes_supported`, and one log line and audit event per refused request,
including requests with no token at all, which never reach the verifier.

`AuthSettings.validate_token_resource` is off on purpose: the verifier checks `aud` against
`identity.oauth.audience`, which for some IdPs is not a URL (Entra ID: `api://...`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl, ValidationError
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.config import BastionConfig
from server.errors import ConfigError
from server.identity.refusals import Refusal, RefusalAuditor, RefusalBox, RequestFacts, current_box
from server.identity.stdio import STDIO_TOKEN_ENV, verify_stdio_token
from server.identity.verifier import BastionTokenVerifier, granted_scopes

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger("bastion.identity")

HTTP_TRANSPORTS = frozenset({"http", "sse"})
ROOT_METADATA_PATH = "/.well-known/oauth-protected-resource"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def http_auth_enabled(config: BastionConfig) -> bool:
    return config.identity.oauth is not None or bool(config.identity.api_keys)


def resource_url_of(config: BastionConfig) -> str | None:
    """This server's MCP endpoint URL, the OAuth resource: `identity.resource_url`, else the
    audience when that is an http(s) URL (the MCP spec's recommendation), else None."""
    if config.identity.resource_url:
        return config.identity.resource_url
    oauth = config.identity.oauth
    if oauth is not None and oauth.audience.startswith(("https://", "http://")):
        return oauth.audience
    return None


def with_resource_url(config: BastionConfig, *, host: str, port: int) -> BastionConfig:
    """The config with `identity.resource_url` filled in from the bind address when nothing names
    it, for `bastion serve --transport http|sse`. Behind a proxy set `identity.resource_url`."""
    if not http_auth_enabled(config):
        if host not in _LOOPBACK:
            log.warning(
                "serving HTTP on %s without authentication: every caller is agent %r (configure identity.oauth "
                "or identity.api_keys)",
                host,
                config.identity.stdio_agent,
            )
        return config
    if resource_url_of(config):
        return config
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/mcp"
    if host not in _LOOPBACK:
        log.warning("identity.resource_url is not set; advertising %s, which clients may not reach", url)
    identity = config.identity.model_copy(update={"resource_url": url})
    return config.model_copy(update={"identity": identity})


def _url(value: str, key: str) -> AnyHttpUrl:
    try:
        return AnyHttpUrl(value)
    except ValidationError:
        raise ConfigError(f"{key}: {value!r} is not an http(s) URL") from None


def _auth_settings(config: BastionConfig) -> AuthSettings:
    oauth = config.identity.oauth
    resource = resource_url_of(config)
    if oauth is not None and resource is None:
        resource = "http://127.0.0.1:8000/mcp"
        log.warning("identity.resource_url is not set; advertising %s", resource)
    if oauth is None:
        # API keys only: there is no authorization server to advertise, so no resource URL (the SDK
        # then serves no metadata); issuer_url is required by AuthSettings but unused.
        return AuthSettings(issuer_url=_url("http://127.0.0.1/", "issuer"), resource_server_url=None)
    return AuthSettings(
        issuer_url=_url(oauth.issuer, "identity.oauth.issuer"),
        resource_server_url=_url(resource or "", "identity.resource_url"),
        required_scopes=list(oauth.required_scopes),
        validate_token_resource=False,
    )


def auth_kwargs(
    config: BastionConfig, transport: str, *, runtime: Callable[[], Runtime | None] | None = None
) -> dict[str, Any]:
    """What `MCPServer(...)` needs for authentication on `transport`.

    HTTP and SSE with `identity.oauth` or `identity.api_keys`: `token_verifier` and `auth`. Stdio:
    nothing, but `BASTION_AGENT_TOKEN`, when set, is verified here, once, before the server starts
    (AuthenticationError, one line, if it is refused). `runtime` returns the open runtime, whose
    recorder audits refusals the verifier reports by itself (without `guard_http_app`).
    """
    if transport == "stdio":
        verify_stdio_token(config)
        return {}
    if transport in HTTP_TRANSPORTS and os.environ.get(STDIO_TOKEN_ENV):
        log.warning("%s is ignored over %s: every request proves its own identity", STDIO_TOKEN_ENV, transport)
    if transport not in HTTP_TRANSPORTS or not http_auth_enabled(config):
        return {}
    verifier = BastionTokenVerifier(config.identity, on_refused=RefusalAuditor(runtime, transport))
    return {"token_verifier": verifier, "auth": _auth_settings(config)}


class _Holder(Protocol):
    config: BastionConfig
    transport: str
    runtime: Runtime | None


def _metadata_app(config: BastionConfig) -> tuple[frozenset[str], ASGIApp] | None:
    """RFC 9728 metadata, at the path-inserted URL and at the root, built with the SDK's handler."""
    oauth = config.identity.oauth
    resource = resource_url_of(config)
    if oauth is None or resource is None:
        return None
    routes = create_protected_resource_routes(
        resource_url=_url(resource, "identity.resource_url"),
        authorization_servers=[_url(oauth.issuer, "identity.oauth.issuer")],
        scopes_supported=list(granted_scopes(config.identity)) or None,
        resource_name="Bastion",
    )
    paths = {route.path for route in routes}
    if ROOT_METADATA_PATH not in paths:
        routes.append(Route(ROOT_METADATA_PATH, endpoint=routes[0].endpoint, methods=["GET", "OPTIONS"]))
        paths.add(ROOT_METADATA_PATH)
    return frozenset(paths), Router(routes=list(routes))


def metadata_url(config: BastionConfig) -> str | None:
    """Where the 401's `WWW-Authenticate` points clients (the SDK's path-inserted form)."""
    resource = resource_url_of(config)
    return str(build_resource_metadata_url(_url(resource, "identity.resource_url"))) if resource else None


def _inferred_refusal(scope: Scope, status: int) -> Refusal:
    """The reason for a refusal the verifier did not decide: it never saw a bearer token."""
    authorization = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), None)
    if status == 403:
        return Refusal(403, "insufficient scope")
    if authorization is None:
        return Refusal(401, "no bearer token (no Authorization header)")
    scheme, _, credential = authorization.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        return Refusal(401, f"the Authorization header uses the {scheme[:20]!r} scheme, not Bearer")
    if not credential.strip():
        return Refusal(401, "empty bearer token", "oauth")
    return Refusal(401, "the bearer token was refused")


def _with_scope(headers: list[tuple[bytes, bytes]], scopes: str) -> list[tuple[bytes, bytes]]:
    """The challenge with a `scope` parameter (RFC 6750 section 3; the MCP authorization spec asks
    for it so a client knows which scopes to request), unless the SDK already put one there."""
    patched = []
    for name, value in headers:
        if name.lower() == b"www-authenticate" and scopes and b"scope=" not in value:
            value = value + f', scope="{scopes}"'.encode("latin-1", "replace")
        patched.append((name, value))
    return patched


class AuthGuard:
    """ASGI wrapper around the SDK's app: metadata documents, the `scope` of a challenge, and
    reporting of every refusal."""

    def __init__(self, app: ASGIApp, config: BastionConfig, auditor: RefusalAuditor) -> None:
        self.app = app
        self.auditor = auditor
        metadata = _metadata_app(config)
        self._metadata_paths, self._metadata = metadata if metadata else (frozenset(), None)
        oauth = config.identity.oauth
        #: a 401 names every scope this server knows; a 403 the ones every call needs
        self._scopes = {
            401: " ".join(granted_scopes(config.identity)),
            403: " ".join(oauth.required_scopes) if oauth else "",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._metadata is not None and scope["path"] in self._metadata_paths:
            await self._metadata(scope, receive, send)
            return
        box = RefusalBox()
        reset = current_box.set(box)

        async def reporting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (401, 403):
                headers = message.get("headers", [])
                if any(name.lower() == b"www-authenticate" for name, _ in headers):
                    refusal = box.refusal or _inferred_refusal(scope, message["status"])
                    try:
                        await self.auditor(refusal, RequestFacts.of(scope))
                    except Exception as error:  # the refusal goes out regardless
                        log.error("a refused authentication could not be reported: %s", type(error).__name__)
                    message = {**message, "headers": _with_scope(list(headers), self._scopes[message["status"]])}
            await send(message)

        try:
            await self.app(scope, receive, reporting_send)
        finally:
            current_box.reset(reset)


def guard_http_app(app: ASGIApp, holder: _Holder) -> ASGIApp:
    """`app` (from `streamable_http_app()` or `sse_app()`) behind the guard, when auth is on."""
    if not http_auth_enabled(holder.config):
        return app
    return AuthGuard(app, holder.config, RefusalAuditor(lambda: holder.runtime, holder.transport))
