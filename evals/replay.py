"""Replay transcripts through real MCP sessions and check what each call led to.

`replay(paths, options)` runs each transcript file on its own: it creates the header's fixture
database (a scratch PostgreSQL database owned by an ordinary role, loaded with the fixture's SQL
and dropped afterwards), builds the server configuration, and sends every call, in order, through
a real MCP client session: in memory against `build_server` by default, or over streamable HTTP
to a running server (`url`). Today the caller's identity over stdio and in memory is the config's
`identity.stdio_agent` with its groups from `identity.agents`, so one server is built, and one
session opened, per distinct agent of the transcript. Nothing is mocked: what the transcript checks
is what an agent would get.

The decision of a call is read from what the agent sees: `decision.verdict` of a structured result,
else the label that `tools/boundary.tool_error` puts before the first colon of a tool error
("Refused" -> deny, "Needs approval" -> approval_required, anything else -> error).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
from mcp import Client

from evals.transcript import Call, Observed, Problem, Reference, Transcript, TranscriptError, check, parse_file
from server.app import build_server
from server.config import AgentConfig, BastionConfig, load_config, parse_config
from server.encoding import encode_rows
from server.errors import BastionError

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
#: the ordinary role that owns fixture databases: no superuser, no BYPASSRLS, as in production
APP_ROLE = "bastion_eval_app"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: what the label before the first colon of a tool error means (see tools/boundary.tool_error)
ERROR_LABELS: dict[str, str] = {
    "refused": "deny",
    "needs approval": "approval_required",
    "query failed": "error",
    "failed": "error",
    "error": "error",
}
META_PREFIX = "bastion/"
MAX_PROMPT_EXCERPT = 1000
REFERENCE_TIMEOUT_MS = 30_000


class ReplayError(BastionError):
    """A transcript file could not be replayed at all (fixture, configuration, database)."""

    code = "replay"


@dataclass(frozen=True)
class ReplayOptions:
    config_path: str | None = None
    url: str | None = None
    policies: str | None = None
    admin_dsn: str | None = None
    #: a call that has not answered after this long fails (the server's own timeouts come first)
    call_timeout_s: float = 120.0

    def admin(self) -> str:
        return self.admin_dsn or os.environ.get("BASTION_TEST_DSN", DEFAULT_ADMIN_DSN)


@dataclass(frozen=True)
class CallOutcome:
    line: int
    id: str
    agent: str
    tool: str
    decision: str
    #: pass | fail | known_gap (failed, and on record as a gap) | gap_closed (flagged, but held) | invalid
    status: str
    reasons: tuple[str, ...] = ()
    duration_ms: float = 0.0
    note: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "invalid")


@dataclass
class FileReport:
    source: str
    outcomes: list[CallOutcome] = field(default_factory=list)
    setup_error: str | None = None
    duration_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def failed(self) -> bool:
        return self.setup_error is not None or any(outcome.failed for outcome in self.outcomes)


# --- fixture database -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FixtureDatabase:
    name: str
    admin_dsn: str
    app_dsn: str


def _with_database(dsn: str, database: str, user: str | None = None) -> str:
    parts = urlsplit(dsn)
    if user is not None:
        host = parts.hostname or "127.0.0.1"
        netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def fixture_database(sql: str, admin_dsn: str) -> AsyncIterator[FixtureDatabase]:
    """A scratch database owned by `APP_ROLE`, loaded with `sql` as that role, dropped at exit."""
    name = f"bastion_eval_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise ReplayError(
            f"cannot reach PostgreSQL to create the fixture database ({type(error).__name__}); "
            "set BASTION_TEST_DSN to a postgresql:// DSN of a role that may create databases"
        ) from None
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", APP_ROLE):
            with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                await admin.execute(f'CREATE ROLE "{APP_ROLE}" LOGIN NOSUPERUSER NOBYPASSRLS')
        await admin.execute(f'CREATE DATABASE "{name}" OWNER "{APP_ROLE}"')
    finally:
        await admin.close()
    database = FixtureDatabase(name, _with_database(admin_dsn, name), _with_database(admin_dsn, name, APP_ROLE))
    try:
        conn = await asyncpg.connect(database.app_dsn, timeout=10)
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as error:
            raise ReplayError(f"the fixture SQL failed: {error}") from None
        finally:
            await conn.close()
        yield database
    finally:
        with anyio.CancelScope(shield=True):
            admin = await asyncpg.connect(admin_dsn, timeout=10)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


def find_file(name: str, transcript: Path, *, kind: str, default_dir: Path | None = None) -> Path:
    """A header's relative path, looked up next to the transcript, then in the current folder,
    then in `default_dir` (the shipped fixtures) and the project root, the first that exists."""
    candidate = Path(name)
    if candidate.is_absolute():
        places = [candidate]
    else:
        places = [transcript.parent / candidate, Path.cwd() / candidate]
        if default_dir is not None:
            places.append(default_dir / candidate)
        places.append(PROJECT_ROOT / candidate)
    for place in places:
        if place.exists():
            return place.resolve()
    raise ReplayError(f"{kind} {name!r} not found (looked in: {', '.join(str(p.parent) for p in places)})")


# --- configuration --------------------------------------------------------------------------------


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` laid over `base`: mappings merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def fixture_config(transcript: Transcript, dsn: str, state_dir: str, policies: str | None) -> BastionConfig:
    """The server configuration for a fixture run: the header's overrides over sensible limits."""
    base: dict[str, Any] = {
        "databases": {transcript.header.database: {"dsn": dsn, "statement_timeout_ms": 5000, "max_rows": 1000}},
        "state": {"dsn": f"sqlite:///{Path(state_dir) / 'state.db'}"},
    }
    data = merge(base, transcript.header.config)
    if policies is not None:
        data["policies"] = policies
    return parse_config(data, base_dir=state_dir)


