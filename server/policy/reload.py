"""Hot reload: a policy edit reaches a running server within two seconds, or is refused.

`PolicyWatcher` polls the policy directory (names, sizes and modification times of its `*.cedar`
files) every half second on a daemon thread; polling needs no dependency and behaves the same on
every platform and file system (inotify does not see changes through some container mounts). When
the files change, and stay unchanged for one more poll (an editor may write in several steps), it
loads a new engine, binds it to the catalogs the current engine serves, and hands it to `on_swap`,
which swaps it in (one reference assignment, atomic for readers): about one second end to end. A
change that does not load or bind cleanly is refused: the running engine stays and `on_refused`
gets the error (the server logs and audits it). The same refusal is not reported twice.

A server whose policies never loaded serves a `NoPolicyEngine` (which refuses every call); the
watcher keeps watching, and the first valid edit brings policy in.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from server.policy.engine import NoPolicyEngine, PolicyEngine
from server.policy.errors import PolicyError, PolicyProblem
from server.policy.loader import policy_files

log = logging.getLogger(__name__)

Engine = PolicyEngine | NoPolicyEngine
Snapshot = tuple[tuple[str, int, int], ...]


def snapshot(directory: Path) -> Snapshot:
    """What changes when a policy file is written, added, removed or renamed."""
    try:
        files = policy_files(directory)
    except OSError:
        return ()
    entries = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def load_or_refuse(directory: Path) -> Engine:
    """The engine for `directory`, or a NoPolicyEngine saying why there is none (server start)."""
    try:
        return PolicyEngine.load(directory)
    except PolicyError as error:
        return NoPolicyEngine.from_error(error)


class PolicyWatcher:
    """Watches one policy directory and swaps engines through callbacks."""

    def __init__(
        self,
        directory: Path,
        current: Callable[[], Engine],
        on_swap: Callable[[PolicyEngine], None],
        on_refused: Callable[[PolicyError], None],
        *,
        interval: float = 0.5,
    ) -> None:
        """`current` returns the engine in service (its bindings are copied to the new one);
        `on_swap` puts a new engine in service; `on_refused` hears about a change that was not."""
        self.directory = Path(directory)
        self._current = current
        self._on_swap = on_swap
        self._on_refused = on_refused
        self.interval = interval
        self._seen = snapshot(self.directory)
        self._pending: Snapshot | None = None
        self._refused_digest: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bastion-policy-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> PolicyWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("policy reload failed unexpectedly; the running policies stay")

    def check(self, *, settle: bool = True) -> bool:
        """Look once; load and swap if the files changed. True when a new engine went in.

        With `settle`, a change is acted on only when the next look sees the same files: an
        editor that writes in several steps is not caught half-way (at most one interval later)."""
        seen = snapshot(self.directory)
        if seen == self._seen:
            self._pending = None
            return False
        if settle and seen != self._pending:
            self._pending = seen
            return False
        self._seen, self._pending = seen, None
        try:
            engine = PolicyEngine.load(self.directory)
            problems = engine.adopt_bindings(self._current())
            if problems:
                raise PolicyError(problems, summary="the changed policies do not fit the catalog")
        except PolicyError as error:
            digest = _digest(error.problems)
            if digest != self._refused_digest:
                self._refused_digest = digest
                self._on_refused(error)
            return False
        self._refused_digest = None
        current = self._current()
        if isinstance(current, PolicyEngine) and current.version == engine.version:
            return False  # touched, not changed
        self._on_swap(engine)
        return True


def _digest(problems: tuple[PolicyProblem, ...]) -> str:
    return hashlib.sha256("\n".join(map(str, problems)).encode()).hexdigest()
