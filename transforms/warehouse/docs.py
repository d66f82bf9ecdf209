"""What every warehouse table and view means: grain, description, columns and an example query.

Kept apart from the code that builds the catalog so that ``docs/tables.md``, ``COMMENT ON`` in the
catalog and the tests all read one source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from schemas.batch import BATCH_EXAMPLES, BATCH_TABLES
from schemas.tables import TABLES
from transforms.warehouse.rollups.specs import ROLLUPS

_VIEW_DOCS: dict[str, dict[str, Any]] = {
    "energy_per_cell": {
        "grain": "one line x one hour",
        "doc": "Energy drawn by a line's metered stations per UTC hour, against the cells that left end "
               "of line (aging_eol) good in the same hour. Plant-wide stations (line 'site', e.g. the dry "
               "room) have no cells of their own. kWh per kWh of cell capacity needs the cell's nominal "
               "energy, which the lake does not hold yet.",
        "columns": {
            "site": "Site.",
            "line": "Production line.",
            "hour": "Start of the UTC hour.",
            "kwh": "Energy drawn by the line's metered stations in the hour, kWh.",
            "good_cells": "Cells that left aging_eol good in the hour; null if none were reported.",
            "kwh_per_good_cell": "kwh / good_cells; null when no good cell was reported.",
        },
        "example": "SELECT line, sum(kwh) AS kwh, sum(good_cells) AS good_cells,\n"
                   "       sum(kwh) / sum(good_cells) AS kwh_per_good_cell\n"
                   "FROM energy_per_cell\nWHERE hour >= now() - INTERVAL 1 DAY\n"
                   "GROUP BY line HAVING sum(good_cells) > 0  -- plant-wide meters (line 'site') make no cells\n"
                   "ORDER BY line;",
    },
    "scrap_reasons": {
        "grain": "one line x one stage x one window x one scrap reason",
        "doc": "quality_features.scrap_by_reason unnested: one row per reason that scrapped units.",
        "columns": {
            "window_start": "Start of the tumbling window, UTC.",
            "window_end": "End of the tumbling window, UTC.",
            "site": "Site.",
            "line": "Production line.",
            "stage": "Process stage.",
            "reason": "Scrap reason (coating_defect, moisture, weld_failure...).",
            "scrapped": "Units scrapped for that reason in the window.",
            "date": "UTC date of window_start.",
        },
        "example": "SELECT stage, reason, sum(scrapped) AS units\nFROM scrap_reasons\n"
                   "WHERE date = current_date\nGROUP BY ALL ORDER BY units DESC;",
    },
    "duplicate_events": {
        "grain": "one event_id that production_events holds more than once",
        "doc": "Event ids are unique by contract, so every row here is a repeat, and the dedup rule says what "
               "to do with it. Per event_id the copy that reached plant.events.v1 first, the lowest "
               "(src_partition, src_offset), is the event; later copies are dropped. Copies with one payload "
               "(payloads = 1) are harmless repeats: a file replayed twice, a simulation re-run with the same "
               "seed and start, a producer that re-sent. More than one payload (payloads > 1) under one id is "
               "a data-quality failure at the source: two different events claim the id, no copy can be "
               "trusted, and the source must be fixed. The simulator's unit ids carry the run's start and seed "
               "(docs/ingestion.md): runs with another start or seed never share an id. To read events "
               "deduplicated: SELECT * "
               "FROM production_events QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY "
               "src_partition, src_offset) = 1.",
        "columns": {
            "event_id": "The repeated event id.",
            "unit_id": "Unit of the kept copy.",
            "copies": "Rows with this event_id (2 or more).",
            "payloads": "Distinct payloads among the copies (every contract field but event_id); 1 = identical "
                        "repeats, more = conflicting events under one id.",
            "first_ts": "Earliest event time among the copies, UTC.",
            "last_ts": "Latest event time among the copies, UTC; differs from first_ts only when payloads differ.",
            "kept_partition": "Partition of plant.events.v1 of the kept copy (the first to arrive).",
            "kept_offset": "Offset of the kept copy in that partition.",
        },
        "example": "SELECT payloads > 1 AS conflicting, count(*) AS event_ids, sum(copies - 1) AS extra_rows\n"
                   "FROM duplicate_events\nGROUP BY ALL;",
    },
}

_EXAMPLES = {
    "readings": "SELECT sensor_id, count(*) AS samples, avg(value) AS mean\nFROM readings\n"
                "WHERE date = current_date AND stage = 'coating'\nGROUP BY sensor_id ORDER BY sensor_id;",
    "production_events": "WITH cell AS (  -- the last cell graded today\n"
                         "    SELECT unit_id, parent_ids FROM production_events\n"
                         "    WHERE date = current_date AND kind = 'grade' ORDER BY ts DESC LIMIT 1\n"
                         ")\n"
                         "SELECT e.ts, e.unit_id, e.stage, e.kind, e.attribute, e.value, e.grade\n"
                         "FROM production_events e, cell\n"
                         "WHERE e.unit_id = cell.unit_id\n"
                         "   OR list_contains(cell.parent_ids, e.unit_id)  -- the electrode rolls it was stacked from\n"
                         "ORDER BY e.ts;",
    "sensors": "SELECT stage, count(*) AS sensors, count(*) FILTER (WHERE ctq) AS ctq_sensors\n"
               "FROM sensors\nGROUP BY stage ORDER BY stage;",
    "sensor_features_1m": "SELECT sensor_id, count(*) AS windows,\n"
                          "       count(*) FILTER (WHERE ewma_alarm) AS ewma_alarms, min(cpk) AS worst_cpk\n"
                          "FROM sensor_features_1m\n"
                          "WHERE date >= current_date - 1 AND window_start >= now() - INTERVAL 1 HOUR\n"
                          "  AND parameter = 'areal_loading'\n"
                          "GROUP BY sensor_id ORDER BY worst_cpk LIMIT 20;  -- the least capable first",
    "sensor_features_1h": "SELECT sensor_id, window_start, mean, min, max, out_of_spec\nFROM sensor_features_1h\n"
                          "WHERE station = 'L1-coat-c' AND date = current_date\nORDER BY sensor_id, window_start;",
    "quality_features": "SELECT line, stage, sum(good) / nullif(sum(good) + sum(scrapped), 0) AS yield\n"
                        "FROM quality_features\nWHERE date = current_date\nGROUP BY line, stage ORDER BY line, stage;",
    "energy_features": "SELECT stage, sum(kwh) AS kwh\nFROM energy_features\n"
                       "WHERE date >= current_date - 7\nGROUP BY stage ORDER BY kwh DESC;",
    "sensor_health": "SELECT sensor_id, avg(rate_ratio) AS rate_ratio, max(max_gap_ms) AS max_gap_ms,\n"
                     "       bool_or(stuck) AS ever_stuck\n"
                     "FROM sensor_health\nWHERE date = current_date\nGROUP BY sensor_id\n"
                     "ORDER BY rate_ratio, sensor_id LIMIT 20;  -- the sensors furthest below their nominal rate",
    "dead_letters": "SELECT reason, stage, count(*) AS messages\nFROM dead_letters\n"
                    "WHERE date = current_date\nGROUP BY ALL ORDER BY messages DESC;",
    "cell_risk": "SELECT line, cell_id, gate_ts, round(score, 3) AS score, model_version,\n"
                 "       drivers[1].feature AS top_driver\nFROM cell_risk\n"
                 "WHERE date = (SELECT max(date) FROM cell_risk) AND score IS NOT NULL\n"
                 "ORDER BY score DESC LIMIT 20;",
}

_ROLLUP_EXAMPLES = {
    "quality_daily": "SELECT line, stage, units_in, good, scrapped, yield, first_pass_yield\nFROM quality_daily\n"
                     "WHERE date = (SELECT max(date) FROM quality_daily)\nORDER BY line, stage;",
    "energy_daily": "SELECT line, sum(kwh) AS kwh, sum(kwh) / nullif(max(good_cells), 0) AS kwh_per_good_cell\n"
                    "FROM energy_daily\nWHERE date >= (SELECT max(date) FROM energy_daily) - 6 AND line <> 'site'\n"
                    "GROUP BY line, date ORDER BY line, date;",
    "energy_shift": "SELECT shift, shift_start, station, kwh\nFROM energy_shift\n"
                    "WHERE date = (SELECT max(date) FROM energy_shift)\nORDER BY kwh DESC LIMIT 10;",
    "sensor_daily": "SELECT line, station, parameter, sensor_id, n, mean, cpk, ppk\nFROM sensor_daily\n"
                    "WHERE ctq AND date = (SELECT max(date) FROM sensor_daily)\nORDER BY cpk NULLS LAST LIMIT 10;",
    "sensor_health_daily": "SELECT sensor_id, station, rate_ratio, silent_windows, stuck_windows\n"
                           "FROM sensor_health_daily\nWHERE date = (SELECT max(date) FROM sensor_health_daily)\n"
                           "ORDER BY rate_ratio LIMIT 10;",
}


#: Every table and view of the warehouse: grain, description, column descriptions and an example query.
TABLE_DOCS: dict[str, dict[str, Any]] = {
    **{
        name: {"grain": spec.grain, "doc": spec.doc, "columns": spec.column_docs(), "example": _EXAMPLES[name]}
        for name, spec in TABLES.items()
    },
    **_VIEW_DOCS,
    **{
        name: {"grain": r.grain, "doc": r.table.doc + " Built by `gigapulse lake rollup` (docs/warehouse.md, Rollups).",
               "columns": r.table.column_docs(), "example": _ROLLUP_EXAMPLES[name]}
        for name, r in ROLLUPS.items()
    },
    **{
        name: {"grain": spec.grain, "doc": spec.doc + " Landed by a Dagster asset (docs/batch.md).",
               "columns": spec.column_docs(), "example": BATCH_EXAMPLES[name]}
        for name, spec in BATCH_TABLES.items()
    },
}



# --------------------------------------------------------------------------- docs/tables.md

def tables_markdown() -> str:
    """docs/tables.md: every table and view with its grain, columns (DuckDB types) and an example."""
    from transforms.warehouse.catalog import create_views  # catalog reads these docs: import at call time

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        create_views(con, Path("/nonexistent-gigapulse-lake"))
        types = {
            name: dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?",
                             [name]).fetchall())
            for name in TABLE_DOCS
        }
    finally:
        con.close()
    out = [
        "# Warehouse tables",
        "",
        "Generated from `schemas/tables.py` and `transforms/warehouse/docs.py` (`tables_markdown()`); edit those,",
        "not this file. Every table is a view of `gigapulse.duckdb` over the Parquet lake",
        "(`<lake>/<table>/date=YYYY-MM-DD/*.parquet`); filter on `date` to read only the days you need.",
        "Timestamps are UTC.",
        "",
    ]
    for name, doc in TABLE_DOCS.items():
        out += [f"## `{name}`", "", f"**Grain:** {doc['grain']}.", "", doc["doc"], "",
                "| column | type | description |", "|---|---|---|"]
        for col, text in doc["columns"].items():
            out.append(f"| `{col}` | {types[name].get(col, '')} | {text.replace('|', '/')} |")
        out += ["", "```sql", doc["example"], "```", ""]
    return "\n".join(out)
