"""Where things are in a Cedar file: a small lexer, the split into policies, and error locations.

cedarpy reports parse and validation errors as bare messages ("unexpected token `=`",
"attribute `pii` on entity type `Table` not found") without a source span. A policy author needs a
line and a column, so this module finds them: the file is tokenized here (Cedar's lexical grammar
is small: `//` comments, strings with escapes, identifiers, integers, punctuation), split into
policies at each top-level `;` (a policy cannot contain one outside a string), and each problem is
placed by

- for "unexpected token" errors, the shortest prefix of the policy that Cedar rejects with
  something other than "unexpected end of input" (an LR parser fails at the first token that
  cannot continue a valid policy, so the search is a bisection over token prefixes);
- otherwise the first token sequence named in backticks in the message (`Action::"selekt"`,
  attribute `pii` after a `.`), searched in the policy's tokens;
- failing both, the start of the policy.

Splitting also lets the loader parse policies one at a time, so one run reports every broken
policy of a file, not only the first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_PUNCTUATION = ("::", "==", "!=", "<=", ">=", "&&", "||", "(", ")", "[", "]", "{", "}", ",", ";", ".", "@", "?")
_SINGLE = "=<>!+-*%/"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]+")
_BACKTICKED = re.compile(r"`([^`]+)`|^'([^']+)'")
END_OF_INPUT = "unexpected end of input"


@dataclass(frozen=True)
class Token:
    kind: str  # "ident" | "string" | "number" | "punct" | "invalid"
    text: str
    offset: int
    line: int
    column: int


@dataclass(frozen=True)
class LexProblem:
    message: str
    line: int
    column: int


@dataclass(frozen=True)
class PolicySource:
    """One policy's text (through its `;`) and where it starts in its file."""

    index: int
    text: str
    tokens: tuple[Token, ...]
    line: int
    column: int
    start: int  # offset of its first token in the file
    terminated: bool

    def end_location(self) -> tuple[int, int]:
        """Just after the last token: where a missing `;` or `}` belongs."""
        last = self.tokens[-1]
        return last.line, last.column + len(last.text)


def tokenize(text: str) -> tuple[list[Token], list[LexProblem]]:
    """Cedar tokens with 1-based line and column; problems for unterminated strings and characters
    Cedar does not know."""
    tokens: list[Token] = []
    problems: list[LexProblem] = []
    line, line_start, i, n = 1, 0, 0, len(text)
    while i < n:
        ch = text[i]
        column = i - line_start + 1
        if ch == "\n":
            line, line_start, i = line + 1, i + 1, i + 1
        elif ch.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                if text[j] == "\n":
                    break
                j += 2 if text[j] == "\\" else 1
            if j >= n or text[j] != '"':
                problems.append(LexProblem("unterminated string", line, column))
                tokens.append(Token("invalid", text[i:j], i, line, column))
                i = j
            else:
                tokens.append(Token("string", text[i : j + 1], i, line, column))
                i = j + 1
        elif match := _IDENT.match(text, i):
            tokens.append(Token("ident", match.group(), i, line, column))
            i = match.end()
        elif match := _NUMBER.match(text, i):
            tokens.append(Token("number", match.group(), i, line, column))
            i = match.end()
        else:
            punct = next((p for p in _PUNCTUATION if text.startswith(p, i)), None)
            if punct is not None:
                tokens.append(Token("punct", punct, i, line, column))
                i += len(punct)
            elif ch in _SINGLE:
                tokens.append(Token("punct", ch, i, line, column))
                i += 1
            else:
                problems.append(LexProblem(f"character {ch!r} is not valid in Cedar", line, column))
                tokens.append(Token("invalid", ch, i, line, column))
                i += 1
    return tokens, problems


def split_policies(text: str, tokens: list[Token]) -> list[PolicySource]:
    """The policies of a file in order, each ending at its top-level `;` (strings are single
    tokens, so a `;` inside one never splits). Trailing tokens without a `;` form a last,
    unterminated policy."""
    policies: list[PolicySource] = []
    current: list[Token] = []
    for token in tokens:
        current.append(token)
        if token.kind == "punct" and token.text == ";":
            policies.append(_policy(len(policies), text, current, terminated=True))
            current = []
    if current:
        policies.append(_policy(len(policies), text, current, terminated=False))
    return policies


def _policy(index: int, text: str, tokens: list[Token], *, terminated: bool) -> PolicySource:
    first, last = tokens[0], tokens[-1]
    return PolicySource(
        index=index,
        text=text[first.offset : last.offset + len(last.text)],
        tokens=tuple(tokens),
        line=first.line,
        column=first.column,
        start=first.offset,
        terminated=terminated,
    )


def locate(policy: PolicySource, message: str, parse: Callable[[str], str | None]) -> tuple[int, int]:
    """Line and column of the problem `message` reports in `policy`. `parse` returns Cedar's
    error message for a text, or None when it parses."""
    if message.startswith("unexpected token"):
        found = _first_rejected_token(policy, parse)
        if found is not None:
            return found.line, found.column
    if message == END_OF_INPUT:
        return policy.end_location()
    if message.startswith("invalid token"):
        bad = next((t for t in policy.tokens if t.kind == "invalid"), None)
        if bad is not None:
            return bad.line, bad.column
    for groups in _BACKTICKED.findall(message):
        quoted = groups[0] or groups[1]
        found = _find_sequence(policy, quoted, attribute="attribute `" + quoted + "`" in message)
        if found is not None:
            return found.line, found.column
    for word in re.findall(r": ([A-Za-z_@][\w@]*)$", message):  # "invalid policy effect: permitt"
        found = _find_sequence(policy, word.lstrip("@"), attribute=False)
        if found is not None:
            return found.line, found.column
    return policy.line, policy.column


def missing_semicolon(policy: PolicySource) -> Token | None:
    """The start of a second policy run into the first (`permit` or an annotation right after a
    `)` or `}`), the usual cause of a parse error: a forgotten `;`."""
    tokens = policy.tokens
    effect_seen = False
    for i in range(1, len(tokens)):
        if tokens[i - 1].text in ("permit", "forbid") and tokens[i].text == "(":
            effect_seen = True
        elif effect_seen and tokens[i - 1].text in (")", "}") and tokens[i].text in ("permit", "forbid", "@"):
            return tokens[i]
    return None


def _first_rejected_token(policy: PolicySource, parse: Callable[[str], str | None]) -> Token | None:
    """The first token after which no continuation can parse: the smallest prefix that Cedar
    rejects with something other than "unexpected end of input"."""
    tokens = policy.tokens

    def rejected(count: int) -> bool:
        last = tokens[count - 1]
        end = last.offset - policy.start + len(last.text)
        error = parse(policy.text[:end])
        return error is not None and error != END_OF_INPUT

    if not rejected(len(tokens)):
        return None
    low, high = 1, len(tokens)
    while low < high:
        middle = (low + high) // 2
        if rejected(middle):
            high = middle
        else:
            low = middle + 1
    return tokens[low - 1]


def _find_sequence(policy: PolicySource, snippet: str, *, attribute: bool) -> Token | None:
    wanted, _ = tokenize(snippet)
    texts = [t.text for t in wanted]
    if not texts:
        return None
    tokens = policy.tokens
    for i in range(len(tokens) - len(texts) + 1):
        if all(tokens[i + k].text == texts[k] for k in range(len(texts))):
            # an attribute is the name after a `.` (or `has`), not a same-named string or variable
            if attribute and len(texts) == 1 and i > 0 and tokens[i - 1].text not in (".", "has"):
                continue
            return tokens[i]
    return None
