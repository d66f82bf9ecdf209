"""The engines ``gigapulse bench warehouse`` times, each answering the eight questions its own way.

* **gigapulse**: the query set (:mod:`transforms.warehouse.queries`) through the published catalog,
  read-only, as an analyst's DuckDB session runs it;
* **chDB** (ClickHouse in-process) and **Polars** (lazy): the same questions written as each
  engine's users write them, over the *same* compacted Parquet files and the same tables (raw
  readings where gigapulse reads them, the stream's features where it reads those), with the same
  filters and the same plan where the query file has one (q1's time bound from the 1-minute windows),
  partition column included; q6 uses each engine's own as-of join (``join_asof``, ``ASOF JOIN``);
* **naive DuckDB**: what a team without the platform would run: one unsorted Parquet dump of the
  raw readings and one of the raw events, in arrival order, with every feature (window
  statistics, energy from the counters, gaps, pooled sigma) recomputed from raw rows in SQL.

Every engine returns an Arrow table with the gigapulse query's columns; the bench checks it
against gigapulse's answer before any of its times count.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

CELL_STAGES = ("stacking", "filling", "formation", "aging_eol")
BENCH_EXTRA = "pip install -e .[bench]"


@dataclass(frozen=True)
class LakeFiles:
    """Where the engines read: the compacted lake (one sorted file per table and day) and the naive dumps."""

    lake: Path
    naive: Path

    def table(self, name: str) -> str:
        """The glob of a table's compacted files (hive-partitioned by date)."""
        return (self.lake / name / "compacted" / "date=*" / "*.parquet").as_posix()

    @property
    def sensors(self) -> str:
        return (self.lake / "sensors" / "sensors.parquet").as_posix()

    def dump(self, name: str) -> str:
        return (self.naive / f"{name}.parquet").as_posix()


def missing_peers() -> dict[str, str]:
    """Peer name -> why it cannot run here (a one-line message), for the peers not installed."""
    out = {}
    for name, module in (("chdb", "chdb"), ("polars", "polars")):
        if importlib.util.find_spec(module) is None:
            out[name] = f"{name} is not installed: {BENCH_EXTRA}"
    return out


# --------------------------------------------------------------------------- gigapulse and naive DuckDB

class GigapulseEngine:
    """The query files through the catalog, on one read-only connection (an analyst's session)."""

    name = "gigapulse"

    def __init__(self, db_path: Path):
        from transforms.warehouse.catalog import _connect

        self.con = _connect(Path(db_path), read_only=True)

    def run(self, query: str, params: dict[str, Any]) -> pa.Table:
        from transforms.warehouse.queries import QUERIES

        q = QUERIES[query]
        return self.con.sql(q.sql, params=q.bind(**params)).to_arrow_table()

    def close(self) -> None:
        self.con.close()


_DAY_RANGE = "ts >= timezone('UTC', CAST($first_day AS TIMESTAMP)) AND ts < timezone('UTC', CAST($last_day + 1 AS TIMESTAMP))"
_UTC_DAY = "CAST(timezone('UTC', {col}) AS DATE)"

