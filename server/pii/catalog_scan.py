"""Classify every column of a catalog once, keep the result in the state store, reuse it after.

`classify_catalog` is what `bastion catalog scan` runs and what the server runs lazily on first
use. A stored classification is reused while the column's fingerprint (its type, comment, override
and the classifier's version) is unchanged; a changed column, a new one, or `refresh=True` is
classified again. Columns whose sample was empty or failed are not stored, so the next scan tries
again rather than remember "no PII" for a table that was merely empty.

Sampling reads `SELECT col::text FROM t WHERE col IS NOT NULL LIMIT n` through the database's
read path (read-only transaction, statement timeout), with identifiers quoted, a few columns at a
time. Presidio's work on the samples is CPU-bound and runs in a worker thread, so a server that
classifies lazily keeps answering other calls meanwhile.

A sample that cannot be read (permission denied, timeout) fails closed: the column is FREE_TEXT,
so its values are scanned at run time, and it is not stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from server.config import PiiConfig
from server.db.base import Catalog, Database, ExecutionLimits, TableInfo
from server.errors import BastionError
from server.pii.classify import (
    CLASSIFIER_VERSION,
    ColumnFacts,
    Decision,
    ValueFinding,
    analyze_value,
    decide_from_sample,
    decide_without_sample,
    name_tokens,
)
from server.pii.model import FREE_TEXT, PATTERN_ENTITIES, ColumnClassification

log = logging.getLogger(__name__)

ColumnKey = tuple[str, str, str]
Progress = Callable[[int, int], None]

#: sampling queries in flight at once (each one short; more would only queue on the pool)
CONCURRENCY = 4
SAMPLE_TIMEOUT_MS = 10_000
SAMPLE_MAX_BYTES = 4 * 1024 * 1024


class ClassificationStore(Protocol):
    async def save_classifications(self, classifications: list[ColumnClassification]) -> None: ...

    async def load_classifications(self, database: str) -> dict[ColumnKey, ColumnClassification]: ...


def override_for(config: PiiConfig, database: str, schema: str, table: str, column: str) -> str | None:
    """`pii.columns` entry for a column: "database.schema.table.column" wins over "schema.table.column"."""
    return config.columns.get(f"{database}.{schema}.{table}.{column}", config.columns.get(f"{schema}.{table}.{column}"))


def fingerprint(facts: ColumnFacts, config: PiiConfig) -> str:
    """What the classification depends on, hashed: when any of it changes, classify again."""
    material = [CLASSIFIER_VERSION, facts.data_type, facts.comment, facts.override, config.sample_size]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:16]


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sample_sql(dialect: str, schema: str, table: str, column: str, limit: int) -> str:
    """Values as text, nulls skipped; identifiers quoted (never interpolated raw)."""
    col = quote_identifier(column)
    source = f"{quote_identifier(schema)}.{quote_identifier(table)}"
    value = f"CAST({col} AS TEXT)" if dialect == "sqlite" else f"{col}::text"
    return f"SELECT {value} FROM {source} WHERE {col} IS NOT NULL LIMIT {int(limit)}"


async def classify_catalog(
    database: Database,
    catalog: Catalog,
    config: PiiConfig,
    store: ClassificationStore | None,
    *,
    progress: Progress | None = None,
    refresh: bool = False,
    base_dir: str = ".",
) -> dict[ColumnKey, ColumnClassification]:
    """Every column of `catalog` classified: stored results where still fresh, the rest now (and
    stored). `progress(done, total)` is called as columns are decided."""
    started = time.perf_counter()
    stored: Mapping[ColumnKey, ColumnClassification] = {}
    if store is not None and not refresh:
        stored = await store.load_classifications(catalog.database)
    result: dict[ColumnKey, ColumnClassification] = {}
    pending: list[tuple[TableInfo, ColumnFacts, str]] = []
    for (schema, table), info in sorted(catalog.tables.items()):
        for column in info.columns:
            facts = ColumnFacts(
                schema=schema,
                table=table,
                column=column.name,
                data_type=column.data_type,
                comment=column.comment,
                override=override_for(config, catalog.database, schema, table, column.name),
            )
            fp = fingerprint(facts, config)
            known = stored.get((schema, table, column.name))
            if known is not None and known.fingerprint == fp:
                result[known.key] = known
            else:
                pending.append((info, facts, fp))
    total = len(result) + len(pending)
    done = len(result)
    if progress is not None:
        progress(done, total)
    fresh: list[ColumnClassification] = []
    to_sample: list[tuple[ColumnFacts, str]] = []
    for _info, facts, fp in pending:
        decision = decide_without_sample(facts)
        if decision is None:
            to_sample.append((facts, fp))
            continue
        classification = _classification(catalog.database, facts, decision, fp)
        result[classification.key] = classification
        fresh.append(classification)
        done += 1
        if progress is not None:
            progress(done, total)

    if to_sample:
        from server.pii.engine import get_engine

        engine = await asyncio.to_thread(get_engine, config, base_dir)
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(facts: ColumnFacts, fp: str) -> None:
            nonlocal done
            async with semaphore:
                classification, keep = await _classify_by_sample(database, catalog, config, engine, facts, fp)
            result[classification.key] = classification
            if keep:
                fresh.append(classification)
            done += 1
            if progress is not None:
                progress(done, total)

        await asyncio.gather(*(one(facts, fp) for facts, fp in to_sample))

    if store is not None and fresh:
        await store.save_classifications(fresh)
    log.info(
        "classified %d columns of %s (%d reused, %d sampled) in %.1f s",
        total,
        catalog.database,
        total - len(pending),
        len(to_sample),
        time.perf_counter() - started,
    )
    return result


def _classification(database: str, facts: ColumnFacts, decision: Decision, fp: str) -> ColumnClassification:
    return ColumnClassification(
        database=database,
        schema=facts.schema,
        table=facts.table,
        column=facts.column,
        entity=decision.entity,
        confidence=decision.confidence,
        evidence=decision.evidence,
        source=decision.source,
        fingerprint=fp,
    )


async def _classify_by_sample(
    database: Database, catalog: Catalog, config: PiiConfig, engine: Any, facts: ColumnFacts, fp: str
) -> tuple[ColumnClassification, bool]:
    """(classification, whether to store it)."""
    timeout = min(
        SAMPLE_TIMEOUT_MS, getattr(getattr(database, "config", None), "statement_timeout_ms", SAMPLE_TIMEOUT_MS)
    )
    limits = ExecutionLimits(
        max_rows=config.sample_size, max_result_bytes=SAMPLE_MAX_BYTES, statement_timeout_ms=timeout
    )
    sql = sample_sql(catalog.dialect, facts.schema, facts.table, facts.column, config.sample_size)
    try:
        sampled = await database.fetch_read(sql, limits)
    except BastionError as error:
        log.warning("sampling %s.%s.%s failed: %s", facts.schema, facts.table, facts.column, error.message)
        decision = Decision(
            FREE_TEXT, 0.3, f"the sample could not be read ({error.code}); values will be scanned", "none"
        )
        return _classification(catalog.database, facts, decision, fp), False
    values = [row[0] for row in sampled.rows if row and isinstance(row[0], str)]
    context = name_tokens(facts.column)

    def analyze(text: str, words: list[str]) -> list[tuple[int, int, str, float]]:
        # pattern entities only: a NER model, where configured, is for free-text values (DESIGN.md)
        results = engine.analyze(text, context=words, entities=PATTERN_ENTITIES)
        return [(r.start, r.end, r.entity_type, float(r.score)) for r in results]

    def work() -> list[ValueFinding]:
        return [analyze_value(value, context, analyze) for value in values]

    findings = await asyncio.to_thread(work)
    decision = decide_from_sample(facts, findings)
    return _classification(catalog.database, facts, decision, fp), bool(findings)
