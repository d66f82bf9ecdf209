-- q7: sensors with gaps longer than ten times their nominal interval in the last day.
-- Parameters: $now (TIMESTAMPTZ; the day is the 1-minute windows starting in [$now - 1 day, $now)).
-- Grain: one row per sensor with such a gap. A gap is the time between consecutive samples of a
-- sensor, counted in the window of the later sample (sensor_health.max_gap_ms), so a gap that
-- began before the day but ended in it counts; windows_with_gap counts 1-minute windows holding one.
SELECT h.sensor_id, s.line, s.station, s.parameter, s.nominal_rate_hz,
       10.0 / s.nominal_rate_hz AS limit_s,
       count(*) AS windows_with_gap,
       max(h.max_gap_ms) / 1000.0 AS longest_gap_s
FROM sensor_health h
JOIN sensors s USING (sensor_id)
WHERE h.date >= CAST(timezone('UTC', $now - INTERVAL 1 DAY) AS DATE)
  AND h.date <= CAST(timezone('UTC', $now) AS DATE)
  AND h.window_start >= $now - INTERVAL 1 DAY
  AND h.window_start < $now
  AND s.nominal_rate_hz > 0
  AND h.max_gap_ms > 10 * 1000.0 / s.nominal_rate_hz
GROUP BY ALL
ORDER BY longest_gap_s DESC, h.sensor_id;