NAIVE_SQL = {
    "q1_last_value_per_sensor": """
        SELECT sensor_id, station, parameter, unit, max(ts) AS ts, arg_max(value, ts) AS value
        FROM readings WHERE line = $line GROUP BY ALL ORDER BY sensor_id""",
    "q2_minute_stats_of_station": """
        SELECT sensor_id, parameter, unit, time_bucket(INTERVAL 1 MINUTE, ts, 'UTC') AS window_start,
               count(*) AS samples, avg(value) AS mean, max(value) AS max
        FROM readings
        WHERE station = $station AND ts >= $hour AND ts < $hour + INTERVAL 1 HOUR AND NOT late
        GROUP BY ALL ORDER BY sensor_id, window_start""",
    "q3_hourly_mean_per_parameter": """
        SELECT time_bucket(INTERVAL 1 HOUR, ts, 'UTC') AS hour, stage, parameter, unit,
               count(*) AS samples, avg(value) AS mean
        FROM readings
        WHERE ts >= timezone('UTC', CAST($day AS TIMESTAMP)) AND ts < timezone('UTC', CAST($day + 1 AS TIMESTAMP))
          AND NOT late
        GROUP BY ALL ORDER BY ALL""",
    "q4_out_of_spec_last_24h": """
        SELECT r.sensor_id, s.line, s.station, s.parameter, s.unit, s.lsl, s.usl, count(*) AS samples,
               count(*) FILTER (WHERE r.value < s.lsl OR r.value > s.usl) AS out_of_spec,
               out_of_spec / samples AS share
        FROM readings r JOIN sensors s USING (sensor_id)
        WHERE r.ts >= $now - INTERVAL 1 DAY AND r.ts < $now AND NOT r.late
        GROUP BY ALL HAVING out_of_spec > 0 ORDER BY out_of_spec DESC, r.sensor_id""",
    "q5_daily_scrap_and_energy_per_line": f"""
        WITH cells AS (
            SELECT line, {_UTC_DAY.format(col="ts")} AS day,
                   count(*) FILTER (WHERE kind = 'scrap' AND stage IN {CELL_STAGES}) AS scrapped,
                   count(*) FILTER (WHERE kind = 'leave' AND stage = 'aging_eol') AS good_cells
            FROM production_events WHERE {_DAY_RANGE} AND NOT late GROUP BY ALL
        ), steps AS (
            SELECT r.line, r.ts, r.value, r.value - lag(r.value) OVER (PARTITION BY r.sensor_id ORDER BY r.ts) AS step
            FROM readings r JOIN sensors s USING (sensor_id)
            WHERE s.is_energy_meter AND NOT r.late AND r.line <> 'site'
        ), energy AS (
            SELECT line, {_UTC_DAY.format(col="ts")} AS day,
                   sum(CASE WHEN step >= 0 THEN step ELSE value END) AS kwh
            FROM steps WHERE step IS NOT NULL AND {_DAY_RANGE} GROUP BY ALL
        )
        SELECT line, day, coalesce(good_cells, 0) AS good_cells, coalesce(scrapped, 0) AS scrapped,
               scrapped / nullif(coalesce(good_cells, 0) + coalesce(scrapped, 0), 0) AS scrap_rate,
               coalesce(kwh, 0) AS kwh, kwh / nullif(good_cells, 0) AS kwh_per_good_cell
        FROM cells FULL JOIN energy USING (line, day) ORDER BY line, day""",
    "q6_below_a_cells_areal_loading": """
        WITH graded AS (
            SELECT unit_id AS cell_id, line, grade, unnest(parent_ids) AS roll_id
            FROM production_events
            WHERE ts >= timezone('UTC', CAST($day AS TIMESTAMP)) AND ts < timezone('UTC', CAST($day + 1 AS TIMESTAMP))
              AND kind = 'grade' AND unit_type = 'cell' AND grade <> 'A'
        ), coated AS (
            SELECT unit_id AS roll_id, station, min(ts) FILTER (WHERE kind = 'enter') AS coating_start,
                   max(ts) FILTER (WHERE kind = 'leave') AS coating_end
            FROM production_events
            WHERE stage = 'coating' AND kind IN ('enter', 'leave') AND unit_id IN (SELECT roll_id FROM graded)
            GROUP BY ALL HAVING coating_start IS NOT NULL AND coating_end IS NOT NULL
        ), loading AS (
            SELECT c.roll_id, avg(r.value) AS areal_loading_mean, count(*) AS samples
            FROM coated c JOIN readings r
              ON r.station = c.station AND r.ts >= c.coating_start AND r.ts < c.coating_end
            WHERE r.parameter = 'areal_loading' GROUP BY c.roll_id
        )
        SELECT g.cell_id, g.line, g.grade, g.roll_id, c.station, c.coating_start, c.coating_end,
               l.areal_loading_mean, l.samples
        FROM graded g JOIN coated c USING (roll_id) JOIN loading l USING (roll_id)
        ORDER BY g.cell_id, g.roll_id""",
    "q7_sensor_gaps_last_day": """
        WITH steps AS (
            SELECT sensor_id, ts, epoch_ms(ts) - epoch_ms(lag(ts) OVER (PARTITION BY sensor_id ORDER BY ts)) AS gap_ms
            FROM readings WHERE NOT late
        )
        SELECT st.sensor_id, s.line, s.station, s.parameter, s.nominal_rate_hz, 10.0 / s.nominal_rate_hz AS limit_s,
               count(DISTINCT time_bucket(INTERVAL 1 MINUTE, st.ts, 'UTC')) AS windows_with_gap,
               max(st.gap_ms) / 1000.0 AS longest_gap_s
        FROM steps st JOIN sensors s USING (sensor_id)
        WHERE st.ts >= $now - INTERVAL 1 DAY AND st.ts < $now AND s.nominal_rate_hz > 0
          AND st.gap_ms > 10 * 1000.0 / s.nominal_rate_hz
        GROUP BY ALL ORDER BY longest_gap_s DESC, st.sensor_id""",
    "q8_daily_cpk_per_ctq_parameter": f"""
        WITH windows AS (
            SELECT r.line, r.station, r.parameter, time_bucket(INTERVAL 1 MINUTE, r.ts, 'UTC') AS minute,
                   count(*) AS n, avg(r.value) AS mean, var_samp(r.value) AS var
            FROM readings r JOIN sensors s USING (sensor_id)
            WHERE s.ctq AND NOT r.late AND r.{_DAY_RANGE}
            GROUP BY r.sensor_id, r.line, r.station, r.parameter, minute
        ), pooled AS (
            SELECT line, station, parameter, {_UTC_DAY.format(col="minute")} AS day, sum(n) AS samples,
                   sum(mean * n) / sum(n) AS mean,
                   sqrt(sum((n - 1) * var) FILTER (WHERE n > 1) / sum(n - 1) FILTER (WHERE n > 1)) AS sigma_within
            FROM windows GROUP BY ALL
        ), limits AS (SELECT DISTINCT station, parameter, lsl, usl FROM sensors WHERE ctq)
        SELECT p.line, p.station, p.parameter, p.day, p.samples, p.mean, p.sigma_within, l.lsl, l.usl,
               least((l.usl - p.mean) / (3 * p.sigma_within), (p.mean - l.lsl) / (3 * p.sigma_within)) AS cpk
        FROM pooled p JOIN limits l USING (station, parameter)
        WHERE p.sigma_within > 0 ORDER BY p.line, p.station, p.parameter, p.day""",
}


