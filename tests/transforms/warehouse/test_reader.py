"""Reading the warehouse: which statements a reader may run, and read-only connections that never create."""

from __future__ import annotations

import duckdb
import pytest

from transforms.warehouse.reader import ReadOnlyQueryError, connect, query, read_only_statements, returns_rows

ALLOWED = [
    "SELECT 1", "WITH x AS (SELECT 1 AS a) SELECT * FROM x", "FROM t", "VALUES (1), (2)", "TABLE t",
    "DESCRIBE t", "SHOW TABLES", "SHOW ALL TABLES", "SUMMARIZE t", "SUMMARIZE SELECT 1", "EXPLAIN SELECT 1",
    "EXPLAIN ANALYZE SELECT * FROM t", "explain (format json) select 1", "PIVOT t ON a USING sum(a)",
    "PRAGMA table_info('t')", "PRAGMA show_tables", "PRAGMA database_size", "SET TimeZone = 'Europe/Berlin'",
    "RESET TimeZone", "-- a comment first\nSELECT 1", "/* a /* nested */ comment */ SELECT 1",
    "SELECT 1 UNION ALL SELECT 2", "SELECT 1; SELECT 2",
]

REFUSED = [
    ("INSERT INTO t VALUES (1)", "INSERT"), ("CREATE TABLE u AS SELECT 1", "CREATE"),
    ("CREATE TEMP TABLE u (a INT)", "CREATE"), ("CREATE TEMP VIEW v AS SELECT 1", "CREATE"),
    ("COPY (SELECT 1) TO 'out.csv'", "COPY"), ("COPY t FROM 'in.csv'", "COPY"),
    ("ATTACH 'other.duckdb' AS o", "ATTACH"), ("DETACH o", "DETACH"), ("DROP VIEW t", "DROP"),
    ("UPDATE t SET a = 2", "UPDATE"), ("DELETE FROM t", "DELETE"), ("ALTER TABLE t ADD COLUMN b INT", "ALTER"),
    ("COMMENT ON TABLE t IS 'x'", "COMMENT (ALTER)"), ("EXPORT DATABASE 'dump'", "EXPORT"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'out.csv'", "COPY"), ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "INSERT"),
    ("CHECKPOINT", "CHECKPOINT (CALL)"), ("INSTALL httpfs", "INSTALL (LOAD)"), ("LOAD json", "LOAD"),
    ("PRAGMA enable_profiling", "PRAGMA enable_profiling"), ("BEGIN", "BEGIN (TRANSACTION)"),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "WITH (INSERT)"), ("VACUUM", "VACUUM"),
    ("PREPARE p AS SELECT 1", "PREPARE"), ("SELECT 1; DROP VIEW t", "DROP"), ("UPDATE EXTENSIONS", "UPDATE"),
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_reading_statements_are_allowed(sql):
    assert read_only_statements(sql)


@pytest.mark.parametrize(("sql", "named"), REFUSED)
def test_writing_statements_are_refused_in_one_line_naming_them(sql, named):
    with pytest.raises(ReadOnlyQueryError) as exc:
        read_only_statements(sql)
    message = str(exc.value)
    assert "\n" not in message and "read-only" in message
    assert f": {named} statements are refused" in message


def test_no_statement_and_a_parse_error():
    with pytest.raises(ReadOnlyQueryError, match="no SQL statement"):
        read_only_statements("  ;; -- nothing")
    with pytest.raises(duckdb.ParserException):
        read_only_statements("SELEC 1")


def test_set_returns_no_rows_and_queries_do():
    kinds = [returns_rows(s) for s in read_only_statements("SET TimeZone = 'UTC'; SELECT 1; DESCRIBE SELECT 1")]
    assert kinds == [False, True, True]


@pytest.fixture
def warehouse(tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t AS SELECT 1 AS a")
    con.close()
    return db


@pytest.mark.parametrize("sql", [s for s in ALLOWED if ";" not in s])
def test_every_allowed_statement_runs_on_a_read_only_connection(sql, warehouse):
    con = connect(warehouse)
    try:
        for statement in read_only_statements(sql):
            con.execute(statement)
    finally:
        con.close()


def test_explain_analyze_of_a_write_would_have_written(warehouse, tmp_path):
    """Why EXPLAIN is looked into: DuckDB runs what EXPLAIN ANALYZE explains, even read-only."""
    out = tmp_path / "out.csv"
    con = duckdb.connect(str(warehouse), read_only=True)
    con.execute(f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'")
    con.close()
    assert out.exists()


def test_connect_never_creates_a_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no warehouse file"):
        connect(tmp_path / "missing.duckdb")
    assert list(tmp_path.iterdir()) == []


def test_connect_is_read_only_and_in_utc(warehouse):
    con = connect(warehouse)
    try:
        assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("INSERT INTO t VALUES (2)")
    finally:
        con.close()


def test_query_runs_one_statement_with_parameters(warehouse):
    assert query(warehouse, "SELECT a + ? AS b FROM t", [2]) == (["b"], [(3,)])
    with pytest.raises(ReadOnlyQueryError, match="exactly one statement"):
        query(warehouse, "SELECT 1; SELECT 2")
