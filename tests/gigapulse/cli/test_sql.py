"""``gigapulse sql``: read-only, concurrent with other readers and with the stream writing, output other
tools read back, a table for people that says how many rows there are, and one line for every mistake.

Real processes where concurrency or start-up is the point; ``main`` in-process elsewhere (it is the
console script's entry point, with the same error handling).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from gigapulse.cli.sql import data_dir
from tests.cli_support import run_cli
from transforms.warehouse import build_catalog

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.lower().startswith("gigapulse_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def warehouse(tmp_path, monkeypatch) -> Path:
    """A catalog over an empty lake: enough for queries over literals."""
    data = tmp_path / "data"
    db = data / "gigapulse.duckdb"
    build_catalog(data / "lake", db)
    return db


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(["sql", *argv], capsys)


def gigapulse_sql(*args: str, data: Path, stdin: str | None = None, timeout: float = 60,
                  **env: str) -> subprocess.CompletedProcess:
    """``gigapulse sql ARGS`` in a process of its own."""
    full_env = {k: v for k, v in os.environ.items() if not k.lower().startswith("gigapulse_")}
    full_env.update(GIGAPULSE_DATA_DIR=str(data), PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-m", "gigapulse.cli", "sql", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=REPO)


# --------------------------------------------------------------------------- settings and a missing warehouse

@pytest.mark.parametrize("env", [{}, {"GIGAPULSE_DATA_DIR": "/srv/plant"}, {"gigapulse_data_dir": "rel/dir"}])
def test_the_data_directory_is_read_as_the_settings_read_it(env, monkeypatch):
    from transforms.settings import DataSettings

    monkeypatch.delenv("GIGAPULSE_DATA_DIR")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert data_dir() == DataSettings().data_dir
    assert data_dir() / "gigapulse.duckdb" == DataSettings().db_path


@pytest.mark.parametrize("args", [("SELECT 1",), ()], ids=["query", "prompt"])
def test_a_missing_warehouse_is_one_line_naming_the_directory_and_nothing_is_created(args, tmp_path):
    data = tmp_path / "empty"
    data.mkdir()
    res = gigapulse_sql(*args, data=data, stdin="SELECT 1;\n")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("gigapulse: error: no warehouse"), res.stderr
    assert str(data) in res.stderr and "gigapulse warehouse" in res.stderr
    assert list(data.iterdir()) == []


# --------------------------------------------------------------------------- many readers, and the stream writing

def test_three_parallel_calls_and_a_held_read_only_connection_all_answer(simulated_warehouse):
    held = duckdb.connect(str(simulated_warehouse), read_only=True)
    try:
        expected = held.execute("SELECT count(*) FROM sensors").fetchone()[0]
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: gigapulse_sql("SELECT count(*) AS n FROM sensors", "--format", "csv",
                                                            data=simulated_warehouse.parent), range(3)))
        assert held.execute("SELECT count(*) FROM sensors").fetchone()[0] == expected
    finally:
        held.close()
    for res in results:
        assert res.returncode == 0, res.stderr
        assert res.stdout == f"n\n{expected}\n"


WRITER = textwrap.dedent("""
    import sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    import pyarrow as pa
    from schemas.tables import TABLES
    from transforms.lake import LakeWriter

    root, stop = Path(sys.argv[1]), Path(sys.argv[2])
    writer = LakeWriter.for_table(root, TABLES["readings"])

    def rows(first):
        n = 100
        return pa.table({"sensor_id": ["s"] * n, "ts": pa.array([datetime(2026, 3, 2, tzinfo=UTC)] * n,
                         pa.timestamp("ms", tz="UTC")), "value": [1.0] * n, "quality": pa.array([0] * n, pa.int8()),
                         "src_partition": pa.array([0] * n, pa.int32()), "src_offset": list(range(first, first + n)),
                         "src_index": pa.array([0] * n, pa.int32()), "late": [False] * n})

    files, deadline = 0, time.monotonic() + 60
    while not stop.exists() and time.monotonic() < deadline:
        first = 100 * files
        writer.write("plant.readings.v1", 0, first, first + 99, rows(first))
        files += 1
        time.sleep(0.05)  # about the stream's pace: a checkpoint or two per second per partition
    print(files)
