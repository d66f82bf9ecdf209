"""docs/warehouse-rollups.md: its column tables are the contracts', and its example queries answer right."""

from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from tests.transforms.warehouse.rollups.support import read_table
from transforms.features.spc import process_capability
from transforms.warehouse.rollups import ROLLUPS, rollup_view_sql
from transforms.warehouse.rollups.docs import rollup_columns_markdown

DOC = Path(__file__).resolve().parents[4] / "docs" / "warehouse-rollups.md"


def examples() -> list[str]:
    text = DOC.read_text()
    section = text[text.index("### Example queries"):text.index("### Columns")]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_the_doc_holds_every_rollups_generated_column_table():
    text = DOC.read_text()
    for name in ROLLUPS:
        assert f"#### `{name}`\n\n{rollup_columns_markdown(name)}\n" in text, \
            f"regenerate the {name} table of {DOC.name} from rollup_columns_markdown()"


def test_the_example_queries_run_on_a_streamed_lake_and_pooled_cpk_is_exact(simulated_lake):
    lake, _ = simulated_lake
    con = duckdb.connect()
    for name in ROLLUPS:
        con.execute(f"CREATE VIEW {name} AS {rollup_view_sql(lake, name)}")
    answers = [con.execute(sql).fetchall() for sql in examples()]
    assert len(answers) == 4
    scrap, cpk, _quiet, shifts = answers
    assert scrap and all(0 <= r[2] < 0.2 and r[3] > 0 for r in scrap)
    assert shifts
    # Pooled over the sensors of a parameter at a station: the same as one capability study over all their
    # readings with (sensor, minute) subgroups.
    r = read_table(lake, "readings")
    ctq = {s: (lsl, usl) for s, lsl, usl, c in con.execute(
        "SELECT sensor_id, lsl, usl, ctq FROM sensor_daily").fetchall() if c}
    day = r["date"].cast(pa.int32()).to_numpy()
    sid = r["sensor_id"].to_numpy(zero_copy_only=False)
    station, param = r["station"].to_numpy(zero_copy_only=False), r["parameter"].to_numpy(zero_copy_only=False)
    minute = r["ts"].cast(pa.int64()).to_numpy() // 60_000
    val = r["value"].to_numpy()
    checked = 0
    for d, _line, st, p, got_cpk, got_ppk in cpk:
        sel = (day == (d - date(1970, 1, 1)).days) & (station == st) & (param == p)
        sensors = set(sid[sel])
        assert sensors <= set(ctq) and len({ctq[s] for s in sensors}) == 1  # one spec for the pooled sensors
        lsl, usl = ctq[next(iter(sensors))]
        group = np.char.add(sid[sel].astype(str), minute[sel].astype(str))
        cap = process_capability(val[sel], group, lsl, usl)
        assert math.isclose(got_cpk, cap["cpk"], rel_tol=1e-7) and math.isclose(got_ppk, cap["ppk"], rel_tol=1e-7)
        checked += len(sensors) > 1
    assert checked > 0  # some parameters have several sensors at a station
