"""The scorer's warm thread: a replaced catalog opened off the critical path and handed over."""

from __future__ import annotations

from transforms.scorer import Scorer
from transforms.settings import ScoreSettings


def _catalog(path, x: int) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    con.execute(f"CREATE VIEW v AS SELECT {x} AS x")
    con.close()


def test_a_new_catalog_is_opened_by_the_warm_thread_and_handed_over(tmp_path):
    """After a compaction the scorer goes on with the old catalog (still exact) while the warm thread
    opens the new one; then it swaps. Each connection reads a private copy: DuckDB hands a second
    connect of an open path the instance already open, which would be the old catalog."""
    import time

    from transforms.warehouse.reader import connect

    db = tmp_path / "gigapulse.duckdb"
    _catalog(db, 1)
    scorer = Scorer("127.0.0.1:1", tmp_path / "lake", db, ScoreSettings())
    scorer.warmer.start()
    try:
        first = scorer._connection()
        assert first.execute("SELECT x FROM v").fetchall() == [(1,)]
        _catalog(tmp_path / "next.duckdb", 2)
        (tmp_path / "next.duckdb").replace(db)  # a compaction publishes a new catalog
        assert scorer._connection() is first  # not waited for: the old one is still exact
        deadline = time.monotonic() + 20
        while scorer._connection() is first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scorer._connection().execute("SELECT x FROM v").fetchall() == [(2,)]
        con = connect(db)  # anyone else in the process opening the catalog gets the new one
        try:
            assert con.execute("SELECT x FROM v").fetchall() == [(2,)]
        finally:
            con.close()
        private = scorer._con_path
        assert private is not None and private.parent != db.parent
    finally:
        scorer._con.close()
        scorer.warmer.stop()
    assert not private.parent.exists()  # the copies go with the warm thread


def test_without_the_warm_thread_the_scorer_reopens_the_catalog_itself(tmp_path):
    db = tmp_path / "gigapulse.duckdb"
    _catalog(db, 1)
    scorer = Scorer("127.0.0.1:1", tmp_path / "lake", db, ScoreSettings(warm=False))
    assert scorer.warmer is None
    assert scorer._connection().execute("SELECT x FROM v").fetchall() == [(1,)]
    _catalog(tmp_path / "next.duckdb", 2)
    (tmp_path / "next.duckdb").replace(db)
    assert scorer._connection().execute("SELECT x FROM v").fetchall() == [(2,)]
    scorer._con.close()

