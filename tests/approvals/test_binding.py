"""The statement an approval binds to: whitespace, comments, keyword case and a trailing `;` do not
matter; any other change does."""

from __future__ import annotations

import pytest

from server.approvals.binding import fingerprint
from server.errors import SQLRejected

BASE = "UPDATE customers SET email = 'a@example.com' WHERE id = 1"

SAME = [
    "update customers set email = 'a@example.com' where id = 1",
    "UPDATE customers\n   SET email='a@example.com'\nWHERE id=1;",
    "UPDATE /* fix the typo */ customers SET email = 'a@example.com' -- see ticket 42\nWHERE id = 1",
    "  UPDATE\tcustomers SET email = 'a@example.com' WHERE id = 1 ;  ",
]

DIFFERENT = [
    "UPDATE customers SET email = 'b@example.com' WHERE id = 1",
    "UPDATE customers SET email = 'A@example.com' WHERE id = 1",
    "UPDATE customers SET email = 'a@example.com' WHERE id = 2",
    "UPDATE customers SET email = 'a@example.com' WHERE id = 1.0",
    "UPDATE customers SET email = 'a@example.com' WHERE id >= 1",
    "UPDATE customers SET email = 'a@example.com' WHERE id = 1 OR true",
    "UPDATE Customers SET email = 'a@example.com' WHERE id = 1",
    "UPDATE \"customers\" SET email = 'a@example.com' WHERE id = 1",
    "UPDATE customers SET email = 'a@example.com' WHERE id = '1'",
    "UPDATE customers SET email = 'a@example.com', country = 'DE' WHERE id = 1",
    "UPDATE customers SET email = 'a@example.com'",
    "UPDATE sales.customers SET email = 'a@example.com' WHERE id = 1",
]


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
@pytest.mark.parametrize("sql", SAME)
def test_layout_comments_and_keyword_case_do_not_matter(sql: str, dialect: str) -> None:
    assert fingerprint(sql, dialect) == fingerprint(BASE, dialect)


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
@pytest.mark.parametrize("sql", DIFFERENT)
def test_any_other_change_is_another_statement(sql: str, dialect: str) -> None:
    assert fingerprint(sql, dialect) != fingerprint(BASE, dialect)


def test_a_comment_marker_inside_a_string_is_part_of_the_literal() -> None:
    one = "UPDATE t SET note = 'a -- b' WHERE id = 1"
    other = "UPDATE t SET note = 'a' WHERE id = 1"
    assert fingerprint(one, "postgres") != fingerprint(other, "postgres")


def test_the_dialect_is_part_of_the_binding() -> None:
    assert fingerprint(BASE, "postgres") != fingerprint(BASE, "sqlite")


def test_unterminated_text_is_refused() -> None:
    with pytest.raises(SQLRejected):
        fingerprint("UPDATE t SET a = 'oops", "postgres")
