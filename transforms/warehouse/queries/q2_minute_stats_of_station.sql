-- q2: 1-minute mean and max per sensor of one station over one hour.
-- Parameters: $station (VARCHAR, e.g. 'L1-coat-c'), $hour (TIMESTAMPTZ, start of the hour, UTC).
-- Grain: one row per sensor and 1-minute window starting in [$hour, $hour + 1 hour).
-- Reads the stream's 1-minute windows (late samples are not in them; see sensor_features_1m).
SELECT sensor_id, parameter, unit, window_start, "count" AS samples, mean, max
FROM sensor_features_1m
WHERE station = $station
  AND date = CAST(timezone('UTC', $hour) AS DATE)
  AND window_start >= $hour
  AND window_start < $hour + INTERVAL 1 HOUR
ORDER BY sensor_id, window_start;
