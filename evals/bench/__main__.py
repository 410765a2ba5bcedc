"""`make bench`: run every benchmark and write BENCHMARKS.md.

Each section says which module made it; `python -m evals.bench.<module>` runs one alone. Set
`BASTION_BENCH_ONLY=overhead,masking` to run a subset (the other sections are then left out).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from evals.bench.common import machine_line

HEADER = """# Benchmarks

Written by `make bench` (`python -m evals.bench`); figures are medians unless they say otherwise.
Targets come from the issues; a figure is measured here, never asserted in a timed test.
"""


def _overhead() -> str:
    from evals.bench import overhead

    figures = asyncio.run(overhead.measure())
    return (
        "## Overhead of governance (`evals/bench/overhead.py`)\n\n"
        "Targets: governance stages (analyze, authorize, audit) under 1 ms together at the median for the "
        "join; the 10,000-row scan within 1.5x of raw asyncpg; a 1,000,000-row table with the default max_rows "
        "adds under 50 MB to peak memory; end to end over stdio at most 1.5x an ungoverned MCP server.\n\n"
        + overhead.report(figures)
    )


def _authorization() -> str:
    from evals.bench import authorization

    return (
        "## Authorization (`evals/bench/authorization.py`)\n\n"
        "Target: a statement touching 3 tables and 10 PII columns under 0.3 ms at the median, warm handles.\n\n"
        + authorization.report(authorization.measure())
    )


def _masking() -> str:
    from evals.bench import masking

    figures = masking.measure_masking()
    classification = asyncio.run(masking.measure_classification())
    return "## Masking and classification (`evals/bench/masking.py`)\n\n" + masking.report(figures, classification)


def _recall() -> str:
    from evals.bench import pii_recall

    return "## Free-text PII recall (`evals/bench/pii_recall.py`)\n\n" + pii_recall.report(pii_recall.measure())


def _tokens() -> str:
    import logging

    from evals.bench import tokens

    logging.disable(logging.WARNING)
    return (
        "## Token verification (`evals/bench/tokens.py`)\n\n"
        "Target: verifying a token with a warm JWKS cache under 0.2 ms at the median.\n\n"
        + tokens.report(asyncio.run(tokens.measure()))
    )


def _audit() -> str:
    from evals.bench import audit

    return "## Audit trail (`evals/bench/audit.py`)\n\n" + audit.report(audit.measure())


def _concurrency() -> str:
    from evals.bench import concurrency

    return "## Concurrency over streamable HTTP (`evals/bench/concurrency.py`)\n\n" + concurrency.report(
        asyncio.run(concurrency.measure())
    )


SECTIONS: dict[str, Callable[[], str]] = {
    "overhead": _overhead,
    "authorization": _authorization,
    "masking": _masking,
    "recall": _recall,
    "tokens": _tokens,
    "audit": _audit,
    "concurrency": _concurrency,
}


def main() -> None:
    only = [name for name in os.environ.get("BASTION_BENCH_ONLY", "").split(",") if name]
    chosen = {name: fn for name, fn in SECTIONS.items() if not only or name in only}
    parts = [HEADER, f"Machine: {machine_line()}. Command: `make bench`.\n"]
    for name, section in chosen.items():
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        parts.append(section() + "\n")
    Path("BENCHMARKS.md").write_text("\n".join(parts), encoding="utf-8")
    print(Path("BENCHMARKS.md").read_text())


if __name__ == "__main__":
    main()