def with_identity(config: BastionConfig, agent_id: str, groups: Sequence[str]) -> BastionConfig:
    """`config` whose local (stdio/in-memory) caller is this agent in these groups. Applied after
    parsing, so that a `BASTION_AGENT` in the environment cannot replace the transcript's agent."""
    agents = {**config.identity.agents, agent_id: AgentConfig(groups=tuple(groups))}
    identity = config.identity.model_copy(update={"stdio_agent": agent_id, "agents": agents})
    return config.model_copy(update={"identity": identity})


# --- reading a result -----------------------------------------------------------------------------


def decision_of_error(text: str) -> str:
    label = text.split(":", 1)[0].strip().lower() if ":" in text else ""
    return ERROR_LABELS.get(label, "error")


def observe(result: Any) -> Observed:
    """What the agent received, as an `Observed`."""
    texts = [getattr(block, "text", "") or "" for block in (result.content or [])]
    structured = result.structured_content
    joined = "\n".join(texts)
    everything = joined + ("\n" + json.dumps(structured, ensure_ascii=False, default=str) if structured else "")
    if result.is_error:
        return Observed(decision=decision_of_error(joined), error=joined, everything=everything)
    if structured is None and texts:
        with contextlib.suppress(ValueError):
            parsed = json.loads(texts[0])
            structured = parsed if isinstance(parsed, dict) else None
    payload = structured if isinstance(structured, dict) else {}
    verdict = payload.get("decision", {}).get("verdict") if isinstance(payload.get("decision"), dict) else None
    columns = payload.get("columns")
    names = tuple(str(c.get("name")) for c in columns if isinstance(c, dict)) if isinstance(columns, list) else None
    masked = tuple(str(c.get("name")) for c in columns if isinstance(c, dict) and c.get("masked")) if names else ()
    rows = payload.get("rows")
    return Observed(
        decision=str(verdict or "allow"),
        columns=names,
        masked_columns=masked,
        rows=rows if isinstance(rows, list) else None,
        row_count=payload.get("row_count"),
        truncated=payload.get("truncated"),
        everything=everything,
    )


