"""Notifications: a Slack-compatible webhook on request and decision, served here by the test on
127.0.0.1; a failing receiver is retried with backoff, and a failing or hanging one never blocks or
fails the tool call or the command line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from server.approvals.webhook import WebhookNotifier
from tests.approvals.conftest import UPDATE, cli, make_setup, request, session, text
from tests.approvals.receiver import Receiver, serving
from tests.conftest import ScratchDatabase


def block_texts(message: dict) -> str:
    parts = []
    for block in message["blocks"]:
        if "text" in block:
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            parts.append(element["text"])
    return "\n".join(parts)


async def test_request_and_decision_are_posted_as_slack_messages(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    with serving(Receiver()) as receiver:
        setup = make_setup(shop_db, tmp_path, webhook=receiver.url, public_url="https://bastion.example.com")
        async with session(setup.config) as client:
            approval_id = (await request(client, justification="customer moved to Zurich")).structured_content[
                "approval_id"
            ]
            (requested,) = await asyncio.to_thread(receiver.wait_for, 1)
            decided = await cli(setup, "approve", approval_id, "--as", "alice", "--reason", "ok by me")
            assert decided.code == 0 and not decided.err, decided.err
        messages = await asyncio.to_thread(receiver.wait_for, 2)
    assert set(requested) == {"text", "blocks"}
    assert approval_id in requested["text"] and "writer-bot" in requested["text"]
    body = block_texts(requested)
    assert "UPDATE customers SET country = 'CH' WHERE id = 7" in body
    assert "*Agent:* writer-bot" in body and "customer moved to Zurich" in body
    assert f"<https://bastion.example.com/approvals/{approval_id}|Open the request>" in body
    assert requested["blocks"][0]["type"] == "header"
    approved = messages[1]
    assert approved["text"].startswith(f"alice approved {approval_id}") and "ok by me" in approved["text"]
    assert "*Decided by:* alice via cli" in block_texts(approved)


async def test_a_failing_receiver_is_retried_with_backoff() -> None:
    with serving(Receiver(fail_first=2)) as receiver:
        notifier = WebhookNotifier(receiver.url, backoff_s=0.05)
        notifier.notify({"text": "hello", "blocks": []})
        assert await notifier.drain(5)
        await notifier.close()
    assert receiver.hits == 3 and receiver.received == [{"text": "hello", "blocks": []}]
    assert notifier.failures == 0


async def test_a_rejecting_receiver_is_not_retried() -> None:
    with serving(Receiver(mode="bad_request")) as receiver:
        notifier = WebhookNotifier(receiver.url, backoff_s=0.05)
        notifier.notify({"text": "hello"})
        assert await notifier.drain(5)
        await notifier.close()
    assert receiver.hits == 1 and notifier.failures == 1


async def test_a_hanging_webhook_never_holds_up_the_tool_call(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    with serving(Receiver(mode="hang", hang_s=20)) as receiver:
        setup = make_setup(shop_db, tmp_path, webhook=receiver.url)
        started = time.monotonic()
        async with session(setup.config) as client:
            result = await request(client)
            assert not result.is_error, text(result)
            assert time.monotonic() - started < 5
            status = await client.call_tool(
                "approval_status", {"approval_id": result.structured_content["approval_id"]}
            )
            assert status.structured_content["status"] == "pending"
        # closing the server gives the stuck delivery a short grace, then cancels it
        assert time.monotonic() - started < 10
        assert receiver.hits >= 1


async def test_a_failing_webhook_does_not_fail_the_command_line(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    with serving(Receiver(mode="fail")) as receiver:
        setup = make_setup(shop_db, tmp_path, webhook=receiver.url)
        async with session(setup.config) as client:
            approval_id = (await request(client, UPDATE)).structured_content["approval_id"]
            result = await cli(setup, "approve", approval_id, "--as", "alice")
            status = await client.call_tool("approval_status", {"approval_id": approval_id})
    assert result.code == 0 and f"approved {approval_id}" in result.out
    assert "webhook notification could not be delivered" in result.err
    assert receiver.url not in result.err  # the URL is a secret
    assert status.structured_content["status"] == "approved"
