"""``gigapulse sql`` without a query: an interactive prompt on the warehouse, or a script read from stdin.

On a terminal it is a prompt with line editing and history (the stdlib's readline; the history is kept
in ``~/.gigapulse_history``, since the data directory may be read-only for analysts). Statements may
span lines and run when a line ends them with ``;``. Lines starting with ``.`` at the start of a
statement are commands of the prompt itself (:data:`HELP`). When stdin is not a terminal the same loop
reads it as a script, without prompts, and the exit status says whether every statement succeeded.

The connection is opened read-only once and kept for the session, with the same checks and output
formats as a query given on the command line (:func:`gigapulse.cli.sql.emit`).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gigapulse.cli.common import UserError
from gigapulse.cli.sql import SqlFormat, emit, interrupted, open_warehouse

if TYPE_CHECKING:
    import duckdb

HISTORY_FILE = "~/.gigapulse_history"
HISTORY_LENGTH = 2000
PROMPT = "gigapulse> "
CONTINUE = "      ...> "

HELP = """\
SQL statements end with ';' and may span lines; only reading statements run (SELECT, WITH, FROM,
DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PIVOT, SET, reporting PRAGMAs).
.tables              the tables and views, with what each holds
.schema NAME         the columns of a table or view: type and meaning
.format FORMAT       table, csv, json (JSON Lines) or parquet (parquet needs .output FILE)
.output [FILE]       write each result to FILE (replacing it); without FILE, back to the screen
.maxrows N|all       rows the table format prints (the row count is always shown)
.help                this text
.quit                leave (also .exit or Ctrl-D)"""


class Shell:
    """The read-eval-print loop; :meth:`feed` takes one line of input (what the tests drive).

    The maintenance step replaces the catalog file whole, and a connection kept open past its grace
    period fails; so before each statement the shell reopens the file if it was replaced (another
    inode), and runs the session's SET statements again on the new connection.
    """

    def __init__(self, db: Path, fmt: SqlFormat, output: Path | None, max_rows: int | None,
                 err: TextIO | None = None):
        self.db = db
        self.fmt = fmt
        self.output = output
        self.max_rows = max_rows
        self.err = err or sys.stderr
        self.buffer: list[str] = []
        self.failures = 0
        self.done = False
        self.settings: list[duckdb.Statement] = []
        self.con: duckdb.DuckDBPyConnection | None = None
        self.inode: int | None = None
        self.connect()

    def connect(self) -> None:
        """(Re)open the catalog read-only, with DuckDB's worker threads deaf to Ctrl-C (see below).

        Statements are parsed on this connection too: DuckDB's module-level parser would start another
        database, whose threads would not be.
        """
        if self.con is not None:
            self.con.close()  # first: DuckDB would hand a new connection the file the old one holds
            self.con = None
        with _threads_without_sigint():
            self.con = open_warehouse(self.db)
        self.inode = _inode(self.db)
        for statement in self.settings:
            self.con.execute(statement)

    def fresh(self) -> duckdb.DuckDBPyConnection:
        """The connection, reopened first if the maintenance step has replaced the catalog file."""
        inode = _inode(self.db)
        if inode is not None and inode != self.inode:
            self.connect()
        return self.con

    def close(self) -> None:
        if self.con is not None:
            self.con.close()

    # ------------------------------------------------------------------ input
    def feed(self, line: str) -> str | None:
        """Take one line; returns the statement text it completed (for the history), if any."""
        from transforms.warehouse.sqltext import ends_statement

        if not self.buffer and line.strip().startswith("."):
            self.dot(line.strip())
            return None
        if not self.buffer and not line.strip():
            return None
        self.buffer.append(line)
        text = "\n".join(self.buffer)
        if not ends_statement(text):
            return None
        self.buffer = []
        self.run(text)
        return text

    def finish(self) -> None:
        """End of input: run what is left, as a last statement without its ';'."""
        text = "\n".join(self.buffer).strip()
        self.buffer = []
        if text:
            self.run(text)

    def fail(self, message: str) -> None:
        self.failures += 1
        print(f"error: {message}", file=self.err, flush=True)

    # ------------------------------------------------------------------ statements
    def run(self, text: str) -> None:
        import duckdb

        from transforms.warehouse.reader import ReadOnlyQueryError, read_only_statements, returns_rows

        try:
            statements = read_only_statements(text, self.fresh())
            for statement in statements:
                emit(self.fresh(), statement, None, self.fmt, self.output, self.max_rows)
                if not returns_rows(statement):
                    self.settings.append(statement)
        except (ReadOnlyQueryError, UserError) as exc:
            self.fail(str(exc))
        except duckdb.Error as exc:
            self.fail(f"SQL error: {str(exc).splitlines()[0]}")
        except KeyboardInterrupt:
            self.fail("interrupted")
        except RuntimeError as exc:
            if not interrupted(exc):
                raise
            self.fail("interrupted")
        except OSError as exc:  # an --output file that cannot be written
            self.fail(str(exc))

    # ------------------------------------------------------------------ dot commands
    def dot(self, line: str) -> None:
        command, _, arg = line.partition(" ")
        arg = arg.strip()
        if command in (".quit", ".exit", ".q"):
            self.done = True
        elif command == ".help":
            print(HELP, flush=True)
        elif command == ".tables":
            self.tables()
        elif command == ".schema":
            self.schema(arg)
        elif command == ".format":
            self.set_format(arg)
        elif command == ".output":
            self.output = Path(arg).expanduser() if arg else None
        elif command == ".maxrows":
            self.set_max_rows(arg)
        else:
            self.fail(f"unknown command {command} (.help lists them)")

    def set_format(self, arg: str) -> None:
        try:
            self.fmt = SqlFormat(arg)
        except ValueError:
            self.fail(f".format takes {', '.join(f.value for f in SqlFormat)}; got {arg or 'nothing'}")

    def set_max_rows(self, arg: str) -> None:
        if arg == "all":
            self.max_rows = None
        elif arg.isdigit() and int(arg) > 0:
            self.max_rows = int(arg)
        else:
            self.fail(f".maxrows takes a positive number or 'all'; got {arg or 'nothing'}")

    def tables(self) -> None:
        """Every table and view with the first sentence of its COMMENT (the catalog's one-line docs)."""
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        rows = self.fresh().execute(
            "SELECT view_name, coalesce(comment, '') FROM duckdb_views() WHERE NOT internal AND schema_name = 'main' "
            "UNION ALL SELECT table_name, coalesce(comment, '') FROM duckdb_tables() "
            "WHERE NOT internal AND schema_name = 'main' AND table_name NOT LIKE 'gigapulse\\_%' ESCAPE '\\' "
            "ORDER BY 1").fetchall()
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True, min_width=max((len(r[0]) for r in rows), default=1))
        grid.add_column(no_wrap=True, overflow="ellipsis")
        for name, comment in rows:
            grid.add_row(Text(name), Text(first_sentence(comment)))
        Console(highlight=False, markup=False, emoji=False).print(grid)

    def schema(self, name: str) -> None:
        """The columns of one table or view: name, type and COMMENT."""
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        if not name:
            self.fail(".schema takes a table or view name (.tables lists them)")
            return
        doc = self.fresh().execute("SELECT comment FROM duckdb_views() WHERE view_name = ? UNION ALL "
                               "SELECT comment FROM duckdb_tables() WHERE table_name = ?", [name, name]).fetchone()
        if doc is None:
            self.fail(f"no table or view named {name} (.tables lists them)")
            return
        columns = self.fresh().execute("SELECT column_name, data_type, coalesce(comment, '') FROM duckdb_columns() "
                                   "WHERE table_name = ? ORDER BY column_index", [name]).fetchall()
        console = Console(highlight=False, markup=False, emoji=False)
        if doc[0]:
            console.print(Text(doc[0]))
        table = Table(show_edge=False, pad_edge=False, highlight=False)
        for header in ("column", "type", "meaning"):
            table.add_column(header, overflow="fold")
        for row in columns:
            table.add_row(*(Text(v) for v in row))
        console.print(table)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:  # deleted under us: keep the open connection, which still reads
        return None


