-- q4: sensors outside their spec limits in the last 24 hours, with counts.
-- Parameters: $now (TIMESTAMPTZ; the 24 hours are the 1-minute windows starting in [$now - 1 day, $now)).
-- Grain: one row per sensor with at least one sample outside (lsl, usl) in that time.
SELECT f.sensor_id, s.line, s.station, s.parameter, s.unit, s.lsl, s.usl,
       sum(f."count") AS samples,
       sum(f.out_of_spec) AS out_of_spec,
       sum(f.out_of_spec) / sum(f."count") AS share
FROM sensor_features_1m f
JOIN sensors s USING (sensor_id)
WHERE f.date >= CAST(timezone('UTC', $now - INTERVAL 1 DAY) AS DATE)
  AND f.date <= CAST(timezone('UTC', $now) AS DATE)
  AND f.window_start >= $now - INTERVAL 1 DAY
  AND f.window_start < $now
GROUP BY ALL
HAVING sum(f.out_of_spec) > 0
ORDER BY out_of_spec DESC, f.sensor_id;
