"""SQL as text: literals and identifiers for view definitions (which cannot hold bound parameters), and
where statements typed at a prompt begin and end."""

from __future__ import annotations

from pathlib import Path


def sql_string(text: str) -> str:
    """A SQL string literal.

    Only for what DuckDB cannot take as a bound parameter: the path inside a view definition (a
    view is stored as text, so it cannot hold a parameter) and ``COMMENT ON``. Doubling the quote is
    the whole of SQL string escaping; backslashes have no meaning in a DuckDB literal.
    """
    return "'" + text.replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    """A quoted identifier (columns such as ``count``, ``min``, ``date`` are keywords)."""
    return '"' + name.replace('"', '""') + '"'


def lake_glob(lake_root: Path, table: str) -> str:
    """The glob of a table's files; temporary files (``.*.tmp``) never match it."""
    root = Path(lake_root).resolve().as_posix()
    if any(ch in root for ch in "*?[]{}"):
        raise ValueError(f"lake root {root!r} holds glob characters, which DuckDB cannot escape")
    if "=" in root:
        raise ValueError(f"lake root {root!r} holds '=', which hive partitioning would read as a column")
    return f"{root}/{table}/**/*.parquet"




# --------------------------------------------------------------------------- statements typed by hand

def strip_leading_comments(text: str) -> str:
    """``text`` without the whitespace and ``--`` / ``/* */`` comments before its first token."""
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = _block_comment_end(text, i)
            if end < 0:
                return ""
            i = end
        else:
            break
    return text[i:]


def _block_comment_end(text: str, i: int) -> int:
    """Index after the block comment opening at ``i`` (they nest, as in DuckDB), or -1 if it is open."""
    depth, i = 0, i
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return -1


def ends_statement(text: str) -> bool:
    """True when ``text`` ends with a ``;`` that closes a statement: outside strings, quoted names
    and comments, with nothing but whitespace and comments after it.

    What an interactive prompt asks after each line to know whether to run what was typed or to
    wait for more: ``SELECT 'a;`` followed by a new line is still inside its string.
    """
    i, n, last = 0, len(text), ""
    while i < n:
        ch = text[i]
        if ch in "'\"":
            backslash = ch == "'" and i > 0 and text[i - 1] in "eE" and (i == 1 or not text[i - 2].isalnum())
            i = _quote_end(text, i, backslash)
            if i < 0:
                return False
            last = ch
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            i = _block_comment_end(text, i)
            if i < 0:
                return False
        elif ch == "$" and (tag := _dollar_tag(text, i)):
            end = text.find(tag, i + len(tag))
            if end < 0:
                return False
            i, last = end + len(tag), "$"
        else:
            if not ch.isspace():
                last = ch
            i += 1
    return last == ";"


def _quote_end(text: str, i: int, backslash: bool) -> int:
    """Index after the string or quoted name opening at ``i`` (a doubled quote stays inside), or -1."""
    quote, i = text[i], i + 1
    while i < len(text):
        if backslash and text[i] == "\\":
            i += 2
        elif text[i] == quote:
            if text.startswith(quote * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return -1


def _dollar_tag(text: str, i: int) -> str:
    """The ``$tag$`` opening a dollar-quoted string at ``i``, or '' (``$1`` is a parameter)."""
    end = text.find("$", i + 1)
    if end < 0:
        return ""
    tag = text[i:end + 1]
    return tag if tag == "$$" or tag[1:-1].isidentifier() else ""