class NaiveDuckDBEngine:
    """DuckDB over single-file dumps of the raw readings and events: no features, no sorting, no dates."""

    name = "naive DuckDB"

    def __init__(self, files: LakeFiles):
        import duckdb

        from transforms.warehouse.sqltext import sql_string

        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        for view, path in (("readings", files.dump("readings")), ("production_events", files.dump("production_events")),
                           ("sensors", files.sensors)):
            # A view is stored as text: the path cannot be a bound parameter.
            self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({sql_string(path)})")

    def run(self, query: str, params: dict[str, Any]) -> pa.Table:
        from transforms.warehouse.queries import used_params

        sql = NAIVE_SQL[query]
        bound = {k: v for k, v in params.items() if k in used_params(sql)}
        return self.con.sql(sql, params=bound).to_arrow_table()

    def close(self) -> None:
        self.con.close()


# --------------------------------------------------------------------------- chDB

_TS = "DateTime64(3, 'UTC')"
CHDB_SQL = {
    "q1_last_value_per_sensor": """
        SELECT sensor_id, station, parameter, unit, max(ts) AS ts, argMax(value, ts) AS value
        FROM @readings@
        WHERE line = {line:String}
          AND date >= (SELECT toDate(min(last_window)) FROM (SELECT max(window_start) AS last_window
                       FROM @sensor_features_1m@ WHERE line = {line:String} GROUP BY sensor_id))
          AND ts >= (SELECT min(last_window) FROM (SELECT max(window_start) AS last_window
                     FROM @sensor_features_1m@ WHERE line = {line:String} GROUP BY sensor_id))
        GROUP BY sensor_id, station, parameter, unit ORDER BY sensor_id""",
    "q2_minute_stats_of_station": f"""
        SELECT sensor_id, parameter, unit, window_start, `count` AS samples, mean, `max`
        FROM @sensor_features_1m@
        WHERE station = {{station:String}} AND date = toDate({{hour:{_TS}}})
          AND window_start >= {{hour:{_TS}}} AND window_start < {{hour:{_TS}}} + INTERVAL 1 HOUR
        ORDER BY sensor_id, window_start""",
    "q3_hourly_mean_per_parameter": """
        SELECT window_start AS hour, stage, parameter, unit, sum(`count`) AS samples,
               sum(mean * `count`) / sum(`count`) AS mean
        FROM @sensor_features_1h@ WHERE date = {day:Date} AND `count` > 0
        GROUP BY window_start, stage, parameter, unit ORDER BY hour, stage, parameter, unit""",
    "q4_out_of_spec_last_24h": f"""
        SELECT f.sensor_id AS sensor_id, s.line AS line, s.station AS station, s.parameter AS parameter,
               s.unit AS unit, s.lsl AS lsl, s.usl AS usl, sum(f.`count`) AS samples,
               sum(f.out_of_spec) AS out_of_spec, sum(f.out_of_spec) / sum(f.`count`) AS share
        FROM @sensor_features_1m@ AS f INNER JOIN @sensors@ AS s ON f.sensor_id = s.sensor_id
        WHERE f.date >= toDate({{now:{_TS}}} - INTERVAL 1 DAY) AND f.date <= toDate({{now:{_TS}}})
          AND f.window_start >= {{now:{_TS}}} - INTERVAL 1 DAY AND f.window_start < {{now:{_TS}}}
        GROUP BY f.sensor_id, s.line, s.station, s.parameter, s.unit, s.lsl, s.usl
        HAVING sum(f.out_of_spec) > 0 ORDER BY sum(f.out_of_spec) DESC, f.sensor_id""",
    "q5_daily_scrap_and_energy_per_line": f"""
        WITH cells AS (
            SELECT line, date AS day,
                   if(countIf(stage IN {CELL_STAGES}) = 0, NULL, sumIf(scrapped, stage IN {CELL_STAGES})) AS scrapped_n,
                   if(countIf(stage = 'aging_eol') = 0, NULL, sumIf(good, stage = 'aging_eol')) AS good_n
            FROM @quality_features@ WHERE date BETWEEN {{first_day:Date}} AND {{last_day:Date}}
            GROUP BY line, date
        ), energy AS (
            SELECT line, date AS day, sum(kwh) AS kwh_sum FROM @energy_features@
            WHERE date BETWEEN {{first_day:Date}} AND {{last_day:Date}} AND line != 'site' GROUP BY line, date
        )
        SELECT line, day, coalesce(good_n, 0) AS good_cells, coalesce(scrapped_n, 0) AS scrapped,
               scrapped_n / nullIf(coalesce(good_n, 0) + coalesce(scrapped_n, 0), 0) AS scrap_rate,
               coalesce(kwh_sum, 0) AS kwh, kwh_sum / nullIf(good_n, 0) AS kwh_per_good_cell
        FROM cells FULL OUTER JOIN energy USING (line, day) ORDER BY line, day""",
    "q6_below_a_cells_areal_loading": """
        WITH graded AS (
            SELECT unit_id AS cell_id, line, grade, arrayJoin(parent_ids) AS roll_id FROM @production_events@
            WHERE date = {day:Date} AND kind = 'grade' AND unit_type = 'cell' AND grade != 'A'
        ), coated AS (
            SELECT unit_id AS roll_id, station, minIf(ts, kind = 'enter') AS coating_start,
                   maxIf(ts, kind = 'leave') AS coating_end
            FROM @production_events@
            WHERE stage = 'coating' AND kind IN ('enter', 'leave') AND date <= {day:Date}
              AND unit_id IN (SELECT roll_id FROM graded)
            GROUP BY unit_id, station HAVING countIf(kind = 'enter') > 0 AND countIf(kind = 'leave') > 0
        ), loading AS (
            SELECT c.roll_id AS roll_id, avg(r.value) AS areal_loading_mean, count() AS samples
            FROM (SELECT station, ts, value FROM @readings@
                  WHERE parameter = 'areal_loading' AND date <= {day:Date}
                    AND date >= (SELECT toDate(min(coating_start)) FROM coated)) AS r
            ASOF INNER JOIN coated AS c ON r.station = c.station AND r.ts >= c.coating_start
            WHERE r.ts < c.coating_end GROUP BY c.roll_id
        )
        SELECT g.cell_id AS cell_id, g.line AS line, g.grade AS grade, g.roll_id AS roll_id, c.station AS station,
               c.coating_start AS coating_start, c.coating_end AS coating_end,
               l.areal_loading_mean AS areal_loading_mean, l.samples AS samples
        FROM graded AS g INNER JOIN coated AS c ON g.roll_id = c.roll_id INNER JOIN loading AS l ON g.roll_id = l.roll_id
        ORDER BY cell_id, roll_id""",
    "q7_sensor_gaps_last_day": f"""
        SELECT h.sensor_id AS sensor_id, s.line AS line, s.station AS station, s.parameter AS parameter,
               s.nominal_rate_hz AS nominal_rate_hz, 10.0 / s.nominal_rate_hz AS limit_s,
               count() AS windows_with_gap, max(h.max_gap_ms) / 1000.0 AS longest_gap_s
        FROM @sensor_health@ AS h INNER JOIN @sensors@ AS s ON h.sensor_id = s.sensor_id
        WHERE h.date >= toDate({{now:{_TS}}} - INTERVAL 1 DAY) AND h.date <= toDate({{now:{_TS}}})
          AND h.window_start >= {{now:{_TS}}} - INTERVAL 1 DAY AND h.window_start < {{now:{_TS}}}
          AND s.nominal_rate_hz > 0 AND h.max_gap_ms > 10 * 1000.0 / s.nominal_rate_hz
        GROUP BY h.sensor_id, s.line, s.station, s.parameter, s.nominal_rate_hz
        ORDER BY longest_gap_s DESC, sensor_id""",
    "q8_daily_cpk_per_ctq_parameter": """
        WITH pooled AS (
            SELECT line, station, parameter, date AS day, sum(`count`) AS samples,
                   sum(mean * `count`) / sum(`count`) AS pmean,
                   sqrt(sumIf((`count` - 1) * std * std, `count` > 1) / sumIf(`count` - 1, `count` > 1)) AS sigma
            FROM @sensor_features_1m@
            WHERE date BETWEEN {first_day:Date} AND {last_day:Date} AND `count` > 0
              AND sensor_id IN (SELECT sensor_id FROM @sensors@ WHERE ctq)
            GROUP BY line, station, parameter, date
        ), limits AS (SELECT DISTINCT station, parameter, lsl, usl FROM @sensors@ WHERE ctq)
        SELECT p.line AS line, p.station AS station, p.parameter AS parameter, p.day AS day, p.samples AS samples,
               p.pmean AS mean, p.sigma AS sigma_within, l.lsl AS lsl, l.usl AS usl,
               multiIf(l.usl IS NULL, (p.pmean - l.lsl) / (3 * p.sigma), l.lsl IS NULL, (l.usl - p.pmean) / (3 * p.sigma),
                       least((l.usl - p.pmean) / (3 * p.sigma), (p.pmean - l.lsl) / (3 * p.sigma))) AS cpk
        FROM pooled AS p INNER JOIN limits AS l ON p.station = l.station AND p.parameter = l.parameter
        WHERE p.sigma > 0 ORDER BY line, station, parameter, day""",
}
#: Hive partitions as a ``date`` column; an aggregate's alias never hides the column it aggregates
#: (``sum(mean * count) AS mean``, as in SQL); outer joins give NULL, not zero, where a side is missing.
CHDB_SETTINGS = " SETTINGS use_hive_partitioning = 1, prefer_column_name_to_alias = 1, join_use_nulls = 1"