""")


def test_parallel_readers_while_another_process_keeps_writing_the_lake(tmp_path):
    """The stream's writes (new files appearing, renamed into place) never fail a reader, and a reader
    sees whole files only: every answer counts a multiple of a file's 100 rows, and never goes back."""
    data = tmp_path / "data"
    stop = tmp_path / "stop"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(data / "lake"), str(stop)], stdout=subprocess.PIPE,
                              text=True, env=env, cwd=REPO)
    try:
        while not list((data / "lake" / "readings").rglob("*.parquet")):
            assert writer.poll() is None, "the writer stopped before its first file"
            time.sleep(0.05)
        build_catalog(data / "lake", data / "gigapulse.duckdb")
        seen = [0, 0, 0]
        for _ in range(2):
            with ThreadPoolExecutor(3) as pool:
                results = list(pool.map(lambda _: gigapulse_sql(
                    "SELECT count(*) AS n, sum(value) AS total FROM readings", "--format", "json", data=data),
                    range(3)))
            for i, res in enumerate(results):
                assert res.returncode == 0, res.stderr
                answer = json.loads(res.stdout)
                assert answer["n"] % 100 == 0 and answer["total"] == answer["n"], answer
                assert answer["n"] >= seen[i], (answer, seen)
                seen[i] = answer["n"]
        assert writer.poll() is None, "the writer finished before the readers: nothing was tested"
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=30)
    files = int(out)
    final = gigapulse_sql("SELECT count(*) AS n FROM readings", "--format", "csv", data=data)
    assert final.stdout == f"n\n{files * 100}\n"
    assert max(seen) < files * 100  # the lake grew while the readers read


def test_the_query_path_imports_nothing_heavy(warehouse):
    """What keeps ``gigapulse sql 'SELECT 1'`` near the interpreter's start-up (timings are for the
    benchmark, not tests): no catalog builder, pyarrow, pydantic-settings, Kafka, Faust or Dagster."""
    code = ("import sys\nfrom gigapulse.cli import main\ntry:\n    main(['sql', 'SELECT 1'])\nexcept SystemExit:\n"
            "    pass\nheavy = ('pyarrow', 'pydantic_settings', 'kafka', 'faust', 'dagster', 'schemas.contracts', "
            "'transforms.warehouse.catalog', 'orchestration.cli', 'gigapulse.cli.ingest')\n"
            "print([m for m in heavy if m in sys.modules], file=sys.stderr)")
    env = dict(os.environ, PYTHONPATH=str(REPO), GIGAPULSE_DATA_DIR=str(warehouse.parent))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert "1 row" in res.stdout
    assert res.stderr.strip() == "[]"


# --------------------------------------------------------------------------- formats other tools read back

SAMPLE = ("SELECT i, 'a:x:b' AS s, '[/bold]' AS markup, '' AS empty, ('\\x00\\xff' || i::VARCHAR)::BLOB AS b, "
          "['x', NULL] AS l, i % 2 = 0 AS flag, TIMESTAMPTZ '2026-03-02 06:00:00+00' + to_seconds(i) AS ts, "
          "NULL::INTEGER AS n, 1.25::DECIMAL(6,2) AS d FROM range(3) AS r(i) ORDER BY i")
TS = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)


def test_csv_reads_back_with_python_and_duckdb(warehouse, tmp_path, capsys):
    out = tmp_path / "out.csv"
    rc, stdout, err = run([SAMPLE, "--format", "csv", "--output", str(out)], capsys)
    assert rc == 0 and stdout == "" and err == f"3 rows written to {out}\n"
    rows = list(csv.DictReader(out.open(newline="")))
    assert rows[1] == {"i": "1", "s": "a:x:b", "markup": "[/bold]", "empty": "",
                       "b": base64.b64encode(b"\x00\xff1").decode(), "l": '["x",null]', "flag": "false",
                       "ts": "2026-03-02T06:00:01+00:00", "n": "", "d": "1.25"}
    assert json.loads(rows[1]["l"]) == ["x", None]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    back = con.execute("SELECT * FROM read_csv(?, header = true, allow_quoted_nulls = false) ORDER BY i",
                       [str(out)]).fetchall()
    assert back[2] == (2, "a:x:b", "[/bold]", "", base64.b64encode(b"\x00\xff2").decode(), '["x",null]', True,
                       TS + dt.timedelta(seconds=2), None, 1.25)


def test_json_lines_read_back_with_python_and_duckdb(warehouse, tmp_path, capsys):
    rc, stdout, _ = run([SAMPLE, "--format", "json"], capsys)
    assert rc == 0
    docs = [json.loads(line) for line in stdout.splitlines()]
    assert docs[0] == {"i": 0, "s": "a:x:b", "markup": "[/bold]", "empty": "",
                       "b": base64.b64encode(b"\x00\xff0").decode(), "l": ["x", None], "flag": True,
                       "ts": "2026-03-02T06:00:00+00:00", "n": None, "d": 1.25}
    path = tmp_path / "out.jsonl"
    path.write_text(stdout)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    back = con.execute("SELECT i, l, flag, ts::TIMESTAMPTZ, n FROM read_json(?, format = 'newline_delimited') "
                       "ORDER BY i", [str(path)]).fetchall()
    assert back[1] == (1, ["x", None], False, TS + dt.timedelta(seconds=1), None)


