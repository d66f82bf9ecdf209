-- q1: the last value of every sensor on a line.
-- Parameters: $line (VARCHAR, e.g. 'L1').
-- Grain: one row per sensor of the line that ever reported; its latest reading by event time.
-- Reads raw readings: the stream's features lag by up to a window, the last value must not.
SELECT sensor_id, station, parameter, unit,
       max(ts) AS ts,
       arg_max(value, ts) AS value
FROM readings
WHERE line = $line
GROUP BY sensor_id, station, parameter, unit
ORDER BY sensor_id;
