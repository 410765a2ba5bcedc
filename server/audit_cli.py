"""`bastion audit tail|export|verify`."""

from __future__ import annotations

import argparse
import sys

from server.audit.chain import GENESIS_HASH, ChainHead, verify_chain
from server.audit.event import StoredEvent
from server.audit.export import export_jsonl, format_tail, parse_time
from server.config import BastionConfig
from server.errors import ConfigError
from server.store import StateStore, StoreError, open_state_store


async def _verify(store: StateStore) -> int:
    """Recompute the chain batch by batch (a large trail never sits in memory at once)."""
    head = await store.audit_chain_head()
    link = ChainHead(0, GENESIS_HASH)
    count = 0
    batch: list[StoredEvent] = []
    try:
        async for stored in store.iter_audit_events():
            batch.append(stored)
            if len(batch) >= 5000:
                broken = verify_chain(batch, start=link)
                if broken is not None:
                    print(f"audit chain BROKEN {broken}")
                    return 1
                link, count, batch = ChainHead(batch[-1].sequence, batch[-1].hash), count + len(batch), []
    except StoreError as error:
        print(f"audit chain BROKEN: {error.message}")
        return 1
    broken = verify_chain(batch, start=link, head=head)
    if broken is not None:
        print(f"audit chain BROKEN {broken}")
        return 1
    print(f"audit chain intact: {count + len(batch)} events verified")
    return 0


async def run(config: BastionConfig, args: argparse.Namespace) -> int:
    try:
        since = parse_time(args.since) if getattr(args, "since", None) else None
        until = parse_time(args.until) if getattr(args, "until", None) else None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    store = await open_state_store(config.state.dsn, base_dir=config.base_dir)
    try:
        if args.audit_command == "tail":
            events = await store.last_audit_events(max(1, args.lines))
            print(format_tail(events))
            return 0
        if args.audit_command == "export":
            await export_jsonl(store, sys.stdout, since=since, until=until)
            return 0
        return await _verify(store)
    finally:
        await store.close()
