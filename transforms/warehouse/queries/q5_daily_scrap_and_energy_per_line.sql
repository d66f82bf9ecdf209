-- q5: daily scrap rate and energy per good cell, per line, over 30 days.
-- Parameters: $first_day, $last_day (DATE, UTC; 30 days: $first_day = $last_day - 29).
-- Grain: one row per production line and UTC day with cells or energy.
-- Scrap rate: cells scrapped at the cell stages (stacking to aging_eol) over those plus the cells
-- that left end-of-line test good. Energy: the line's own metered stations; the plant-wide dry room
-- (line 'site') is left out. Ratios are null when their denominator is zero.
WITH cells AS (
    SELECT line, date AS day,
           sum(scrapped) FILTER (WHERE stage IN ('stacking', 'filling', 'formation', 'aging_eol')) AS scrapped,
           sum(good) FILTER (WHERE stage = 'aging_eol') AS good_cells
    FROM quality_features
    WHERE date BETWEEN $first_day AND $last_day
    GROUP BY ALL
), energy AS (
    SELECT line, date AS day, sum(kwh) AS kwh
    FROM energy_features
    WHERE date BETWEEN $first_day AND $last_day AND line <> 'site'
    GROUP BY ALL
)
SELECT line, day,
       coalesce(good_cells, 0) AS good_cells,
       coalesce(scrapped, 0) AS scrapped,
       scrapped / nullif(coalesce(good_cells, 0) + coalesce(scrapped, 0), 0) AS scrap_rate,
       coalesce(kwh, 0) AS kwh,
       kwh / nullif(good_cells, 0) AS kwh_per_good_cell
FROM cells FULL JOIN energy USING (line, day)
ORDER BY line, day;
