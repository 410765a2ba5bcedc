"""Split psql scripts (the PostgreSQL regression suite) into the statements psql would send.

The differential test replays the corpus statement by statement, so the split has to agree with
psql's own lexer where it matters: a `;` ends a statement only outside quotes, comments, dollar
quotes, parentheses and the `BEGIN ... END` body of a SQL-standard function; backslash
meta-commands are psql's, not the server's (the `\\g` family also sends the buffer, like `;`); and
the data lines after `COPY ... FROM stdin` (up to `\\.`) are not SQL at all, but only when the
server accepted the COPY: after a failed COPY psql reads those lines as SQL again. That is why the
reader is lazy and the caller says, with `take_copy_data()`, whether the data was consumed.

This is a test helper, not part of the server: Bastion receives one statement per call and leaves
splitting to sqlglot's tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# psql meta-commands that send the current query buffer to the server, as `;` does
_SENDING_META = re.compile(r"\\(?:g|gx|gset|gexec|gdesc|crosstabview|watch)(?![A-Za-z])")
# PostgreSQL accepts `FROM STDOUT` as a synonym of `FROM STDIN`: both mean "the client"
_COPY_FROM_STDIN = re.compile(r"^\s*\\?copy\b.*\bfrom\s+std(in|out)\b", re.IGNORECASE | re.DOTALL)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9\x80-\U0010ffff]*)?\$")
_WORD = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9$\x80-\U0010ffff]*")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True)
class CorpusStatement:
    """One statement as psql would send it, with the 1-based line it starts on (for reports)."""

    sql: str
    line: int

    @property
    def copies_from_stdin(self) -> bool:
        """Whether data lines may follow this statement in the script."""
        return bool(_COPY_FROM_STDIN.match(_COMMENTS.sub(" ", self.sql)))


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) >= 0x80


class ScriptReader:
    """A character scanner mirroring the parts of psql's lexer (psqlscan.l) that decide where a
    statement ends. It does not validate SQL: anything odd is passed on for the server to judge.

    Iterate it for the statements; right after a statement whose `copies_from_stdin` is true,
    `peek_copy_data()` shows the data lines that follow and `take_copy_data()` skips them (call it
    only if the server accepted the COPY)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self._reset()

    def _reset(self) -> None:
        self.start = self.i
        self.dropped: list[tuple[int, int]] = []  # meta-command spans inside the statement
        self.paren_depth = 0
        self.begin_depth = 0
        self.words: list[str] = []  # leading words, to spot CREATE [OR REPLACE] FUNCTION|PROCEDURE

    # --- COPY data -------------------------------------------------------------------------------

    def _copy_data_span(self) -> tuple[int, int, int]:
        """(data start, data end, resume position) of the lines after the current one up to `\\.`."""
        text = self.text
        newline = text.find("\n", self.i)
        data_start = pos = len(text) if newline < 0 else newline + 1
        while pos < len(text):
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            if text[pos:end].rstrip() == "\\.":
                return data_start, pos, min(end + 1, len(text))
            pos = end + 1
        return data_start, len(text), len(text)

    def peek_copy_data(self) -> str:
        start, end, _ = self._copy_data_span()
        return self.text[start:end]

    def take_copy_data(self) -> str:
        start, end, resume = self._copy_data_span()
        self.i = resume
        self._reset()
        return self.text[start:end]

    # --- scanning --------------------------------------------------------------------------------

    def _line_of(self, index: int) -> int:
        return self.text.count("\n", 0, index) + 1

    def _take(self, end: int) -> CorpusStatement | None:
        raw, pos = "", self.start
        for drop_start, drop_end in self.dropped:
            raw += self.text[pos:drop_start]
            pos = drop_end
        raw += self.text[pos:end]
        first = self.start + (len(raw) - len(raw.lstrip()))
        self._reset()
        if not _COMMENTS.sub(" ", raw).strip():
            return None
        return CorpusStatement(sql=raw.strip(), line=self._line_of(first))

    def _in_function_body_context(self) -> bool:
        w = self.words
        if len(w) < 2 or w[0] != "create":
            return False
        if w[1] in ("function", "procedure"):
            return True
        return len(w) >= 4 and w[1] == "or" and w[2] == "replace" and w[3] in ("function", "procedure")

    def _meta_command(self) -> CorpusStatement | None:
        """A backslash outside quotes starts a psql meta-command that runs to the end of the line."""
        text = self.text
        end = text.find("\n", self.i)
        end = len(text) if end < 0 else end
        command = text[self.i : end]
        before = self.i
        self.i = end
        if _SENDING_META.match(command):
            return self._take(before)
        if text[self.start : before].strip():
            self.dropped.append((before, end))
        elif _COPY_FROM_STDIN.match(command):
            self.take_copy_data()  # \copy ... from stdin: psql reads the data lines itself
        else:
            self.start = self.i
        return None

    def __iter__(self) -> Iterator[CorpusStatement]:
        text = self.text
        while self.i < len(text):
            statement = self._step()
            if statement is not None:
                yield statement
        statement = self._take(len(text))
        if statement is not None:
            yield statement

    def _step(self) -> CorpusStatement | None:
        text = self.text
        ch = text[self.i]
        nxt = text[self.i + 1 : self.i + 2]
        if ch == "-" and nxt == "-":
            end = text.find("\n", self.i)
            self.i = len(text) if end < 0 else end
        elif ch == "/" and nxt == "*":
            self._skip_block_comment()
        elif ch == "'":
            prev = text[self.i - 1] if self.i else ""
            before_prev = text[self.i - 2] if self.i > 1 else ""
            escapes = prev in ("e", "E") and not (before_prev and _is_ident_char(before_prev))
            self._skip_quoted("'", backslash_escapes=escapes)
        elif ch == '"':
            self._skip_quoted('"', backslash_escapes=False)
        elif ch == "$" and not (self.i and _is_ident_char(text[self.i - 1])):
            match = _DOLLAR_TAG.match(text, self.i)
            if match:
                close = text.find(match.group(0), match.end())
                self.i = len(text) if close < 0 else close + len(match.group(0))
            else:
                self.i += 1
        elif ch == "\\":
            return self._meta_command()
        elif ch == "(":
            self.paren_depth += 1
            self.i += 1
        elif ch == ")":
            self.paren_depth = max(0, self.paren_depth - 1)
            self.i += 1
        elif ch == ";" and self.paren_depth == 0 and self.begin_depth == 0:
            self.i += 1
            return self._take(self.i - 1)
        elif _is_ident_char(ch) and not ch.isdigit() and ch != "$":
            self._word()
        else:
            self.i += 1
        return None

    def _word(self) -> None:
        match = _WORD.match(self.text, self.i)
        if match is None:  # a character str.isalnum() accepts but the pattern does not
            self.i += 1
            return
        self.i = match.end()
        word = match.group(0).lower()
        if len(self.words) < 4:
            self.words.append(word)
        if self.paren_depth == 0 and self._in_function_body_context():
            if word == "begin" or (word == "case" and self.begin_depth > 0):
                self.begin_depth += 1
            elif word == "end" and self.begin_depth > 0:
                self.begin_depth -= 1

    def _skip_block_comment(self) -> None:
        text = self.text
        depth = 0
        while self.i < len(text):
            if text.startswith("/*", self.i):
                depth += 1
                self.i += 2
            elif text.startswith("*/", self.i):
                depth -= 1
                self.i += 2
                if depth == 0:
                    return
            else:
                self.i += 1

    def _skip_quoted(self, quote: str, *, backslash_escapes: bool) -> None:
        text = self.text
        self.i += 1
        while self.i < len(text):
            ch = text[self.i]
            if backslash_escapes and ch == "\\":
                self.i += 2
            elif ch == quote:
                if text.startswith(quote * 2, self.i):
                    self.i += 2
                else:
                    self.i += 1
                    return
            else:
                self.i += 1


def split_statements(text: str) -> list[CorpusStatement]:
    """The statements of a psql script, in order, assuming every `COPY ... FROM stdin` succeeds."""
    reader = ScriptReader(text)
    statements = []
    for statement in reader:
        statements.append(statement)
        if statement.copies_from_stdin:
            reader.take_copy_data()
    return statements


def corpus_files(root: Path) -> list[Path]:
    return sorted(root.glob("*.sql"))