async def reference_rows(conn: asyncpg.Connection | None, sql: str) -> Reference:
    """The rows the database returns for `sql` (read only), encoded as Bastion encodes them."""
    if conn is None:
        return Reference(error="no PostgreSQL database to compare with (pass --config or use a fixture)")
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL statement_timeout = {REFERENCE_TIMEOUT_MS}")
            statement = await conn.prepare(sql)
            records = await statement.fetch()
            names = tuple(attribute.name for attribute in statement.get_attributes())
    except asyncpg.PostgresError as error:
        return Reference(error=f"{type(error).__name__}: {str(error)[:200]}")
    rows = json.loads(json.dumps(encode_rows([tuple(record) for record in records]), default=str))
    return Reference(columns=names, rows=rows)


# --- running --------------------------------------------------------------------------------------


class Sessions:
    """One MCP client session per agent identity, opened on first use, closed together."""

    def __init__(self, stack: contextlib.AsyncExitStack, config: BastionConfig | None, url: str | None) -> None:
        self.stack = stack
        self.config = config
        self.url = url
        self._open: dict[tuple[str, tuple[str, ...], str | None], tuple[Client, dict[str, dict[str, Any]]]] = {}

    async def get(self, call: Call) -> tuple[Client, dict[str, dict[str, Any]]]:
        key = (call.agent.id, call.agent.groups, call.agent.on_behalf_of)
        if key not in self._open:
            if self.url is not None:
                client = Client(self.url)
            else:
                assert self.config is not None
                server = build_server(with_identity(self.config, call.agent.id, call.agent.groups), transport="memory")
                client = Client(server, mode="legacy")
            session = await self.stack.enter_async_context(client)
            listing = await session.list_tools()
            self._open[key] = (session, {tool.name: dict(tool.input_schema or {}) for tool in listing.tools})
        return self._open[key]


def request_meta(call: Call) -> dict[str, Any]:
    """The prompt context as `_meta` keys (namespaced, as the MCP spec asks)."""
    meta: dict[str, Any] = {f"{META_PREFIX}eval_call_id": call.id}
    if call.context.conversation_id:
        meta[f"{META_PREFIX}conversation_id"] = call.context.conversation_id
    if call.context.user_prompt:
        meta[f"{META_PREFIX}user_prompt_excerpt"] = call.context.user_prompt[:MAX_PROMPT_EXCERPT]
    return meta


def _outcome(call: Call, decision: str, failures: list[str], started: float) -> CallOutcome:
    if call.known_gap:
        status = "known_gap" if failures else "gap_closed"
        if not failures:
            failures = ["the expectation holds now: remove known_gap"]
    else:
        status = "fail" if failures else "pass"
    return CallOutcome(
        line=call.line,
        id=call.id,
        agent=call.agent.label,
        tool=call.tool,
        decision=decision,
        status=status,
        reasons=tuple(failures),
        duration_ms=(time.perf_counter() - started) * 1000,
        note=call.note,
    )


