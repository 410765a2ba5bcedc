"""Shared fixtures: the shipped policies bound to the catalogs their test files describe."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.identity.agent import Agent
from server.policy.engine import AuthorizationRequest, PolicyContext, PolicyEngine
from server.policy.fixtures import CatalogFixture, parse_catalog, read_yaml
from server.policy.schema import SHIPPED_POLICIES

EXAMPLES = SHIPPED_POLICIES / "examples"
TESTS = SHIPPED_POLICIES / "tests"


def fixture_of(path: Path) -> CatalogFixture:
    return parse_catalog(read_yaml(path)["catalog"], source=str(path))


def bound(directory: Path, fixture: CatalogFixture) -> PolicyEngine:
    engine = PolicyEngine.load(directory)
    assert engine.bind(fixture.database, fixture.catalog, fixture.pii, fixture.tags) == ()
    return engine


@pytest.fixture(scope="session")
def examples_catalog() -> CatalogFixture:
    return fixture_of(TESTS / "examples.yaml")


@pytest.fixture(scope="session")
def default_catalog() -> CatalogFixture:
    return fixture_of(TESTS / "default.yaml")


@pytest.fixture(scope="session")
def examples(examples_catalog: CatalogFixture) -> PolicyEngine:
    return bound(EXAMPLES, examples_catalog)


@pytest.fixture(scope="session")
def default(default_catalog: CatalogFixture) -> PolicyEngine:
    return bound(SHIPPED_POLICIES, default_catalog)


def context(kind: str = "select", *, purpose: str = "testing", approved: bool = False, hour: int = 10, pii=()):
    return PolicyContext(purpose, "query", "stdio", 1000, kind, tuple(pii), hour, approved)


def request(
    agent: str,
    groups: tuple[str, ...],
    actions: tuple[tuple[str, str], ...],
    unmasked: tuple[tuple[str, str], ...] = (),
    **context_args,
) -> AuthorizationRequest:
    kind = actions[0][0] if actions else "select"
    return AuthorizationRequest(Agent(agent, groups), "main", actions, unmasked, context(kind, **context_args))
