"""Nothing in the PII engine touches the network: building it, checking email domains (tldextract's
Public Suffix List) and scanning all work with every socket refused."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import requests

from server.config import PiiConfig
from server.pii import recognizers
from server.pii.engine import PiiEngine, engine_settings
from server.pii.scan import Scanner


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way out refused and recorded: sockets, DNS, and requests (what tldextract fetches with)."""
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise NetworkUsed(f"{what} attempted")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    monkeypatch.setattr(requests.Session, "send", refuse("requests.Session.send"))
    # a fresh suffix list load, not the one an earlier test left in memory
    recognizers.offline_tld_extractor.cache_clear()
    recognizers._has_public_suffix.cache_clear()
    return attempts


def test_building_the_engine_and_checking_email_domains_needs_no_network(no_network: list[str]) -> None:
    engine = PiiEngine(engine_settings(PiiConfig()))  # a new engine, not the cached one
    scanner = Scanner(engine)
    found = scanner.find("write to ada@example.co.uk, bob@corp.internal or dan@x.example.com, not carol@localhost")
    assert [(d.entity, d.score) for d in found] == [
        ("EMAIL_ADDRESS", 1.0),
        ("EMAIL_ADDRESS", 0.5),
        ("EMAIL_ADDRESS", 1.0),
    ]
    assert [r.entity_type for r in engine.analyze("ada@example.com", context=["email"])] == ["EMAIL_ADDRESS"]
    assert no_network == []


def test_the_suffix_list_comes_from_the_bundled_snapshot_only() -> None:
    extractor = recognizers.offline_tld_extractor()
    assert extractor.suffix_list_urls == ()
    assert extractor.fallback_to_snapshot
    assert not extractor._cache.enabled  # no disk cache read or written either


def test_the_engine_never_uses_presidios_default_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("NlpEngineProvider would load (and download) a spaCy model")

    monkeypatch.setattr(NlpEngineProvider, "create_engine", forbidden)
    engine = PiiEngine(engine_settings(PiiConfig()))
    assert type(engine.analyzer.nlp_engine).__name__ == "NoOpNlpEngine"
