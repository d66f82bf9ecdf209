-- q8: Cpk per critical-to-quality parameter per line per day.
-- Parameters: $first_day, $last_day (DATE, UTC).
-- Grain: one row per line, station, CTQ parameter and UTC day (and spec limits, which the asset model
-- gives per sensor: sensors of one parameter at one station share them). Subgroups are the 1-minute
-- windows of each sensor: sigma_within is their pooled standard deviation, the mean is over all
-- samples. Cpk = min(usl - mean, mean - lsl) / (3 sigma_within); a one-sided limit gives the
-- one-sided index.
WITH pooled AS (
    SELECT f.line, f.station, f.parameter, f.date AS day, s.lsl, s.usl,
           sum(f."count") AS samples,
           sum(f.mean * f."count") / sum(f."count") AS mean,
           sqrt(sum((f."count" - 1) * f.std * f.std) FILTER (WHERE f."count" > 1)
                / sum(f."count" - 1) FILTER (WHERE f."count" > 1)) AS sigma_within
    FROM sensor_features_1m f
    JOIN sensors s USING (sensor_id)
    WHERE f.date BETWEEN $first_day AND $last_day AND s.ctq AND f."count" > 0
    GROUP BY ALL
)
SELECT line, station, parameter, day, samples, mean, sigma_within, lsl, usl,
       least((usl - mean) / (3 * sigma_within), (mean - lsl) / (3 * sigma_within)) AS cpk
FROM pooled
WHERE sigma_within > 0
ORDER BY line, station, parameter, day;
