"""``gigapulse sql``: the analysts' front door, one query from the command line or an interactive prompt.

It only ever reads: the warehouse file is opened read-only, never created and never rebuilt here (the
maintenance step, ``gigapulse warehouse``, does that), so any number of these run at once beside
notebooks and ``duckdb -readonly`` sessions, and beside the stream writing the lake. Statements are
checked before anything runs (:mod:`transforms.warehouse.reader`): a write is refused in one line.

Start-up is kept near the interpreter's own: this module imports typer and DuckDB; Rich's table,
pyarrow (Parquet only) and readline (the prompt only) are imported when used, and the data directory is
read without pydantic-settings (:func:`data_dir`).

Output (``--format``): ``table`` for people (fits the terminal, says how many rows the result has,
prints the first ``--max-rows``); ``csv``, ``json`` (JSON Lines) and ``parquet`` for other tools,
written as the rows arrive (see :mod:`transforms.warehouse.export` for how each type is written).
"""

from __future__ import annotations

import datetime
import math
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from gigapulse.cli.common import UserError, app

if TYPE_CHECKING:
    import duckdb

#: Rows printed by the table format unless --max-rows or --all say otherwise.
DEFAULT_MAX_ROWS = 40
#: With --all, the table is printed in pages of this many rows, so memory stays bounded.
PAGE_ROWS = 1000
#: Narrowest a column is squeezed to before the table turns into one block per record.
MIN_COLUMN_WIDTH = 10
_NUMERIC = re.compile(r"^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|DOUBLE|FLOAT|REAL|DECIMAL.*|UHUGEINT)$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class SqlFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def data_dir(environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """``GIGAPULSE_DATA_DIR`` read as :class:`transforms.settings.DataSettings` reads it.

    Importing pydantic-settings takes 0.4 s, more than the rest of ``gigapulse sql 'SELECT 1'``; a test
    holds this equal to ``DataSettings().data_dir``. Names match case-insensitively, as there.
    """
    found = None
    for key, value in environ.items():
        if key.lower() == "gigapulse_data_dir":
            found = value
    return Path(found) if found is not None else Path(__file__).resolve().parents[2] / "var"


def warehouse_path(directory: Path) -> Path:
    """The warehouse file of a data directory; a one-line error (never a new file) when it is missing."""
    db = directory / "gigapulse.duckdb"
    if not db.is_file():
        raise UserError(f"no warehouse in the data directory {directory} (GIGAPULSE_DATA_DIR): create it "
                        "with 'gigapulse warehouse' once the lake has data (gigapulse stream)")
    return db


def open_warehouse(db: Path) -> duckdb.DuckDBPyConnection:
    """The read-only connection every analyst statement runs on (locks are waited out briefly)."""
    import duckdb

    from transforms.warehouse.reader import connect

    try:
        return connect(db)
    except duckdb.IOException as exc:
        first = str(exc).splitlines()[0]
        if "lock" in first.lower():
            raise UserError(f"{db} is locked by a process writing it in place; readers wait for the "
                            f"maintenance step to replace it whole ({first})") from None
        raise UserError(f"cannot open {db}: {first}") from None


# --------------------------------------------------------------------------- output files

@contextmanager
def file_target(path: Path) -> Iterator[Path]:
    """The path to write ``path`` through: a temporary sibling renamed over it when the writing succeeds,
    so a failed or interrupted query leaves no half-written file (FIFOs and devices are written directly).
    """
    if path.exists() and not path.is_file():
        yield path
        return
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: there is no directory {path.parent}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def text_output(path: Path | None) -> Iterator[TextIO]:
    """stdout, or ``path`` replaced when the writing succeeds."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    with file_target(path) as target, open(target, "w", encoding="utf-8", newline="") as f:
        yield f


# --------------------------------------------------------------------------- the table format

def cell_text(value: Any) -> str | None:
    """What a table cell shows: CSV's text, floats to 10 significant digits, timestamps with a space,
    and control characters escaped (data never moves the terminal); None for NULL."""
    from transforms.warehouse.export import scalar_text

    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.10g}"
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", scalar_text(value))


def _count_rest(cursor: duckdb.DuckDBPyConnection) -> int:
    """Rows left in the result, counted without holding them (Arrow batches once the result is large)."""
    from transforms.warehouse.export import BATCH_ROWS

    n = len(cursor.fetchmany(BATCH_ROWS))
    if n < BATCH_ROWS:
        return n
    import warnings

    with warnings.catch_warnings():
        # DuckDB notes that Arrow batches of a cursor cost a copy: they are counted and dropped.
        warnings.simplefilter("ignore")
        reader = cursor.to_arrow_reader(BATCH_ROWS * 16)
    return n + sum(batch.num_rows for batch in reader)


