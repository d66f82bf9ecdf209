"""SQL text helpers: where a statement typed at a prompt ends, and what comes before its first word."""

from __future__ import annotations

import pytest

from transforms.warehouse.sqltext import ends_statement, strip_leading_comments


@pytest.mark.parametrize(("text", "complete"), [
    ("SELECT 1;", True),
    ("SELECT 1", False),
    ("SELECT 1;  ", True),
    ("SELECT 1; -- done", True),
    ("SELECT 1; /* done */", True),
    ("SELECT 'a;", False),
    ("SELECT 'a;\nb';", True),
    ("SELECT 'it''s;'", False),
    ("SELECT 'it''s';", True),
    ('SELECT 1 AS "a;b"', False),
    ('SELECT 1 AS "a;""b";', True),
    ("SELECT 1 -- not yet;", False),
    ("SELECT 1 /* not yet; */", False),
    ("SELECT 1 /* open; ", False),
    ("SELECT 1 /* a /* nested; */ still; */", False),
    ("SELECT 1 /* a /* nested */ done */;", True),
    ("SELECT $$a;$$", False),
    ("SELECT $$a;$$;", True),
    ("SELECT $tag$a;$tag$;", True),
    ("SELECT $1, $2;", True),
    ("SELECT e'it\\'s;'", False),
    ("SELECT e'it\\'s';", True),
    ("SELECT 1;\nSELECT 2", False),
    ("", False),
])
def test_ends_statement(text, complete):
    assert ends_statement(text) is complete


@pytest.mark.parametrize(("text", "rest"), [
    ("SELECT 1", "SELECT 1"),
    ("  -- a\n  /* b /* c */ */ SELECT 1", "SELECT 1"),
    ("-- only a comment", ""),
    ("/* open", ""),
])
def test_strip_leading_comments(text, rest):
    assert strip_leading_comments(text) == rest