def first_sentence(text: str) -> str:
    """The first sentence of a comment (``grain: what it holds.``), on one line."""
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


# --------------------------------------------------------------------------- input sources

def _prompt(shell: Shell) -> None:
    """Lines typed at the prompt, with readline's editing and a history kept across sessions."""
    import readline

    history = Path(HISTORY_FILE).expanduser()
    with contextlib.suppress(OSError):  # first session, or an unreadable file: an empty history
        readline.read_history_file(history)
    readline.set_history_length(HISTORY_LENGTH)
    try:
        while not shell.done:
            try:
                line = input(CONTINUE if shell.buffer else PROMPT)
            except KeyboardInterrupt:  # Ctrl-C drops what was being typed, as in a shell
                print("^C")
                shell.buffer = []
                continue
            except EOFError:
                print()
                shell.finish()
                return
            completed = shell.feed(line)
            if completed and "\n" in completed:
                _fold_history(readline, completed)
    finally:
        with contextlib.suppress(OSError):  # a read-only home: the session works, its history is not kept
            readline.write_history_file(history)


def _fold_history(readline, statement: str) -> None:
    """Keep a statement typed over several lines as one history entry, so Up brings all of it back.

    readline added each non-empty line as an entry of its own; they are replaced by the joined text.
    """
    for _ in range(sum(1 for line in statement.splitlines() if line)):
        last = readline.get_current_history_length()
        if last:
            readline.remove_history_item(last - 1)
    readline.add_history(" ".join(line.strip() for line in statement.splitlines() if line.strip()))


@contextlib.contextmanager
def _threads_without_sigint() -> Iterator[None]:
    """Threads started inside (DuckDB's workers, at connect) block SIGINT, so Ctrl-C always reaches the
    main thread: waiting at the prompt, it is woken only by a signal delivered to itself."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def run_shell(db: Path, fmt: SqlFormat, output: Path | None, max_rows: int | None,
              stdin: TextIO | None = None) -> int:
    """Run the prompt (on a terminal) or the script (anything else) from ``stdin``; returns the failures."""
    stdin = stdin or sys.stdin
    shell = Shell(db, fmt, output, max_rows)
    try:
        if stdin.isatty() and sys.stdout.isatty():
            print(f"gigapulse sql on {db} (read-only). .help for help, .quit to leave.")
            _prompt(shell)
        else:
            for line in stdin:
                shell.feed(line.rstrip("\n"))
                if shell.done:
                    break
            if not shell.done:
                shell.finish()
    finally:
        shell.close()
    return shell.failures
