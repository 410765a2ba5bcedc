"""Tokens for the parser, with PostgreSQL's `U&"..."` identifiers decoded first.

sqlglot reads `U&"pg\\0073leep"(1)` as the column `U` AND-ed with a function named
`pg\\0073leep`; PostgreSQL reads it as a call to `pg_sleep`. A deny list checked on sqlglot's tree
would miss it, so the identifier is decoded here, before parsing, exactly as the server decodes it
(`\\XXXX`, `\\+XXXXXX`, a doubled escape character, an optional `UESCAPE 'c'`), and anything the
server would reject is refused. Unicode string literals (`U&'...'`) are already understood by
sqlglot and do not name anything, so they are left alone.
"""

from __future__ import annotations

from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Token, TokenType

from server.errors import SQLRejected

_HEX = frozenset("0123456789abcdefABCDEF")
_BAD_ESCAPE_CHARS = frozenset("0123456789abcdefABCDEF+'\" \t\r\n\f")


def _invalid(text: str) -> SQLRejected:
    return SQLRejected(
        f"invalid Unicode escape in the identifier U&{text!r}",
        hint='Write the identifier plainly, e.g. "name".',
    )


def decode_unicode_identifier(text: str, escape: str = "\\") -> str:
    """The identifier PostgreSQL reads from `U&"text"` (with `UESCAPE 'escape'`)."""
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
            escape, consumed = "\\", 3
            if (
                i + 4 < n
                and tokens[i + 3].token_type == TokenType.VAR
                and tokens[i + 3].text.upper() == "UESCAPE"
                and tokens[i + 4].token_type == TokenType.STRING
            ):
                escape, consumed = tokens[i + 4].text, 5
                if len(escape) != 1 or escape in _BAD_ESCAPE_CHARS:
                    raise _invalid(quoted.text)
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


def tokenize(sql: str, dialect: Dialect, *, postgres: bool) -> list[Token]:
    """sqlglot's tokens for `sql`, with what PostgreSQL would decode already decoded."""
    tokens = dialect.tokenize(sql)
    if postgres and any(t.token_type == TokenType.AMP for t in tokens):
        tokens = _decode_unicode_identifiers(tokens)
    return tokens


def first_words(tokens: list[Token], count: int = 2) -> str:
    """The statement's first keywords as written, to name what was refused."""
    return " ".join(token.text.upper() for token in tokens[:count] if token.token_type != TokenType.SEMICOLON)
