"""``gigapulse sql`` without a query: a script on stdin, and the prompt on a real terminal (a pty)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from gigapulse.cli.sql_shell import first_sentence

REPO = Path(__file__).resolve().parents[3]


def _env(data: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("gigapulse_")}
    env.update(GIGAPULSE_DATA_DIR=str(data), PYTHONPATH=str(REPO), HOME=str(home), COLUMNS="120", **extra)
    return env


def script(text: str, data: Path, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gigapulse.cli", "sql"], input=text, capture_output=True, text=True,
                          timeout=60, env=_env(data, home), cwd=REPO)


SCRIPT = """\
.tables
.schema energy_per_cell
SELECT count(*) AS ctq_sensors
FROM sensors
WHERE ctq;
.format csv
SELECT 'a;b' AS s,  -- a ';' in a string or a comment does not end the statement
       2 AS n;
INSERT INTO sensors SELECT * FROM sensors;
.nosuch
SELECT 3 AS after_errors;
.quit
SELECT 'never' AS x;
"""


def test_a_script_on_stdin_runs_statement_by_statement(simulated_warehouse, tmp_path):
    con = duckdb.connect(str(simulated_warehouse), read_only=True)
    ctq = con.execute("SELECT count(*) FROM sensors WHERE ctq").fetchone()[0]
    views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
    con.close()
    res = script(SCRIPT, simulated_warehouse.parent, tmp_path)
    out = res.stdout
    # .tables: every view, with the first sentence of its comment
    for view in views:
        assert f"\n{view} " in "\n" + out, view
    assert "one line x one hour: Energy drawn by a line's metered stations per UTC hour" in out
    # .schema: the columns with their types and meanings
    assert "kwh_per_good_cell" in out and "kwh / good_cells; null when no good cell was reported." in out
    # a statement over three lines, in the table format
    assert f"{ctq:,}" in out.split("ctq_sensors", 1)[1] and "1 row" in out
    # .format csv, and a statement over two lines with ';' inside a string and a comment
    assert "s,n\na;b,2\n" in out
    assert "after_errors\n3\n" in out and "never" not in out
    errors = res.stderr.splitlines()
    assert len(errors) == 2, res.stderr
    assert errors[0].startswith("error: the warehouse is read-only: INSERT statements are refused")
    assert errors[1] == "error: unknown command .nosuch (.help lists them)"
    assert res.returncode == 1  # a script says whether every statement succeeded


def test_a_script_without_errors_exits_zero_and_runs_a_last_statement_without_semicolon(simulated_warehouse,
                                                                                        tmp_path):
    out_file = tmp_path / "out.json"
    text = f".format json\n.output {out_file}\nSELECT 1 AS one;\n.output\n.maxrows 2\nSELECT i FROM range(5) t(i)\n"
    res = script(text, simulated_warehouse.parent, tmp_path)
    assert res.returncode == 0, res.stderr
    assert out_file.read_text() == '{"one":1}\n'
    assert '{"i":0}' in res.stdout and '{"i":4}' in res.stdout  # .maxrows is for the table format only
    res = script(".maxrows 2\nSELECT i FROM range(5) t(i)", simulated_warehouse.parent, tmp_path)
    assert "2 of 5 rows shown" in res.stdout


@pytest.mark.parametrize(("line", "message"), [
    (".format xml", ".format takes table, csv, json, parquet; got xml"),
    (".maxrows none", ".maxrows takes a positive number or 'all'; got none"),
    (".schema", ".schema takes a table or view name"),
    (".schema nope", "no table or view named nope"),
    ("SELEC 1;", "SQL error: Parser Error"),
    (".format parquet\nSELECT 1;", "--format parquet writes a file: give --output FILE"),
])
def test_mistakes_at_the_prompt_are_one_line_and_the_session_goes_on(line, message, simulated_warehouse, tmp_path):
    res = script(f"{line}\n.format csv\nSELECT 'still here' AS s;\n", simulated_warehouse.parent, tmp_path)
    assert res.stderr.startswith(f"error: {message}") and res.stderr.count("\n") == 1, res.stderr
    assert "still here" in res.stdout


def test_help_lists_the_dot_commands(simulated_warehouse, tmp_path):
    res = script(".help\n", simulated_warehouse.parent, tmp_path)
    for command in (".tables", ".schema", ".format", ".output", ".maxrows", ".quit"):
        assert command in res.stdout


def test_first_sentence():
    assert first_sentence("one row: what it is. More text.") == "one row: what it is."
    assert first_sentence("no full stop\nat all") == "no full stop at all"
    assert first_sentence("") == ""


# --------------------------------------------------------------------------- a real terminal

class Terminal:
    """A process on a pseudo-terminal of its own (its controlling terminal, so Ctrl-C is a signal),
    read until what is expected appears."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: become the program at once
            # A runner started in the background ignores SIGINT, and an ignored signal stays ignored
            # across exec (Python then installs no KeyboardInterrupt): give Ctrl-C its meaning back.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.chdir(REPO)
            os.execve(argv[0], argv, env)
        # A terminal of 30 x 120 (a new pty is 0 x 0, and readline then tells the program 80 columns).
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        self.seen = ""

    def expect(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the process closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{text!r} did not appear before the end:\n{self.seen}")
                self.seen += chunk.decode(errors="replace")
        end = self.seen.index(text) + len(text)
        found, self.seen = self.seen[:end], self.seen[end:]
        return found

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = 30) -> int | None:
        """The exit status, or None if the process still runs after ``timeout`` (it is killed then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.05)[0]:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.master, 4096).decode(errors="replace")  # keep it drained
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.master)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.master)
        return None


def test_the_prompt_on_a_terminal_edits_spans_lines_and_keeps_history(simulated_warehouse, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    term = Terminal([sys.executable, "-m", "gigapulse.cli", "sql"], _env(simulated_warehouse.parent, home,
                                                                          TERM="xterm"))
    try:
        term.expect("(read-only). .help for help, .quit to leave.")
        term.expect("gigapulse> ")
        term.send("SELECT 41 +\r")
        term.expect("...> ")
        term.send("1 AS answer;\r")
        assert "42" in term.expect("1 row")
        term.expect("gigapulse> ")
        term.send("\x10\r")  # Ctrl-P: the previous statement, as one entry, run again
        assert "42" in term.expect("1 row")
        term.expect("gigapulse> ")
        term.send("SELECT 'half typed\x03")  # Ctrl-C drops the line and prompts again
        term.expect("gigapulse> ")
        term.send(".tables\r")
        line = term.expect("energy_per_cell") + term.expect("\n")
        assert "one line x one hour: Energy drawn by a line's metered stations per UTC" in line  # 120 wide
        term.expect("gigapulse> ")
        term.send("\x04")  # Ctrl-D leaves
    finally:
        status = term.wait()
    assert status == 0
    history = (home / ".gigapulse_history").read_text().splitlines()
    # One entry for the statement typed over two lines (readline does not repeat an entry run twice in a row).
    assert history == ["SELECT 41 + 1 AS answer;", ".tables"]


def test_a_session_follows_the_catalog_when_the_maintenance_step_replaces_it(tmp_path):
    """A catalog replaced by an atomic rename (another file) is reopened before the next statement,
    with the session's settings: a long session never ends on a catalog whose files were collected."""
    from schemas.asset_model import load_plant
    from transforms.warehouse import build_catalog, write_sensors

    data = tmp_path / "data"
    db = data / "gigapulse.duckdb"
    build_catalog(data / "lake", db)  # sensors is still an empty view
    proc = subprocess.Popen([sys.executable, "-m", "gigapulse.cli", "sql"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(data, tmp_path),
                            cwd=REPO)

    def ask(line: str) -> str:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        header = proc.stdout.readline()
        return header + proc.stdout.readline()

    try:
        proc.stdin.write(".format csv\nSET TimeZone = 'Asia/Tokyo';\n")  # neither prints anything
        assert ask("SELECT count(*) AS n, current_setting('TimeZone') AS tz FROM sensors;") == "n,tz\n0,Asia/Tokyo\n"
        inode = db.stat().st_ino
        write_sensors(data / "lake", load_plant("reference").sensors[:2])
        build_catalog(data / "lake", db)  # publishes a new file over the old one
        assert db.stat().st_ino != inode
        assert ask("SELECT count(*) AS n, current_setting('TimeZone') AS tz FROM sensors;") == "n,tz\n2,Asia/Tokyo\n"
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()


def test_only_the_main_thread_takes_ctrl_c_at_the_prompt(simulated_warehouse, tmp_path):
    """The prompt waits in select() and wakes for Ctrl-C only if the signal reaches the main thread:
    every thread DuckDB starts for the session blocks SIGINT."""
    code = textwrap.dedent("""
        import glob, io, sys
        from pathlib import Path
        from gigapulse.cli.sql import SqlFormat
        from gigapulse.cli.sql_shell import Shell
        shell = Shell(Path(sys.argv[1]), SqlFormat.csv, None, 40)
        for line in ("SELECT count(*) FROM readings;", "EXPLAIN SELECT 1;", ".tables", "SET threads = 2;"):
            shell.feed(line)
        taking = [t for t in glob.glob("/proc/self/task/*")
                  if not int(next(l for l in open(t + "/status") if l.startswith("SigBlk")).split()[1], 16) & 2]
        print(len(glob.glob("/proc/self/task/*")), len(taking), file=sys.stderr)
    """)
    res = subprocess.run([sys.executable, "-c", code, str(simulated_warehouse)], capture_output=True, text=True,
                         timeout=60, env=_env(simulated_warehouse.parent, tmp_path), cwd=REPO)
    threads, taking = map(int, res.stderr.split()[-2:])
    assert threads > 1 and taking == 1, res.stderr


def test_ctrl_c_during_a_query_at_the_prompt_ends_the_query_not_the_session(simulated_warehouse, monkeypatch, capsys):
    import gigapulse.cli.sql_shell as shell_module
    from gigapulse.cli.sql import SqlFormat

    shell = shell_module.Shell(simulated_warehouse, SqlFormat.csv, None, 40)
    real_emit = shell_module.emit
    monkeypatch.setattr(shell_module, "emit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("Query interrupted")))
    shell.feed("SELECT 1;")
    monkeypatch.setattr(shell_module, "emit", real_emit)
    shell.feed("SELECT 2 AS two;")
    shell.close()
    out, err = capsys.readouterr()
    assert err == "error: interrupted\n" and out == "two\n2\n" and shell.failures == 1
