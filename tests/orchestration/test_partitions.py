"""One daily partitioning for the batch side: UTC days from a setting, today included."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import pytest

from orchestration.partitions import build_daily_partitions, daily_partitions


def test_default_starts_2024_01_01_in_utc_with_today(monkeypatch):
    monkeypatch.delenv("GIGAPULSE_BATCH_START_DATE", raising=False)
    parts = build_daily_partitions()
    keys = parts.get_partition_keys()
    assert keys[0] == "2024-01-01"
    assert keys[-1] == datetime.now(UTC).date().isoformat()  # end_offset=1: the running day is a partition
    assert parts.timezone == "UTC"
    assert isinstance(daily_partitions, dg.DailyPartitionsDefinition)


def test_start_follows_the_setting(monkeypatch):
    monkeypatch.setenv("GIGAPULSE_BATCH_START_DATE", "2026-11-01")
    assert build_daily_partitions().get_partition_keys()[0] == "2026-11-01"
    assert build_daily_partitions(date(2026, 11, 20)).get_partition_keys()[0] == "2026-11-20"


def test_a_bad_start_date_is_refused_at_start_up(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("GIGAPULSE_BATCH_START_DATE", "yesterday")
    with pytest.raises(ValidationError, match="start_date"):
        build_daily_partitions()
