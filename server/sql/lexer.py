"""Tokens for the parser, with PostgreSQL's `U&"..."` identifiers decoded first.

sqlglot reads `U&"pg\\0073leep"(1)` as the column `U` AND-ed with a function named
`pg\\0073leep`; PostgreSQL reads it as a call to `pg_sleep`. A deny list checked on sqlglot's tree
would miss it, so the identifier is decoded here, before parsing, exactly as the server decodes it
(`\\XXXX`, `\\+XXXXXX`, a doubled escape character, an optional `UESCAPE 'c'`), and anything the
server would reject is refused. Unicode string literals (`U&'...'`) are understood by sqlglot and
name nothing, so they are only checked: sqlglot accepts some that PostgreSQL rejects, and then
cannot render them back to SQL.
"""

from __future__ import annotations

from itertools import pairwise

from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Token, TokenType

from server.errors import SQLRejected

_HEX = frozenset("0123456789abcdefABCDEF")
_BAD_ESCAPE_CHARS = frozenset("0123456789abcdefABCDEF+'\" \t\r\n\f")


def _invalid(text: str) -> SQLRejected:
    return SQLRejected(
        f"invalid Unicode escape in U&{text!r}",
        hint="Unicode escapes must be \\XXXX or \\+XXXXXX, with a valid escape character.",
    )


def decode_unicode_identifier(text: str, escape: str = "\\") -> str:
    """The text PostgreSQL reads from `U&"text"` or `U&'text'` (with `UESCAPE 'escape'`)."""
    out: list[str] = []
    i = 0
    pending_high: int | None = None
    while i < len(text):
        ch = text[i]
        if ch != escape:
            if pending_high is not None:
                raise _invalid(text)
            out.append(ch)
            i += 1
            continue
        if text[i + 1 : i + 2] == escape:
            if pending_high is not None:
                raise _invalid(text)
            out.append(escape)
            i += 2
            continue
        if text[i + 1 : i + 2] == "+":
            digits, i = text[i + 2 : i + 8], i + 8
        else:
            digits, i = text[i + 1 : i + 5], i + 5
        if len(digits) not in (4, 6) or not set(digits) <= _HEX:
            raise _invalid(text)
        code = int(digits, 16)
        if pending_high is not None:
            if not 0xDC00 <= code <= 0xDFFF:
                raise _invalid(text)
            code = 0x10000 + ((pending_high - 0xD800) << 10) + (code - 0xDC00)
            pending_high = None
        elif 0xD800 <= code <= 0xDBFF:
            pending_high = code
            continue
        elif 0xDC00 <= code <= 0xDFFF or code == 0 or code > 0x10FFFF:
            raise _invalid(text)
        out.append(chr(code))
    if pending_high is not None:
        raise _invalid(text)
    return "".join(out)


def _adjacent(left: Token, right: Token) -> bool:
    return left.end + 1 == right.start


def _decode_unicode_identifiers(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        if (
            token.token_type == TokenType.VAR
            and token.text in ("U", "u")
            and i + 2 < n
            and tokens[i + 1].token_type == TokenType.AMP
            and tokens[i + 2].token_type == TokenType.IDENTIFIER
            and _adjacent(token, tokens[i + 1])
            and _adjacent(tokens[i + 1], tokens[i + 2])
        ):
            quoted = tokens[i + 2]
            escape, clause = _escape_after(tokens, i + 2, quoted.text)
            consumed = 3 + clause
            decoded = decode_unicode_identifier(quoted.text, escape)
            out.append(
                Token(
                    TokenType.IDENTIFIER,
                    decoded,
                    token.line,
                    token.col,
                    token.start,
                    tokens[i + consumed - 1].end,
                    list(token.comments) + list(quoted.comments),
                )
            )
            i += consumed
            continue
        out.append(token)
        i += 1
    return out


def _escape_after(tokens: list[Token], i: int, text: str) -> tuple[str, int]:
    """The escape character of the U& literal at `i` and how many tokens its UESCAPE clause takes."""
    if (
        i + 2 < len(tokens)
        and tokens[i + 1].token_type == TokenType.VAR
        and tokens[i + 1].text.upper() == "UESCAPE"
        and tokens[i + 2].token_type == TokenType.STRING
    ):
        escape = tokens[i + 2].text
        if len(escape) != 1 or escape in _BAD_ESCAPE_CHARS:
            raise _invalid(text)
        return escape, 2
    return "\\", 0


def _check_unicode_strings(tokens: list[Token]) -> None:
    """`U&'...'` literals that PostgreSQL would reject are refused here too: sqlglot accepts some
    of them and then fails to render them back to SQL."""
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.UNICODE_STRING:
            escape, _ = _escape_after(tokens, i, token.text)
            decode_unicode_identifier(token.text, escape)


def tokenize(sql: str, dialect: Dialect, *, postgres: bool) -> list[Token]:
    """sqlglot's tokens for `sql`, with what PostgreSQL would decode already decoded."""
    tokens = dialect.tokenize(sql)
    if postgres and any(t.token_type == TokenType.AMP for t in tokens):
        tokens = _decode_unicode_identifiers(tokens)
    if postgres:
        _check_unicode_strings(tokens)
    return tokens


def first_words(tokens: list[Token], count: int = 2) -> str:
    """The statement's first keywords as written, to name what was refused."""
    return " ".join(token.text.upper() for token in tokens[:count] if token.token_type != TokenType.SEMICOLON)


def calls_named(tokens: list[Token], names: frozenset[str]) -> list[str]:
    """The names in `names` (lower-case) written as calls, `name(`, in the token stream."""
    return [
        token.text
        for token, following in pairwise(tokens)
        if following.token_type == TokenType.L_PAREN and token.text.lower() in names
    ]
