-- q6: for cells graded below A on a day, the areal-loading mean at their coating station while their
-- electrode was coated (genealogy, then an as-of join of readings onto each electrode's coating window).
-- Parameters: $day (DATE, UTC: the day the cells were graded, e.g. yesterday).
-- Grain: one row per graded cell and electrode roll it consumed that was coated in this plant
-- (a roll from stock has no coating events and no row). The coating window is the roll's enter to
-- leave at its coating station; the mean is over every areal_loading sensor of that station.
WITH graded AS (
    SELECT unit_id AS cell_id, line, grade, parent_ids
    FROM production_events
    WHERE date = $day AND kind = 'grade' AND unit_type = 'cell' AND grade <> 'A'
), consumed AS (
    SELECT cell_id, line, grade, unnest(parent_ids) AS roll_id FROM graded
), coated AS (
    SELECT unit_id AS roll_id, station,
           min(ts) FILTER (WHERE kind = 'enter') AS coating_start,
           max(ts) FILTER (WHERE kind = 'leave') AS coating_end
    FROM production_events
    WHERE stage = 'coating' AND kind IN ('enter', 'leave') AND date <= $day
      AND unit_id IN (SELECT roll_id FROM consumed)
    GROUP BY ALL
    HAVING coating_start IS NOT NULL AND coating_end IS NOT NULL
), buckets AS (
    -- Each coating window as the 1-minute buckets it overlaps, so readings join it on equality
    -- (station, bucket) and only then on time. A plain range join compares every reading of a
    -- station with every window there (rolls x readings); an as-of join sorts all the readings.
    SELECT roll_id, station, coating_start, coating_end,
           unnest(generate_series(time_bucket(INTERVAL 1 MINUTE, coating_start), coating_end,
                                  INTERVAL 1 MINUTE)) AS bucket
    FROM coated
), loading AS (
    -- Per roll once (about 30 cells share a roll), not per cell.
    SELECT b.roll_id, avg(r.value) AS areal_loading_mean, count(*) AS samples
    FROM readings r
    JOIN buckets b ON r.station = b.station AND time_bucket(INTERVAL 1 MINUTE, r.ts) = b.bucket
                  AND r.ts >= b.coating_start AND r.ts < b.coating_end
    WHERE r.parameter = 'areal_loading'
      AND r.date BETWEEN (SELECT CAST(timezone('UTC', min(coating_start)) AS DATE) FROM coated) AND $day
    GROUP BY b.roll_id
)
SELECT k.cell_id, k.line, k.grade, k.roll_id, c.station, c.coating_start, c.coating_end,
       l.areal_loading_mean, l.samples
FROM consumed k
JOIN coated c USING (roll_id)
JOIN loading l USING (roll_id)
ORDER BY k.cell_id, k.roll_id;
