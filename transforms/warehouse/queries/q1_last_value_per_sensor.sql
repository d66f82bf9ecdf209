-- q1: the last value of every sensor on a line.
-- Parameters: $line (VARCHAR, e.g. 'L1').
-- Grain: one row per sensor of the line; its latest reading by event time.
-- Reads raw readings (the features lag by up to a window; the last value must not), but only since
-- the start of the oldest "last 1-minute window" of the line's sensors: every such sensor has a
-- reading at or after it, so nothing older can be a last value, and the date and the time filter
-- let DuckDB skip every older file and row group (compacted readings are grouped by hour, then
-- sorted by sensor and time).
-- A sensor that never made it into a window (all its readings late) is not listed.
WITH since AS (
    SELECT min(last_window) AS ts
    FROM (SELECT max(window_start) AS last_window FROM sensor_features_1m WHERE line = $line GROUP BY sensor_id)
)
SELECT sensor_id, station, parameter, unit,
       max(ts) AS ts,
       arg_max(value, ts) AS value
FROM readings
WHERE line = $line
  AND date >= (SELECT CAST(timezone('UTC', ts) AS DATE) FROM since)
  AND ts >= (SELECT ts FROM since)
GROUP BY sensor_id, station, parameter, unit
ORDER BY sensor_id;