async def run_call(
    call: Call, sessions: Sessions, reference_conn: asyncpg.Connection | None, timeout_s: float
) -> CallOutcome:
    """Make one call and check it. Whatever the server answers, even a protocol error or silence, is
    an outcome of this call, so one bad call never hides the rest of the file."""
    started = time.perf_counter()
    session, tools = await sessions.get(call)
    if call.tool not in tools:
        return CallOutcome(
            line=call.line,
            id=call.id,
            agent=call.agent.label,
            tool=call.tool,
            decision="-",
            status="invalid",
            reasons=(f"unknown tool {call.tool!r} (the server offers: {', '.join(sorted(tools))})",),
        )
    arguments = dict(call.arguments)
    accepts = tools[call.tool].get("properties", {})
    if call.context.purpose and "purpose" in accepts and "purpose" not in arguments:
        arguments["purpose"] = call.context.purpose
    try:
        with anyio.fail_after(timeout_s):
            result = await session.call_tool(call.tool, arguments, meta=request_meta(call))  # type: ignore[arg-type]
        observed = observe(result)
    except TimeoutError:
        observed = Observed(decision="error", error=f"no answer within {timeout_s:g} s")
    except Exception as error:  # a protocol error is an outcome to report, not a crash of the run
        observed = Observed(decision="error", error=f"{type(error).__name__}: {error}")
    reference = None
    if call.reference_sql is not None and observed.rows is not None:
        reference = await reference_rows(reference_conn, call.reference_sql)
    return _outcome(call, observed.decision, check(call.expect, observed, reference), started)


def _problem_outcome(problem: Problem) -> CallOutcome:
    return CallOutcome(
        line=problem.line,
        id=problem.id or f"line-{problem.line}",
        agent="-",
        tool="-",
        decision="-",
        status="invalid",
        reasons=(f"line {problem.line}: {problem.message}",),
    )


async def _run_transcript(transcript: Transcript, options: ReplayOptions, report: FileReport) -> None:
    report.outcomes.extend(_problem_outcome(problem) for problem in transcript.problems)
    path = Path(transcript.source)
    policies = options.policies or transcript.header.policies
    if policies is not None:
        policies = str(find_file(policies, path, kind="policies directory"))
    async with contextlib.AsyncExitStack() as stack:
        config: BastionConfig | None = None
        reference_dsn: str | None = None
        if options.config_path is not None:
            config = load_config(options.config_path)
            if policies is not None:
                config = config.model_copy(update={"policies": policies})
            database = config.databases.get(transcript.header.database) or config.databases[config.default_database]
            reference_dsn = database.dsn if database.dialect == "postgres" else None
        elif options.url is None:
            if transcript.header.fixture is None:
                raise ReplayError("the transcript names no fixture: add a header with one, or pass --config")
            sql = "\n".join(
                find_file(name, path, kind="fixture", default_dir=FIXTURES_DIR).read_text("utf-8")
                for name in transcript.header.fixture
            )
            database = await stack.enter_async_context(fixture_database(sql, options.admin()))
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bastion-eval-"))
            config = fixture_config(transcript, database.app_dsn, state_dir, policies)
            reference_dsn = database.admin_dsn
        reference_conn = None
        if reference_dsn is not None:
            reference_conn = await asyncpg.connect(reference_dsn, timeout=10)
            stack.push_async_callback(reference_conn.close)
        sessions = Sessions(stack, config, f"{options.url.rstrip('/')}" if options.url else None)
        for call in transcript.calls:
            report.outcomes.append(await run_call(call, sessions, reference_conn, options.call_timeout_s))


async def replay_file(path: str | Path, options: ReplayOptions) -> FileReport:
    """Replay one transcript; a file that cannot run at all says why in `setup_error`, never raises."""
    started = time.perf_counter()
    report = FileReport(source=str(path))
    try:
        transcript = parse_file(path)
        await _run_transcript(transcript, options, report)
    except (BastionError, TranscriptError) as error:
        report.setup_error = str(error)
    except (OSError, asyncpg.PostgresError) as error:
        report.setup_error = f"{type(error).__name__}: {error}"
    except Exception as error:  # a server that would not start, a session that would not open
        report.setup_error = f"the replay stopped: {type(error).__name__}: {str(error)[:300]}"
    report.outcomes.sort(key=lambda outcome: outcome.line)
    report.duration_s = time.perf_counter() - started
    return report


async def replay(paths: Sequence[str | Path], options: ReplayOptions | None = None) -> list[FileReport]:
    """Replay each file in turn (each with its own fixture database and servers)."""
    chosen = options or ReplayOptions()
    return [await replay_file(path, chosen) for path in paths]