def test_parquet_reads_back_with_pyarrow(warehouse, tmp_path, capsys):
    out = tmp_path / "out.parquet"
    rc, _, err = run([SAMPLE, "--format", "parquet", "-o", str(out)], capsys)
    assert rc == 0, err
    rows = pq.read_table(out).to_pylist()
    assert rows[2]["b"] == b"\x00\xff2" and rows[2]["l"] == ["x", None] and rows[2]["flag"] is True
    assert rows[2]["ts"] == TS + dt.timedelta(seconds=2) and rows[2]["n"] is None and rows[2]["markup"] == "[/bold]"


def test_parquet_needs_an_output_file(warehouse, capsys):
    rc, _, err = run(["SELECT 1", "--format", "parquet"], capsys)
    assert rc == 2 and "--output" in err and err.count("\n") == 1


def test_a_failed_query_leaves_the_output_file_as_it_was(warehouse, tmp_path, capsys):
    out = tmp_path / "out.csv"
    out.write_text("before\n")
    # Fails after the first rows were written: DuckDB streams the result.
    failing = "SELECT CASE WHEN i < 50000 THEN i ELSE error('boom') END AS i FROM range(100000) AS r(i)"
    rc, _, err = run([failing, "--format", "csv", "-o", str(out)], capsys)
    assert rc == 1 and "SQL error" in err and "boom" in err
    assert out.read_text() == "before\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_large_results_stream_instead_of_being_held(warehouse, tmp_path):
    """600k rows of 200 bytes: held as Python rows they would take 150 MB more than the process's own."""
    out = tmp_path / "big.csv"
    code = ("import resource, subprocess, sys\n"
            "subprocess.run(sys.argv[1:], check=True)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)")
    env = dict(os.environ, PYTHONPATH=str(REPO), GIGAPULSE_DATA_DIR=str(warehouse.parent))
    query = "SELECT i, repeat('x', 200) || i::VARCHAR AS s FROM range(600000) AS r(i)"
    res = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "gigapulse.cli", "sql", query,
                          "--format", "csv", "-o", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sum(1 for _ in out.open()) == 600_001
    assert int(res.stdout) < 200  # MB; about 110 streamed, about 270 held


# --------------------------------------------------------------------------- the table, for people

def test_data_is_printed_verbatim_never_as_markup(warehouse, capsys):
    rc, out, err = run(["SELECT 'a:x:b' AS \"[b]name\", '[/bold]' AS m, '[red]r[/red]' AS r, ':smile:' AS e, "
                        "'\x1b[31m' AS esc"], capsys)
    assert rc == 0, err
    for text in ("a:x:b", "[/bold]", "[red]r[/red]", ":smile:", "[b]name", "\\x1b[31m"):
        assert text in out
    assert "\x1b" not in out and "❌" not in out


def _numbers(out: str) -> list[int]:
    """The cells of a one-column table of integers."""
    return [int(line) for line in out.splitlines() if line.strip().isdigit()]


def test_the_row_count_is_always_shown_and_the_rows_printed_are_capped(warehouse, capsys):
    rc, out, _ = run(["SELECT i FROM range(100) AS r(i)"], capsys)
    assert rc == 0
    assert _numbers(out) == list(range(40)) and "40 of 100 rows shown" in out
    _, out, _ = run(["SELECT i FROM range(100) AS r(i)", "--max-rows", "5"], capsys)
    assert _numbers(out) == list(range(5)) and "5 of 100 rows shown" in out
    _, out, _ = run(["SELECT i FROM range(2500) AS r(i)", "--all"], capsys)
    assert _numbers(out) == list(range(2500))
    assert out.rstrip().endswith("2,500 rows")
    _, out, _ = run(["SELECT i FROM range(40) AS r(i)"], capsys)
    assert out.rstrip().endswith("40 rows") and " of " not in out
    _, out, _ = run(["SELECT 1 AS one WHERE false"], capsys)
    assert "one" in out and out.rstrip().endswith("0 rows")
    _, out, _ = run(["SELECT i FROM range(50000) AS r(i)", "--max-rows", "3"], capsys)
    assert "3 of 50,000 rows shown" in out


