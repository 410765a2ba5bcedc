"""Authorization cost: one statement touching 3 tables and reading 10 PII columns, warm handles.

Target (issue 3): under 0.3 ms at the median. Measured over `PolicyEngine.authorize` with the
policies parsed and the catalog's entities built once (as in a running server), the caller's
entities cached, and the request built outside the timed region (the pipeline builds it from the
analyzed statement). The catalog is a realistic size (3 schemas, 60 tables, 900 columns), so the
entity store is not trivially small. Run: `python -m evals.bench.authorization`.

Also reported: the same with a new agent identity on every call (the caller's entities are
rebuilt), and a write that needs approval (two Cedar batches: approved = false, then true).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

from evals.bench.common import machine_line, median, p99
from server.db.base import Catalog, ColumnInfo, TableInfo
from server.identity.agent import Agent
from server.policy.decision import Verdict
from server.policy.engine import AuthorizationRequest, PolicyContext, PolicyEngine
from server.policy.schema import SHIPPED_POLICIES

REPEAT = int(os.environ.get("BASTION_BENCH_REPEAT", "5000"))

#: the PII columns the statement reads: 7 + 2 + 1
PII = {
    "sales.customers.full_name": "PERSON",
    "sales.customers.email": "EMAIL_ADDRESS",
    "sales.customers.phone": "PHONE_NUMBER",
    "sales.customers.card_number": "CREDIT_CARD",
    "sales.customers.address": "LOCATION",
    "sales.customers.date_of_birth": "DATE_TIME",
    "sales.customers.iban": "IBAN_CODE",
    "sales.orders.shipping_address": "LOCATION",
    "sales.orders.billing_email": "EMAIL_ADDRESS",
    "support.tickets.requester_email": "EMAIL_ADDRESS",
}
TABLES = ("sales.customers", "sales.orders", "support.tickets")


def bench_catalog() -> Catalog:
    tables: dict[tuple[str, str], TableInfo] = {}
    for schema in ("sales", "hr", "support"):
        for i in range(20):
            name = f"filler_{i}"
            columns = tuple(ColumnInfo(f"c{j}", "text", True) for j in range(15))
            tables[(schema, name)] = TableInfo(schema, name, "table", columns)
    wanted: dict[str, list[str]] = {t: ["id", "region", "status"] for t in TABLES}
    for column in PII:
        table, _, name = column.rpartition(".")
        wanted[table].append(name)
    wanted["sales.products"] = ["id", "name", "price"]
    wanted["hr.employees"] = ["id", "full_name", "salary"]
    for qualified, names in wanted.items():
        schema, _, name = qualified.partition(".")
        tables[(schema, name)] = TableInfo(schema, name, "table", tuple(ColumnInfo(c, "text", True) for c in names))
    return Catalog("main", "postgres", tables, search_path=("public",), schemas=("sales", "hr", "support"))


def _context(kind: str = "select") -> PolicyContext:
    return PolicyContext("benchmark", "query", "stdio", 1000, kind, tuple(sorted(set(PII.values()))), 10)


def _engine(directory: Path) -> PolicyEngine:
    engine = PolicyEngine.load(directory)
    problems = engine.bind("main", bench_catalog(), PII)
    if problems:
        raise SystemExit("benchmark catalog does not fit the policies: " + "; ".join(map(str, problems)))
    return engine


def _time(fn: Callable[[], object], repeat: int) -> list[float]:
    for _ in range(200):
        fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(repeat: int = REPEAT) -> list[tuple[str, int, list[float], str]]:
    """(label, policy count, samples in ms, verdict) per scenario."""
    read = AuthorizationRequest(
        Agent("bench-agent", ("analytics", "support")),
        "main",
        tuple(("select", table) for table in TABLES),
        tuple(PII.items()),
        _context(),
    )
    write = AuthorizationRequest(
        Agent("bench-agent", ("oncall",)), "main", (("update", "support.tickets"),), (), _context("update")
    )
    rows = []
    for label, directory in (("default.cedar", SHIPPED_POLICIES), ("examples/", SHIPPED_POLICIES / "examples")):
        engine = _engine(directory)
        decision = engine.authorize(read)
        assert decision.verdict is Verdict.ALLOW, decision
        count = len(engine.policies)
        rows.append(
            (f"{label}: 3 tables, 10 PII columns", count, _time(lambda e=engine: e.authorize(read), repeat), "allow")
        )
        ids = itertools.count()

        def new_agent(e: PolicyEngine = engine, numbers: itertools.count = ids) -> object:
            agent = Agent(f"agent-{next(numbers)}", ("analytics", "support"))
            return e.authorize(AuthorizationRequest(agent, "main", read.actions, read.unmasked, read.context))

        rows.append((f"{label}: same, a new agent each call", count, _time(new_agent, repeat // 5), "allow"))
        verdict = engine.authorize(write).verdict.value
        rows.append(
            (f"{label}: UPDATE needing approval", count, _time(lambda e=engine: e.authorize(write), repeat), verdict)
        )
    return rows


def report(rows: list[tuple[str, int, list[float], str]]) -> str:
    lines = [
        "| scenario | policies | verdict | median | p99 | runs |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for label, count, samples, verdict in rows:
        lines.append(
            f"| {label} | {count} | {verdict} | {median(samples):.3f} ms | {p99(samples):.3f} ms | {len(samples)} |"
        )
    return "\n".join(lines)


def main() -> None:
    print(f"Machine: {machine_line()}.\n")
    print("## Authorization (`evals/bench/authorization.py`)\n")
    print(
        "Target: authorization of a statement touching 3 tables and 10 PII columns under 0.3 ms at the median "
        "with warm handles (policies and catalog entities parsed once; 60-table catalog).\n"
    )
    print(report(measure()))


if __name__ == "__main__":
    main()