def _broken_pipe() -> None:
    raise BrokenPipeError


def _plural(n: int, what: str = "row") -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def show_table(cursor: duckdb.DuckDBPyConnection, out: TextIO, max_rows: int | None,
               width: int | None = None) -> int:
    """Print the executed statement's result for people; returns how many rows the result has.

    The table fits the console's width (cells wrap or fold); when the columns cannot keep
    ``MIN_COLUMN_WIDTH`` characters each, every row is shown as a block of ``column  value`` lines
    instead. At most ``max_rows`` rows are printed (all with None, in pages), then one line says how
    many rows the result has.
    """
    from rich.console import Console

    console = Console(file=out, width=width, highlight=False, markup=False, emoji=False, soft_wrap=False)
    console.on_broken_pipe = _broken_pipe  # Rich would exit 1; the command ends quietly as for csv
    columns = [d[0] for d in cursor.description]
    types = [str(d[1]) for d in cursor.description]
    shown = 0
    page = PAGE_ROWS if max_rows is None else max_rows
    while rows := cursor.fetchmany(page):
        _render(console, columns, types, [[cell_text(v) for v in r] for r in rows], shown)
        shown += len(rows)
        if max_rows is not None:
            break
    total = shown + (_count_rest(cursor) if max_rows is not None and shown == max_rows else 0)
    if shown == 0:
        _render(console, columns, types, [], 0)
    if total > shown:
        console.print(f"{shown:,} of {_plural(total)} shown (--max-rows N or --all for more; --format "
                      "csv, json or parquet with --output FILE for all of them)", soft_wrap=True)
    else:
        console.print(_plural(total))
    return total


def _cell(value: str | None):
    from rich.text import Text

    return Text("NULL", style="dim") if value is None else Text(value)


def _render(console, columns: list[str], types: list[str], rows: list[list[str | None]], first_index: int) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    natural = [max([len(c), len(t)] + [max(map(len, (r[i] or "NULL").splitlines() or [""])) for r in rows])
               for i, (c, t) in enumerate(zip(columns, types, strict=True))]
    least = [min(n, MIN_COLUMN_WIDTH) for n in natural]
    if sum(least) + 3 * len(columns) + 1 > console.width:
        _render_records(console, columns, rows, first_index)
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, highlight=False)
    for name, kind, low in zip(columns, types, least, strict=True):
        header = Text(name, style="bold")
        header.append(f"\n{kind}", style="dim")
        table.add_column(header, justify="right" if _NUMERIC.match(kind) else "left", overflow="fold",
                         min_width=low)
    for r in rows:
        table.add_row(*(_cell(v) for v in r))
    console.print(table)