def test_the_table_fits_the_terminal(warehouse, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    long = "word " * 40
    rc, out, _ = run([f"SELECT 'id-1' AS id, '{long}' AS note, 12345.678 AS x"], capsys)
    assert rc == 0
    assert max(map(len, out.splitlines())) <= 60
    assert out.count("word") == 40  # folded onto more lines, not cut


def test_too_many_columns_turn_into_one_block_per_row(warehouse, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    columns = ", ".join(f"'value {i}' AS column_{i}" for i in range(12))
    rc, out, _ = run([f"SELECT {columns} FROM range(2)"], capsys)
    assert rc == 0
    assert "12 columns do not fit in 80 characters" in out and "--format csv" in out
    assert out.count("-[ row ") == 2 and "column_11 value 11" in out
    assert out.rstrip().endswith("2 rows")


# --------------------------------------------------------------------------- statements

@pytest.mark.parametrize("sql", ["INSERT INTO gigapulse_catalog VALUES ('a', 'b')", "CREATE TABLE t AS SELECT 1",
                                 "COPY (SELECT 1) TO 'x.csv'", "ATTACH 'x.duckdb' AS x", "DROP VIEW readings",
                                 "SELECT 1; DROP VIEW readings", "EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'"])
def test_write_statements_are_refused_in_one_line(sql, warehouse, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run([sql], capsys)
    assert rc == 1 and out == ""
    assert err.startswith("gigapulse: error: the warehouse is read-only:") and err.count("\n") == 1, err
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.duckdb").exists()
    assert run(["SELECT count(*) FROM readings", "--format", "csv"], capsys)[1] == "count_star()\n0\n"


def test_several_statements_run_in_order_and_settings_hold_for_the_next(warehouse, capsys):
    rc, out, _ = run(["SET TimeZone = 'Asia/Tokyo'; SELECT TIMESTAMPTZ '2026-03-02 00:00:00+00' AS t",
                      "--format", "json"], capsys)
    assert rc == 0 and json.loads(out) == {"t": "2026-03-02T09:00:00+09:00"}
    rc, out, _ = run(["SELECT 1 AS a; SELECT 2 AS b"], capsys)
    assert rc == 0 and out.index(" a") < out.index(" b")
    rc, _, err = run(["SELECT 1; SELECT 2", "--format", "csv"], capsys)
    assert rc == 1 and "one result; got 2 queries" in err


def test_parameters_are_bound(warehouse, capsys):
    rc, out, _ = run(["SELECT ? || '!' AS s, ?::INTEGER + 1 AS n", "-p", "it's", "-p", "41", "--format", "json"],
                     capsys)
    assert rc == 0 and json.loads(out) == {"s": "it's!", "n": 42}


@pytest.mark.parametrize(("sql", "needle"), [("SELECT * FROM no_such_table", "SQL error: Catalog Error"),
                                             ("SELEC 1", "SQL error: Parser Error")])
def test_sql_errors_are_one_line(sql, needle, warehouse, capsys):
    rc, _, err = run([sql], capsys)
    assert rc == 1 and err.startswith(f"gigapulse: error: {needle}") and err.count("\n") == 1, err


def test_a_query_starting_with_a_dash_is_passed_after_double_dash(warehouse, capsys):
    rc, out, _ = run(["--format", "csv", "--", "-- a comment\nSELECT 1 AS one"], capsys)
    assert rc == 0 and out == "one\n1\n"


def test_ctrl_c_during_a_query_is_one_line(warehouse, capsys, monkeypatch):
    """DuckDB answers SIGINT during a query with RuntimeError('Query interrupted'), not KeyboardInterrupt."""
    import gigapulse.cli.sql as sql_module

    def interrupted(*_a, **_k):
        raise RuntimeError("Query interrupted")

    monkeypatch.setattr(sql_module, "emit", interrupted)
    rc, _, err = run(["SELECT 1"], capsys)
    assert rc == 130 and err == "gigapulse: interrupted\n"


def test_the_notebook_helper_of_the_docs_answers(simulated_warehouse, tmp_path, monkeypatch):
    """docs/warehouse.md, "A notebook": its code, run as written from a directory holding var/."""
    text = (REPO / "docs" / "warehouse.md").read_text()
    section = text[text.index("### A notebook"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "gigapulse.duckdb").symlink_to(simulated_warehouse)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.rsplit("\n\nq(", 1)[0], "warehouse.md", "exec"), namespace)
    frame = namespace["q"]("SELECT line, count(*) AS n FROM quality_daily WHERE date >= current_date - ? GROUP BY line",
                           7)
    assert len(frame) > 0 and set(frame.columns) == {"line", "n"}
    last_call = "q(" + code.rsplit("\n\nq(", 1)[1]
    assert len(eval(last_call, namespace)) > 0


def test_the_python_example_of_the_docs_answers(simulated_warehouse, tmp_path, monkeypatch):
    """docs/warehouse.md, "Python": DuckDB to pandas, Polars and pyarrow, run as written."""
    pytest.importorskip("polars")  # the bench extra, which make install installs
    text = (REPO / "docs" / "warehouse.md").read_text()
    section = text[text.index("### Python: DuckDB, pandas, Polars"):]
    start = section.index("```python\n") + len("```python\n")
    code = section[start:section.index("```\n", start)]
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "gigapulse.duckdb").symlink_to(simulated_warehouse)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "warehouse.md", "exec"), namespace)
    assert len(namespace["quality"]) > 0 and len(namespace["coating"]) > 0
    assert namespace["sensors"].height > 0 and namespace["table"].num_rows > 0
