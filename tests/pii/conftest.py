"""Shared PII fixtures: one engine and scanner for the whole session (building one costs about a
second), with the default phone regions."""

from __future__ import annotations

import pytest

from server.config import PiiConfig
from server.pii.engine import PiiEngine, get_engine
from server.pii.scan import Scanner


@pytest.fixture(scope="session")
def engine() -> PiiEngine:
    return get_engine(PiiConfig())


@pytest.fixture(scope="session")
def scanner(engine: PiiEngine) -> Scanner:
    return Scanner(engine)