def _render_records(console, columns: list[str], rows: list[list[str | None]], first_index: int) -> None:
    from rich.table import Table
    from rich.text import Text

    if first_index == 0:
        console.print(f"{len(columns)} columns do not fit in {console.width} characters: one block per row "
                      "(--format csv keeps one line per row)", soft_wrap=True)
    label = max(map(len, columns))
    for i, r in enumerate(rows, start=first_index + 1):
        console.print(Text(f"-[ row {i} ]".ljust(console.width, "-"), style="dim"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=label, style="bold", overflow="fold")
        grid.add_column(overflow="fold")
        for name, v in zip(columns, r, strict=True):
            grid.add_row(Text(name), _cell(v))
        console.print(grid)


# --------------------------------------------------------------------------- one statement

def emit(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement, params: list[str] | None, fmt: SqlFormat,
         output: Path | None, max_rows: int | None) -> None:
    """Run one checked statement and write its result in ``fmt`` to ``output`` (stdout when None)."""
    from transforms.warehouse import export
    from transforms.warehouse.reader import returns_rows

    if not returns_rows(statement):
        con.execute(statement)
        return
    if fmt is SqlFormat.parquet:
        if output is None:
            raise UserError("--format parquet writes a file: give --output FILE")
        relation = con.sql(statement.query, params=params)
        with file_target(output) as target:
            n = export.write_parquet(relation, target)
        print(f"{_plural(n)} written to {output}", file=sys.stderr)
        return
    cursor = con.execute(statement, params) if params else con.execute(statement)
    if cursor.description is None:
        return
    with text_output(output) as f:
        if fmt is SqlFormat.table:
            show_table(cursor, f, max_rows)
            return
        n = (export.write_csv if fmt is SqlFormat.csv else export.write_jsonl)(cursor, f)
    if output is not None:
        print(f"{_plural(n)} written to {output}", file=sys.stderr)


def checked_statements(text: str, params: list[str] | None, fmt: SqlFormat,
                       con: duckdb.DuckDBPyConnection | None = None) -> list[duckdb.Statement]:
    """Every statement of ``text``, checked before any runs; parsed on ``con`` when there is one
    (DuckDB's module-level parser opens an in-memory database first: 50 ms of start-up)."""
    import duckdb

    from transforms.warehouse.reader import ReadOnlyQueryError, read_only_statements, returns_rows

    try:
        statements = read_only_statements(text, con)
    except ReadOnlyQueryError as exc:
        raise UserError(str(exc)) from None
    except duckdb.Error as exc:
        raise UserError(f"SQL error: {str(exc).splitlines()[0]}") from None
    if params and len(statements) != 1:
        raise UserError(f"--param binds the parameters of one statement; got {len(statements)}")
    results = sum(1 for s in statements if returns_rows(s))
    if fmt is not SqlFormat.table and results > 1:
        raise UserError(f"--format {fmt.value} writes one result; got {results} queries (SET statements may "
                        "come before it)")
    return statements


def run_statements(db: Path, text: str, params: list[str] | None, fmt: SqlFormat, output: Path | None,
                   max_rows: int | None) -> None:
    """Check every statement of ``text``, then run them in order on one read-only connection."""
    import duckdb

    con = open_warehouse(db)
    try:
        statements = checked_statements(text, params, fmt, con)
        for statement in statements:
            emit(con, statement, params, fmt, output, max_rows)
    except duckdb.Error as exc:
        raise UserError(f"SQL error: {str(exc).splitlines()[0]}") from None
    except RuntimeError as exc:
        if interrupted(exc):
            raise KeyboardInterrupt from None
        raise
    finally:
        con.close()


def interrupted(exc: BaseException) -> bool:
    """DuckDB's answer to Ctrl-C during a query: a RuntimeError, not a KeyboardInterrupt."""
    return isinstance(exc, RuntimeError) and str(exc) == "Query interrupted"


@app.command()
def sql(
    query: Annotated[str | None, typer.Argument(help="SQL over the warehouse views (docs/tables.md). Omit it for "
                                                     "an interactive prompt; when stdin is not a terminal, "
                                                     "statements ending in ';' are read from it.")] = None,
    fmt: Annotated[SqlFormat, typer.Option("--format", help="table (for people), csv, json (JSON Lines) or "
                                                            "parquet (needs --output).")] = SqlFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", dir_okay=False, help="Write the result to "
                                                "FILE (replaced only when the query succeeds); default stdout.")]
    = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Bound parameter for each ? in the "
                                                    "query, in order (repeatable).")] = None,
    max_rows: Annotated[int, typer.Option("--max-rows", min=1, help="Table format: rows to print (the row count "
                                                                    "is always shown).")] = DEFAULT_MAX_ROWS,
    all_rows: Annotated[bool, typer.Option("--all", help="Table format: print every row.")] = False,
):
    """Read-only SQL over the warehouse: one query, or an interactive prompt without one (see docs/warehouse.md).

    Allowed: SELECT (WITH, FROM-first, VALUES), DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PIVOT, SET and the
    PRAGMAs that only report; several statements separated by ';' are all checked before any runs.
    Anything that writes is refused with one line.
    """
    if fmt is SqlFormat.parquet and output is None:
        raise typer.BadParameter("--format parquet writes a file: give --output FILE", param_hint="--output")
    params = list(param) if param else None
    directory = data_dir()
    if query is not None and not (directory / "gigapulse.duckdb").is_file():
        checked_statements(query, params, fmt)  # a write is refused as such, warehouse or not
    db = warehouse_path(directory)
    limit = None if all_rows else max_rows
    try:
        if query is None:
            from gigapulse.cli.sql_shell import run_shell

            if run_shell(db, fmt, output, limit):
                raise typer.Exit(1)
            return
        run_statements(db, query, params, fmt, output, limit)
    except BrokenPipeError:
        # The reader went away (| head): nothing left to say, and nothing more can be written.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt:
        print("gigapulse: interrupted", file=sys.stderr)  # typer would exit 130 without a word
        raise typer.Exit(130) from None
