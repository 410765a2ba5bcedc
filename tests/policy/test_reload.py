"""Hot reload: a policy edit changes decisions within 2 seconds; an edit that does not validate
is refused and reported while the running policies stay; no valid policy means every call is
refused until one arrives."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from server.policy.decision import Verdict
from server.policy.engine import NoPolicyEngine, PolicyEngine
from server.policy.errors import PolicyError
from server.policy.reload import PolicyWatcher, load_or_refuse
from tests.policy.conftest import request
from tests.policy.test_obligations import CATALOG, PII

READS = '@id("reads") permit(principal, action == Action::"select", resource);\n'
ORDERS = 'resource == Table::"main.sales.orders"'
NO_ORDERS = f'@id("no-orders") @reason("closed")\nforbid(principal, action == Action::"select", {ORDERS});\n'


class Server:
    """What a server holds: the engine in service, swapped by the watcher's callbacks."""

    def __init__(self, directory: Path) -> None:
        self.engine = load_or_refuse(directory)
        self.engine.bind("main", CATALOG, PII)
        self.swapped = threading.Event()
        self.refused: list[PolicyError] = []
        self.refusal = threading.Event()
        self.watcher = PolicyWatcher(directory, lambda: self.engine, self._swap, self._refuse, interval=0.1)

    def _swap(self, engine: PolicyEngine) -> None:
        self.engine = engine
        self.swapped.set()

    def _refuse(self, error: PolicyError) -> None:
        self.refused.append(error)
        self.refusal.set()

    def verdict(self, table: str = "sales.orders") -> Verdict:
        return self.engine.authorize(request("a", (), (("select", table),))).verdict


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_a_policy_edit_changes_decisions_within_two_seconds(tmp_path: Path):
    _write(tmp_path / "main.cedar", READS)
    server = Server(tmp_path)
    before = server.engine.version
    assert server.verdict() is Verdict.ALLOW
    with server.watcher:
        started = time.monotonic()
        _write(tmp_path / "orders.cedar", NO_ORDERS)
        assert server.swapped.wait(2.0)
        assert time.monotonic() - started < 2.0
    assert server.engine.version != before
    assert server.verdict() is Verdict.DENY  # bound to the same catalog at once
    assert server.verdict("sales.products") is Verdict.ALLOW
    assert server.refused == []


def test_an_edit_that_does_not_validate_is_refused_and_the_running_policies_stay(tmp_path: Path):
    _write(tmp_path / "main.cedar", READS)
    server = Server(tmp_path)
    running = server.engine
    with server.watcher:
        _write(tmp_path / "main.cedar", READS + "permit(principal, actio, resource);\n")
        assert server.refusal.wait(2.0)
        time.sleep(0.3)  # more polls of the same broken content report nothing new
    assert server.engine is running
    assert not server.swapped.is_set()
    assert len(server.refused) == 1
    assert server.refused[0].lines() == ["main.cedar:2:19: found an invalid variable in the policy scope: actio"]
    assert server.verdict() is Verdict.ALLOW


def test_an_edit_naming_a_table_the_catalog_lacks_is_refused(tmp_path: Path):
    _write(tmp_path / "main.cedar", READS)
    server = Server(tmp_path)
    _write(
        tmp_path / "main.cedar",
        READS + f'@row_filter("nope = 1")\npermit(principal, action == Action::"select", {ORDERS});\n',
    )
    time.sleep(0.01)
    assert server.watcher.check(settle=False) is False
    assert "names column nope" in server.refused[0].lines()[0]
    assert server.engine.policies.keys() == {"reads"}


def test_without_a_valid_policy_every_call_is_refused_until_one_arrives(tmp_path: Path):
    _write(tmp_path / "main.cedar", "permit(principal, action, resource)")  # no ;
    server = Server(tmp_path)
    assert isinstance(server.engine, NoPolicyEngine)
    decision = server.engine.authorize(request("a", (), (("select", "sales.orders"),)))
    assert decision.verdict is Verdict.DENY
    assert "no valid policy is loaded" in decision.reasons[0]
    assert "main.cedar:1:36" in decision.reasons[0]
    _write(tmp_path / "main.cedar", READS)
    assert server.watcher.check(settle=False) is True
    assert server.verdict() is Verdict.ALLOW  # bound to the catalog the refusing engine was given


def test_touching_a_file_without_changing_it_swaps_nothing(tmp_path: Path):
    _write(tmp_path / "main.cedar", READS)
    server = Server(tmp_path)
    _write(tmp_path / "main.cedar", READS)
    time.sleep(0.01)
    assert server.watcher.check(settle=False) is False
    assert not server.swapped.is_set()


def test_a_change_is_acted_on_once_it_has_settled(tmp_path: Path):
    _write(tmp_path / "main.cedar", READS)
    server = Server(tmp_path)
    _write(tmp_path / "orders.cedar", NO_ORDERS)
    assert server.watcher.check() is False  # seen once: maybe half-written
    assert server.watcher.check() is True  # the same on the next look: load it
