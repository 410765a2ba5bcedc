"""Problems found in policy files, each with the place an author has to look.

A policy author fixes what the message points at, so every problem carries the file, line and
column; `PolicyError` collects all of them (not just the first) so one `bastion policy validate`
run lists everything to fix. It is a `ConfigError`: a server refuses to start (or to reload) into
policies that do not load, and the command line prints it as readable lines, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.errors import ConfigError


@dataclass(frozen=True, order=True)
class PolicyProblem:
    """One problem at one place. `line` and `column` are 1-based; 0 means "the whole file"."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicyError(ConfigError):
    """The policies cannot be used; `problems` lists every problem found, in file order."""

    code = "policy"

    def __init__(self, problems: Iterable[PolicyProblem], *, summary: str | None = None) -> None:
        self.problems: tuple[PolicyProblem, ...] = tuple(problems)
        count = len(self.problems)
        head = summary or f"the policies are invalid ({count} problem{'s' if count != 1 else ''})"
        detail = "; ".join(str(problem) for problem in self.problems[:5])
        more = f"; and {count - 5} more" if count > 5 else ""
        super().__init__(f"{head}: {detail}{more}" if detail else head)

    def lines(self) -> list[str]:
        """One line per problem, for the command line."""
        return [str(problem) for problem in self.problems]
