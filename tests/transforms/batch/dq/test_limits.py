"""Physical limits: they flag impossible values only, never a real process excursion beyond spec."""

from __future__ import annotations

from datetime import date

import pytest

from schemas.asset_model import load_plant
from transforms.batch.dq.limits import LIMITS_BY_UNIT, PHYSICAL_LIMITS, limit_columns, limits_markdown
from transforms.batch.dq.profiles import readings_per_sensor
from transforms.warehouse.reader import connect


@pytest.mark.parametrize("limit", PHYSICAL_LIMITS, ids=lambda lim: lim.unit)
def test_each_limit_is_a_bound_with_a_reason(limit):
    assert limit.lo is not None or limit.hi is not None
    if limit.lo is not None and limit.hi is not None:
        assert limit.lo < limit.hi
    assert limit.why


def test_spec_limits_are_never_physical_limits():
    """Spec limits of every sensor of both plants lie inside the unit's physical limits: a spec limit at or
    beyond a physical one would mean the recipe itself allowed an impossible value."""
    for name in ("reference", "legacy"):
        for s in load_plant(name).sensors:
            lim = LIMITS_BY_UNIT.get(s.unit)
            if lim is None:
                continue
            for spec in (s.lsl, s.usl):
                if spec is not None:
                    assert lim.lo is None or spec >= lim.lo, s.sensor_id
                    assert lim.hi is None or spec <= lim.hi, s.sensor_id


def test_simulated_plants_are_physical_though_out_of_spec(two_plant_warehouse):
    """Both simulated plants run out of spec at times (faults, drifts) and never beyond physics: the range
    check passes on them, so it cannot be confusing the two."""
    con = connect(two_plant_warehouse)
    try:
        day = con.execute("SELECT max(date) FROM readings").fetchone()[0]
        out_of_spec = con.execute("SELECT sum(out_of_spec) FROM sensor_features_1m WHERE date = ?", [day]).fetchone()[0]
        frame = readings_per_sensor(con, day)
    finally:
        con.close()
    assert out_of_spec > 0
    limited = frame[frame["phys_lo"].notna() | frame["phys_hi"].notna()]
    assert len(limited) > 50  # the check has something to look at
    assert int(frame["unphysical"].sum()) == 0
    assert isinstance(day, date)


def test_limit_columns_and_markdown_list_every_unit():
    units, lows, highs = limit_columns()
    assert units == [lim.unit for lim in PHYSICAL_LIMITS] and len(lows) == len(highs) == len(units)
    text = limits_markdown()
    assert all(f"| {lim.unit} |" in text for lim in PHYSICAL_LIMITS)


def test_docs_list_exactly_these_limits():
    from transforms.settings import REPO_ROOT

    assert limits_markdown() in (REPO_ROOT / "docs" / "batch.md").read_text()
