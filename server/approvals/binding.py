"""What an approval is bound to, and the check a query must pass to use one.

The statement is compared as a token stream, not as text: sqlglot's tokenizer in the database's
dialect drops whitespace and comments, and everything else is kept, with the token's type, so a
changed literal, identifier, operator or quoting is a different statement. Keywords are compared
in upper case (`update` is `UPDATE`), and a trailing `;` is ignored. Comparing tokens rather than the
parse tree is deliberate: the tree would equate spellings a human did not read (`<>` and `!=`,
`$$x$$` and `'x'`), and "any other change matters" is the promise to the approver. A comment
written inside a two-word keyword (`ORDER /* x */ BY`) tokenizes differently from the keyword; that
case needs a new approval, which fails closed.

The other parts of the binding (database, agent, policy version, expiry, single use) are checked by
`check_use`, in an order that gives the agent the most useful reason first.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import lru_cache

from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from server.approvals.errors import ApprovalNotUsable
from server.approvals.model import Approval, ApprovalStatus
from server.errors import SQLRejected

#: token types whose text is data or a name: compared exactly as written
_VERBATIM = frozenset(
    {
        TokenType.VAR,
        TokenType.IDENTIFIER,
        TokenType.NUMBER,
        TokenType.PARAMETER,
        TokenType.PLACEHOLDER,
        *(t for t in TokenType if t.name.endswith("STRING")),
    }
)


def canonical_tokens(sql: str, dialect: str) -> list[tuple[str, str]]:
    """(token type, text) of `sql` without whitespace, comments and a trailing `;`."""
    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    except TokenError:
        raise SQLRejected(
            "the SQL could not be tokenized: an unterminated string, quoted identifier or comment",
            hint="Check the quotes and comments.",
        ) from None
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens.pop()
    canonical: list[tuple[str, str]] = []
    for token in tokens:
        text = token.text
        if token.token_type not in _VERBATIM:
            text = " ".join(text.split()).upper()
        canonical.append((token.token_type.name, text))
    return canonical


@lru_cache(maxsize=1024)
def fingerprint(sql: str, dialect: str) -> str:
    """The binding key of a statement: equal for texts that differ only in whitespace, comments,
    keyword case or a trailing `;`, different for any other change."""
    encoded = json.dumps(canonical_tokens(sql, dialect), ensure_ascii=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(f"{dialect}\n{encoded}".encode()).hexdigest()


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "an unknown time"


def check_use(
    approval: Approval,
    *,
    agent_id: str,
    database: str,
    statement_fingerprint: str,
    policy_version: str | None,
    now: datetime,
) -> None:
    """Raise ApprovalNotUsable unless `approval` covers this exact call, now."""
    ref = approval.id
    request_again = "Call request_approval with this exact statement and a justification, then wait for a human."
    if approval.agent_id != agent_id:
        raise ApprovalNotUsable(f"approval {ref} was not requested by this agent", hint=request_again)
    if approval.database != database:
        raise ApprovalNotUsable(
            f"approval {ref} is for database {approval.database}, not {database}",
            hint=f"Run it against database {approval.database}, or request approval for this database.",
        )
    if approval.fingerprint != statement_fingerprint:
        raise ApprovalNotUsable(
            f"approval {ref} covers a different statement: an approval covers exactly the statement it was "
            "requested for (only whitespace and comments may differ)",
            hint="Send the approved statement unchanged, or request approval for this one.",
        )
    if policy_version is not None and approval.policy_version != policy_version:
        raise ApprovalNotUsable(
            f"the policies changed since approval {ref} was requested (version {approval.policy_version}, "
            f"now {policy_version}), so it no longer applies",
            hint=request_again,
        )
    status = approval.status_at(now)
    if status is ApprovalStatus.PENDING:
        raise ApprovalNotUsable(
            f"approval {ref} is still waiting for a human's decision",
            hint=f"Call approval_status with approval_id {ref} and wait_s up to 60 to wait for it.",
        )
    if status is ApprovalStatus.DENIED:
        why = f": {approval.decision_reason}" if approval.decision_reason else ""
        raise ApprovalNotUsable(f"approval {ref} was denied by {approval.decided_by}{why}", hint=request_again)
    if status is ApprovalStatus.EXPIRED:
        raise ApprovalNotUsable(f"approval {ref} expired at {_when(approval.expires_at)}", hint=request_again)
    if status is ApprovalStatus.USED:
        raise ApprovalNotUsable(
            f"approval {ref} was already used at {_when(approval.used_at)}; an approval runs its statement once",
            hint=request_again,
        )
