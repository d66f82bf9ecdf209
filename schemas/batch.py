"""Arrow schemas of the batch side's tables: what the Dagster assets land, one file per UTC day.

Each is a :class:`~schemas.tables.TableSpec` like the lake tables and rollups, so its grain, doc and
column descriptions (units included) drive the warehouse views and ``docs/tables.md``. The code that
fills them lives in :mod:`transforms.batch`; they are written by :func:`transforms.batch.store.write_day`
to ``<lake>/batch/<table>/date=YYYY-MM-DD/<table>.parquet``, replaced whole, so materializing a day
twice leaves the same rows.

Each domain adds its specs in its own section below and lists them in ``BATCH_TABLES``, with an
example query in ``BATCH_EXAMPLES``.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import DESCRIPTION, TableSpec


def col(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    """A column with its description (units included) in the field metadata."""
    return pa.field(name, type_, nullable=nullable, metadata={DESCRIPTION: description.encode()})


def date_col(what: str = "the UTC day the row describes") -> pa.Field:
    return col("date", pa.date32(), f"Partition column: {what}.", nullable=False)


def batch_spec(name: str, grain: str, doc: str, fields: list[pa.Field], sort_key: tuple[str, ...]) -> TableSpec:
    """A daily batch table: partitioned by ``date``, rows sorted by ``sort_key`` for identical rewrites."""
    return TableSpec(name=name, grain=grain, doc=doc, schema=pa.schema(fields), partition_cols=("date",),
                     date_from=None, sort_key=sort_key)


# --------------------------------------------------------------------------- the registry

#: Every batch table by name, in the order the docs list them.
BATCH_TABLES: dict[str, TableSpec] = {}

#: One example query per batch table, shown in docs/tables.md.
BATCH_EXAMPLES: dict[str, str] = {}


# --------------------------------------------------------------------------- material ledger and plant KPIs
# (transforms/batch/material.py, transforms/batch/kpis.py; docs/batch.md, "Material loss" and "Plant KPIs")

MATERIAL_LOSS = batch_spec(
    "material_loss",
    "one site x line x stage x scrap reason x element x UTC day",
    "Scrapped units booked as kilograms of critical raw material and their value: each scrap event's unit "
    "(slurry batch, electrode roll or cell) times the part of the site's bill of materials it carries at its "
    "stage, at the configured element prices. Elements a unit holds none of have no row.",
    [
        col("site", pa.string(), "Site.", nullable=False),
        col("line", pa.string(), "Production line.", nullable=False),
        col("stage", pa.string(), "Process stage where the units were scrapped.", nullable=False),
        col("reason", pa.string(), "Scrap reason ('unknown' when the event gave none).", nullable=False),
        col("element", pa.string(), "lithium, nickel, cobalt, manganese, graphite, copper or aluminium.",
            nullable=False),
        col("chemistry", pa.string(), "Cell chemistry of the site (its plant file's product block), e.g. NMC811."),
        col("units_scrapped", pa.int64(), "Scrap events of the site, line, stage and reason that day, count "
            "(the same on each element's row of the group)."),
        col("cell_equivalents", pa.float64(), "Those units in cells' worth (a cell 1, a batch or roll the plant's "
            "stated size), cells (the same on each element's row)."),
        col("kg", pa.float64(), "Mass of the element the scrapped units held, kg."),
        col("price_per_kg", pa.float64(), "Price of the element used, currency per kg (price list)."),
        col("value", pa.float64(), "kg x price_per_kg, in currency."),
        col("currency", pa.string(), "Currency of price_per_kg and value (ISO 4217)."),
        date_col("the UTC day of the scrap events"),
    ],
    sort_key=("site", "line", "stage", "reason", "element"),
)

PLANT_KPIS = batch_spec(
    "plant_kpis",
    "one site x line x UTC day",
    "Daily plant KPIs per line: output, yield, first-pass yield, scrap by reason, the parts of OEE the events "
    "allow, energy per good cell and per kWh of cells with the metered share of stations beside it, and "
    "measurements per kWh of cells. From the rollups quality_daily, energy_daily and sensor_health_daily, "
    "the sensors table and the plant files; a kWh figure is only as complete as metered_share says.",
    [
        col("site", pa.string(), "Site.", nullable=False),
        col("line", pa.string(), "Production line.", nullable=False),
        col("plant", pa.string(), "Plant file of the site; null when no plant file names the site."),
        col("chemistry", pa.string(), "Cell chemistry (plant file)."),
        col("cell_kwh", pa.float64(), "Nominal energy of one cell, kWh (capacity x nominal voltage)."),
        col("output_cells", pa.int64(), "Cells that left aging_eol good (end of line), count."),
        col("output_kwh", pa.float64(), "output_cells x cell_kwh, kWh of cells produced."),
        col("cells_scrapped", pa.int64(), "Cells scrapped at the cell stages (stacking to aging_eol), count."),
        col("electrode_units_scrapped", pa.int64(), "Slurry batches and electrode rolls scrapped (mixing to "
            "vacuum_drying), count; their material is in material_loss."),
        col("yield", pa.float64(), "output_cells / (output_cells + cells_scrapped), ratio 0-1; null when none."),
        col("first_pass_yield", pa.float64(), "Product of the cell stages' first-pass yields (quality_daily), "
            "ratio 0-1: the share of cells through every stage right the first time; null when a stage has none."),
        col("scrap_rate", pa.float64(), "cells_scrapped / (output_cells + cells_scrapped), ratio 0-1."),
        col("cell_scrap_by_reason", pa.map_(pa.string(), pa.int64()), "Cells scrapped per reason, count."),
        col("cell_scrap_rate_by_reason", pa.map_(pa.string(), pa.float64()),
            "Cells scrapped per reason / (output_cells + cells_scrapped), ratio 0-1."),
        col("electrode_scrap_by_reason", pa.map_(pa.string(), pa.int64()),
            "Slurry batches and electrode rolls scrapped per reason, count."),
        col("planned_hours", pa.float64(), "Planned production time assumed for OEE: from the line's first to "
            "its last production event of the day, h."),
        col("nominal_cells_per_hour", pa.float64(), "Ideal rate of the line (plant file), cells per hour."),
        col("oee_availability", pa.float64(), "Always null: needs machine states or downtime, which the events "
            "do not carry (oee_note)."),
        col("oee_performance", pa.float64(), "Always null: needs run time, i.e. availability (oee_note)."),
        col("oee_availability_x_performance", pa.float64(), "(output_cells + cells_scrapped) / (nominal rate x "
            "planned_hours), ratio: the two parts the events cannot separate, together."),
        col("oee_quality", pa.float64(), "output_cells / (output_cells + cells_scrapped), ratio 0-1 (= yield)."),
        col("oee", pa.float64(), "oee_availability_x_performance x oee_quality = output_cells / (nominal rate x "
            "planned_hours), ratio."),
        col("oee_note", pa.string(), "Which OEE parts are computed, which are not and why."),
        col("kwh_line", pa.float64(), "Energy of the line's metered stations, kWh (energy_daily); null when the "
            "line has no meter with data."),
        col("kwh_site_allocated", pa.float64(), "The line's share of plant-wide meters (dry room), by its share "
            "of the site's output_cells, kWh."),
        col("kwh", pa.float64(), "kwh_line + kwh_site_allocated, kWh: what the meters saw, not what the line used."),
        col("kwh_per_good_cell", pa.float64(), "kwh / output_cells, kWh per cell; read it with metered_share."),
        col("kwh_per_kwh_cell", pa.float64(), "kwh / output_kwh, kWh of production per kWh of cells; read it "
            "with metered_share."),
        col("stations", pa.int64(), "Stations of the line plus plant-wide stations (sensors table), count."),
        col("metered_stations", pa.int64(), "Of those, stations with an energy meter, count."),
        col("metered_share", pa.float64(), "metered_stations / stations, ratio 0-1: how much of the plant the kWh "
            "figures cover. A low kWh per cell with a low share is missing meters, not efficiency."),
        col("plant_stations", pa.int64(), "Stations of the whole site (every line and plant-wide), count."),
        col("plant_metered_stations", pa.int64(), "Of those, stations with an energy meter, count."),
        col("plant_metered_share", pa.float64(), "plant_metered_stations / plant_stations, ratio 0-1: the metered "
            "share of the plant, the same on every line of the site."),
        col("readings", pa.int64(), "Samples received from the line's sensors plus its share of plant-wide "
            "sensors' (sensor_health_daily.observed, allocated as kwh_site_allocated), count."),
        col("readings_per_kwh_cell", pa.float64(), "readings / output_kwh: the plant's data-to-energy ratio, "
            "measurements per kWh of cells produced."),
        date_col("the UTC day of the rollups"),
    ],
    sort_key=("site", "line"),
)

BATCH_TABLES[MATERIAL_LOSS.name] = MATERIAL_LOSS
BATCH_TABLES[PLANT_KPIS.name] = PLANT_KPIS
BATCH_EXAMPLES[MATERIAL_LOSS.name] = """SELECT site, stage, element, round(sum(kg), 3) AS kg, round(sum(value), 2) AS value, any_value(currency) AS currency
FROM material_loss
WHERE date >= (SELECT max(date) FROM material_loss) - 6 AND element IN ('lithium', 'nickel', 'cobalt')
GROUP BY ALL ORDER BY value DESC;"""
BATCH_EXAMPLES[PLANT_KPIS.name] = """SELECT date, site, line, output_cells, round(yield, 4) AS yield, round(kwh_per_good_cell, 2) AS kwh_per_cell,
       round(metered_share, 2) AS metered_share, round(readings_per_kwh_cell) AS readings_per_kwh
FROM plant_kpis
ORDER BY date DESC, site, line;"""
