-- q3: hourly mean per parameter across all lines over one day.
-- Parameters: $day (DATE, UTC).
-- Grain: one row per UTC hour of $day and (stage, parameter, unit), pooling every sensor of that
-- parameter on every line (cathode and anode sensors of a stage pool too: group by station for them
-- apart). The mean is over samples: each sensor's hourly mean weighted by its sample count.
SELECT window_start AS hour, stage, parameter, unit,
       sum("count") AS samples,
       sum(mean * "count") / sum("count") AS mean
FROM sensor_features_1h
WHERE date = $day AND "count" > 0
GROUP BY ALL
ORDER BY hour, stage, parameter, unit;