def _chdb_param(value: Any) -> str:
    """A parameter as chDB binds it: text in the ``{name:Type}`` placeholder's type (times in UTC)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return value.isoformat() if isinstance(value, date) else str(value)


class ChdbEngine:
    """ClickHouse in-process over the compacted files (``file()`` with hive partitioning)."""

    name = "chDB"

    def __init__(self, files: LakeFiles):
        import chdb

        from transforms.warehouse.sqltext import sql_string

        self.session = chdb.connect(":memory:")
        self.tables = {name: f"file({sql_string(files.table(name))}, Parquet)" for name in (
            "readings", "production_events", "sensor_features_1m", "sensor_features_1h", "quality_features",
            "energy_features", "sensor_health")}
        self.tables["sensors"] = f"file({sql_string(files.sensors)}, Parquet)"

    def sql(self, query: str) -> str:
        text = CHDB_SQL[query]
        for name, ref in self.tables.items():
            text = text.replace(f"@{name}@", ref)
        return text + CHDB_SETTINGS

    def run(self, query: str, params: dict[str, Any]) -> pa.Table:
        bound = {k: _chdb_param(v) for k, v in params.items()}
        return self.session.query(self.sql(query), "ArrowTable", params=bound)

    def close(self) -> None:
        self.session.close()


# --------------------------------------------------------------------------- Polars

def _polars_queries(files: LakeFiles) -> dict[str, Callable[..., Any]]:
    """Each question as a lazy Polars plan over the compacted files (collected by the caller)."""
    import polars as pl

    def scan(table: str) -> pl.LazyFrame:
        return pl.scan_parquet(files.table(table), hive_partitioning=True, hive_schema={"date": pl.Date})

    def sensors() -> pl.LazyFrame:
        return pl.scan_parquet(files.sensors)

    col = pl.col

    def q1(line):
        # The same bound as the query file: nothing before the oldest last 1-minute window of the line.
        since = (scan("sensor_features_1m").filter(col("line") == line).group_by("sensor_id")
                 .agg(col("window_start").max()).select(col("window_start").min()).collect().item())
        readings = scan("readings").filter(col("line") == line)
        if since is not None:
            readings = readings.filter((col("date") >= since.date()) & (col("ts") >= since))
        return (readings.group_by("sensor_id", "station", "parameter", "unit")
                .agg(col("ts").max(), col("value").sort_by("ts").last())
                .sort("sensor_id"))

    def q2(station, hour):
        return (scan("sensor_features_1m")
                .filter((col("station") == station) & (col("date") == hour.date())
                        & (col("window_start") >= hour) & (col("window_start") < hour + timedelta(hours=1)))
                .select("sensor_id", "parameter", "unit", "window_start", col("count").alias("samples"), "mean", "max")
                .sort("sensor_id", "window_start"))

    def q3(day):
        return (scan("sensor_features_1h").filter((col("date") == day) & (col("count") > 0))
                .group_by(col("window_start").alias("hour"), "stage", "parameter", "unit")
                .agg(col("count").sum().alias("samples"), ((col("mean") * col("count")).sum() / col("count").sum())
                     .alias("mean"))
                .sort("hour", "stage", "parameter", "unit"))

    def q4(now):
        since = now - timedelta(days=1)
        counts = (scan("sensor_features_1m")
                  .filter(col("date").is_between(since.date(), now.date()) & (col("window_start") >= since)
                          & (col("window_start") < now))
                  .group_by("sensor_id").agg(col("count").sum().alias("samples"), col("out_of_spec").sum())
                  .filter(col("out_of_spec") > 0))
        return (counts.join(sensors().select("sensor_id", "line", "station", "parameter", "unit", "lsl", "usl"),
                            on="sensor_id")
                .select("sensor_id", "line", "station", "parameter", "unit", "lsl", "usl", "samples", "out_of_spec",
                        (col("out_of_spec") / col("samples")).alias("share"))
                .sort(["out_of_spec", "sensor_id"], descending=[True, False]))

    def q5(first_day, last_day):
        in_range = col("date").is_between(first_day, last_day)
        cell = col("stage").is_in(CELL_STAGES)
        eol = col("stage") == "aging_eol"
        cells = (scan("quality_features").filter(in_range).group_by("line", col("date").alias("day"))
                 .agg(pl.when(cell.any()).then(col("scrapped").filter(cell).sum()).alias("scrapped_n"),
                      pl.when(eol.any()).then(col("good").filter(eol).sum()).alias("good_n")))
        energy = (scan("energy_features").filter(in_range & (col("line") != "site"))
                  .group_by("line", col("date").alias("day")).agg(col("kwh").sum().alias("kwh_sum")))
        good, scrapped = col("good_n").fill_null(0), col("scrapped_n").fill_null(0)
        return (cells.join(energy, on=["line", "day"], how="full", coalesce=True)
                .select("line", "day", good.alias("good_cells"), scrapped.alias("scrapped"),
                        (col("scrapped_n") / pl.when(good + scrapped != 0).then(good + scrapped)).alias("scrap_rate"),
                        col("kwh_sum").fill_null(0.0).alias("kwh"),
                        (col("kwh_sum") / pl.when(col("good_n") != 0).then(col("good_n"))).alias("kwh_per_good_cell"))
                .sort("line", "day"))

    def q6(day):
        events = scan("production_events")
        consumed = (events.filter((col("date") == day) & (col("kind") == "grade") & (col("unit_type") == "cell")
                                  & (col("grade") != "A"))
                    .select(col("unit_id").alias("cell_id"), "line", "grade", col("parent_ids").alias("roll_id"))
                    .explode("roll_id"))
        coated = (events.filter((col("stage") == "coating") & col("kind").is_in(["enter", "leave"])
                                & (col("date") <= day))
                  .join(consumed.select("roll_id").unique(), left_on="unit_id", right_on="roll_id", how="semi")
                  .group_by(col("unit_id").alias("roll_id"), "station")
                  .agg(col("ts").filter(col("kind") == "enter").min().alias("coating_start"),
                       col("ts").filter(col("kind") == "leave").max().alias("coating_end"))
                  .drop_nulls(["coating_start", "coating_end"])
                  .collect())
        # The readings to scan start on the day the earliest of these rolls was coated.
        first = day if coated.is_empty() else coated["coating_start"].min().date()
        loading = (scan("readings")
                   .filter((col("parameter") == "areal_loading") & col("date").is_between(first, day))
                   .select("station", "ts", "value").sort("ts")
                   .join_asof(coated.lazy().sort("coating_start"), left_on="ts", right_on="coating_start",
                              by="station", strategy="backward", check_sortedness=False)
                   .filter(col("ts") < col("coating_end"))
                   .group_by("roll_id").agg(col("value").mean().alias("areal_loading_mean"),
                                            pl.len().cast(pl.Int64).alias("samples")))
        return (consumed.join(coated.lazy(), on="roll_id").join(loading, on="roll_id")
                .select("cell_id", "line", "grade", "roll_id", "station", "coating_start", "coating_end",
                        "areal_loading_mean", "samples")
                .sort("cell_id", "roll_id"))

    def q7(now):
        since = now - timedelta(days=1)
        limit_ms = 10 * 1000.0 / col("nominal_rate_hz")
        return (scan("sensor_health")
                .filter(col("date").is_between(since.date(), now.date()) & (col("window_start") >= since)
                        & (col("window_start") < now))
                .join(sensors().select("sensor_id", "line", "station", "parameter", "nominal_rate_hz"), on="sensor_id")
                .filter((col("nominal_rate_hz") > 0) & (col("max_gap_ms") > limit_ms))
                .group_by("sensor_id", "line", "station", "parameter", "nominal_rate_hz")
                .agg(pl.len().cast(pl.Int64).alias("windows_with_gap"),
                     (col("max_gap_ms").max() / 1000.0).alias("longest_gap_s"))
                .select("sensor_id", "line", "station", "parameter", "nominal_rate_hz",
                        (10.0 / col("nominal_rate_hz")).alias("limit_s"), "windows_with_gap", "longest_gap_s")
                .sort(["longest_gap_s", "sensor_id"], descending=[True, False]))

    def q8(first_day, last_day):
        ctq = sensors().filter(col("ctq"))
        several = col("count") > 1
        pooled = (scan("sensor_features_1m")
                  .filter(col("date").is_between(first_day, last_day) & (col("count") > 0))
                  .join(ctq.select("sensor_id"), on="sensor_id", how="semi")
                  .group_by("line", "station", "parameter", col("date").alias("day"))
                  .agg(col("count").sum().alias("samples"),
                       ((col("mean") * col("count")).sum() / col("count").sum()).alias("mean"),
                       (((col("count") - 1) * col("std") ** 2).filter(several).sum()
                        / (col("count") - 1).filter(several).sum()).sqrt().alias("sigma_within")))
        limits = ctq.select("station", "parameter", "lsl", "usl").unique()
        sigma3 = 3 * col("sigma_within")
        return (pooled.join(limits, on=["station", "parameter"]).filter(col("sigma_within") > 0)
                .with_columns(pl.min_horizontal((col("usl") - col("mean")) / sigma3,
                                                (col("mean") - col("lsl")) / sigma3).alias("cpk"))
                .select("line", "station", "parameter", "day", "samples", "mean", "sigma_within", "lsl", "usl", "cpk")
                .sort("line", "station", "parameter", "day"))

    return {"q1_last_value_per_sensor": q1, "q2_minute_stats_of_station": q2, "q3_hourly_mean_per_parameter": q3,
            "q4_out_of_spec_last_24h": q4, "q5_daily_scrap_and_energy_per_line": q5,
            "q6_below_a_cells_areal_loading": q6, "q7_sensor_gaps_last_day": q7, "q8_daily_cpk_per_ctq_parameter": q8}


class PolarsEngine:
    """Polars' lazy API over the compacted files: ``scan_parquet`` with hive partitions, then collect."""

    name = "Polars"

    def __init__(self, files: LakeFiles):
        self.queries = _polars_queries(files)

    def run(self, query: str, params: dict[str, Any]) -> pa.Table:
        return self.queries[query](**params).collect().to_arrow()

    def close(self) -> None:
        pass
