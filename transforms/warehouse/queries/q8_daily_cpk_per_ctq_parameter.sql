-- q8: Cpk per critical-to-quality parameter per line per day.
-- Parameters: $first_day, $last_day (DATE, UTC).
-- Grain: one row per line, station, CTQ parameter and UTC day. Subgroups are the 1-minute windows
-- of each sensor: sigma_within is their pooled standard deviation, the mean is over all samples.
-- Cpk = min(usl - mean, mean - lsl) / (3 sigma_within); a one-sided limit gives the one-sided index.
WITH limits AS (
    SELECT DISTINCT station, parameter, lsl, usl FROM sensors WHERE ctq
), pooled AS (
    SELECT f.line, f.station, f.parameter, f.date AS day,
           sum(f."count") AS samples,
           sum(f.mean * f."count") / sum(f."count") AS mean,
           sqrt(sum((f."count" - 1) * f.std * f.std) FILTER (WHERE f."count" > 1)
                / sum(f."count" - 1) FILTER (WHERE f."count" > 1)) AS sigma_within
    FROM sensor_features_1m f
    WHERE f.date BETWEEN $first_day AND $last_day
      AND f.sensor_id IN (SELECT sensor_id FROM sensors WHERE ctq)
      AND f."count" > 0
    GROUP BY ALL
)
SELECT p.line, p.station, p.parameter, p.day, p.samples, p.mean, p.sigma_within, l.lsl, l.usl,
       least((l.usl - p.mean) / (3 * p.sigma_within), (p.mean - l.lsl) / (3 * p.sigma_within)) AS cpk
FROM pooled p
JOIN limits l USING (station, parameter)
WHERE p.sigma_within > 0
ORDER BY p.line, p.station, p.parameter, p.day;
