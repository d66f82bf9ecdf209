"""The live scorer's own logic, without a broker (its integration tests: test_scorer_integration.py)."""

from __future__ import annotations

from transforms.scorer import Scorer
from transforms.settings import ScoreSettings


def test_a_scorer_without_a_catalog_says_so_once(tmp_path, caplog):
    """`score --drain` before the stream and the maintenance step ever ran waited without a word."""
    import logging
    from datetime import UTC, datetime

    from transforms.scorer import GateCell

    scorer = Scorer("127.0.0.1:1", tmp_path / "lake", tmp_path / "gigapulse.duckdb", ScoreSettings(warm=False))
    cell = GateCell("C1", "s", "L1", "L1-fill", datetime(2026, 1, 5, tzinfo=UTC), 0, 0, 0.0)
    with caplog.at_level(logging.WARNING, logger="transforms.scorer"):
        assert scorer._ready([cell], 1.0) == []
        assert scorer._ready([cell], 2.0) == []
    said = [r.getMessage() for r in caplog.records if "no warehouse catalog" in r.getMessage()]
    assert len(said) == 1 and str(tmp_path / "gigapulse.duckdb") in said[0]
