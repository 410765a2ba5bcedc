"""Notifications: a webhook on each request and decision, sent in the background.

The payload is what Slack's incoming webhooks accept (`text`, the fallback and notification line,
and `blocks` with the statement, the agent, the justification and a link); Mattermost and most chat
tools take the same shape, and any other receiver can read `text`.

Delivery never holds up a tool call: `notify` only queues a task and returns. Each delivery is
tried up to `ATTEMPTS` times with exponential backoff (`BACKOFF_S`, doubling) on a network error,
a timeout (`TIMEOUT_S` per attempt, so a hanging receiver costs a background task, never a caller),
a 429 or a 5xx; any other 4xx is final (the payload will not get better). At most
`MAX_IN_FLIGHT` deliveries run at once and at most `MAX_QUEUED` wait; past that a notification is
dropped with a log line, so a dead receiver cannot grow memory without bound. The webhook URL is a
secret (Slack's carry the token in the path): it is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import httpx2

from server.approvals.model import Approval

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF_S = 0.5
TIMEOUT_S = 5.0
MAX_IN_FLIGHT = 4
MAX_QUEUED = 500
_SLACK_TEXT_LIMIT = 2900


def _escape(text: str) -> str:
    """Slack mrkdwn's three control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(sql: str) -> str:
    body = sql.strip().replace("```", "`\u200b``")
    if len(body) > _SLACK_TEXT_LIMIT:
        body = body[:_SLACK_TEXT_LIMIT] + f"... [{len(body) - _SLACK_TEXT_LIMIT} more characters]"
    return f"```{_escape(body)}```"


def link_for(approval: Approval, public_url: str | None) -> str | None:
    """Where an approver can look at the request: the server's HTTP API, when its URL is known."""
    if not public_url:
        return None
    return f"{public_url.rstrip('/')}/approvals/{approval.id}"


def payload(event: str, approval: Approval, *, public_url: str | None, who: str | None = None) -> dict[str, Any]:
    """The Slack-compatible message for `event` ("requested", "approved", "denied")."""
    agent = approval.agent_id + (f" (for {approval.on_behalf_of})" if approval.on_behalf_of else "")
    kind = approval.statement_kind.upper()
    if event == "requested":
        title = f"Approval requested: {kind} on {approval.database}"
        text = f"Agent {agent} asks to run a {kind} on {approval.database} ({approval.id})"
    else:
        title = f"Approval {event}: {kind} on {approval.database}"
        reason = f": {approval.decision_reason}" if approval.decision_reason else ""
        text = f"{who or approval.decided_by} {event} {approval.id} ({kind} on {approval.database}){reason}"
    fields = [
        f"*Agent:* {_escape(agent)}",
        f"*Database:* {_escape(approval.database)}",
        f"*Justification:* {_escape(approval.justification or '(none given)')}",
        f"*Expires:* {approval.expires_at:%Y-%m-%d %H:%M:%S} UTC",
    ]
    if event != "requested":
        fields.append(f"*Decided by:* {_escape(who or approval.decided_by or '?')} via {approval.decided_via}")
        if approval.decision_reason:
            fields.append(f"*Reason:* {_escape(approval.decision_reason)}")
    link = link_for(approval, public_url)
    how = f"`bastion approvals approve {approval.id} --as NAME` (or `deny`)"
    context = f"<{link}|Open the request> or run {how}" if link else f"Decide with {how}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(fields)[:_SLACK_TEXT_LIMIT]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _code(approval.statement)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context[:_SLACK_TEXT_LIMIT]}]},
    ]
    return {"text": text[:_SLACK_TEXT_LIMIT], "blocks": blocks}


class WebhookNotifier:
    """Posts payloads to one URL in background tasks; `close` (or `drain`) ends them."""

    def __init__(
        self,
        url: str | None,
        *,
        attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.url = url
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._tasks: set[asyncio.Task[bool]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._client: httpx2.AsyncClient | None = None
        #: deliveries that ended without success (for the command line to report)
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def notify(self, body: Mapping[str, Any]) -> None:
        """Queue one delivery and return at once (never raises)."""
        if not self.url:
            return
        if len(self._tasks) >= MAX_QUEUED:
            log.error("approval webhook: %d notifications already waiting; this one is dropped", len(self._tasks))
            self.failures += 1
            return
        try:
            task = asyncio.get_running_loop().create_task(self._deliver(dict(body)))
        except RuntimeError:  # no running loop (should not happen): drop rather than fail the caller
            self.failures += 1
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, body: dict[str, Any]) -> bool:
        async with self._slots:
            if self._client is None:
                self._client = httpx2.AsyncClient(timeout=httpx2.Timeout(self.timeout_s), follow_redirects=False)
            delay = self.backoff_s
            for attempt in range(1, self.attempts + 1):
                outcome = await self._attempt(body)
                if outcome == "ok":
                    return True
                if outcome == "final" or attempt == self.attempts:
                    break
                await asyncio.sleep(delay)
                delay *= 2
            self.failures += 1
            log.error("approval webhook: giving up on a notification after %d attempt(s)", attempt)
            return False

    async def _attempt(self, body: dict[str, Any]) -> str:
        """ "ok", "retry" or "final"; one line in the log for a failure (never the URL)."""
        assert self._client is not None and self.url
        try:
            # wait_for on top of the client's timeouts: a receiver trickling bytes stays bounded too
            response = await asyncio.wait_for(self._client.post(self.url, json=body), timeout=self.timeout_s + 1)
        except (httpx2.HTTPError, TimeoutError, OSError) as error:
            log.warning("approval webhook: attempt failed (%s)", type(error).__name__)
            return "retry"
        if 200 <= response.status_code < 300:
            return "ok"
        log.warning("approval webhook: the receiver answered HTTP %d", response.status_code)
        return "retry" if response.status_code == 429 or response.status_code >= 500 else "final"

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the deliveries in flight; True when all ended in time."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        return not pending

    async def close(self, grace_s: float = 2.0) -> None:
        """Give deliveries in flight `grace_s`, then cancel what is left."""
        await self.drain(grace_s)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
