"""Physical limits of sensor values: the bounds no real measurement can cross, by unit.

The asset model holds *spec* limits (``sensors.lsl`` / ``usl``): recipe settings of a product. A value
beyond them is a real process excursion; the stream counts it (``out_of_spec``), SPC charts it and, in
the simulator, it drives scrap. Flagging it as a data error would hide exactly the events the platform
exists to show, so the range check never uses spec limits.

A physical limit is different: a temperature below absolute zero, a relative humidity above 100 %, a
negative viscosity or resistance cannot be measured, so such a value is a broken sensor, a unit mix-up
or a decoding error, and every mean, Cpk and energy figure computed over it is wrong. The asset model
has no physical limits (the simulator's ``sim.min``/``max`` are the twin's dynamics, opaque to everything
else), so they are kept here, by unit, and only for units whose quantity is bounded whatever is measured.
Units of signed quantities are left out on purpose: ``µm`` and ``mm`` also measure deviations and
alignment offsets, ``Pa`` and ``kPa`` gauge and differential pressures, ``A``, ``V`` and ``kW`` flow both
ways. Non-finite values (NaN, infinity) are never physical, whatever the unit.
"""

from __future__ import annotations

from dataclasses import dataclass

ABSOLUTE_ZERO_C = -273.15


@dataclass(frozen=True)
class PhysicalLimit:
    """Bounds of one unit's quantity (``None``: unbounded on that side) and why they hold."""

    unit: str
    lo: float | None
    hi: float | None
    why: str


#: Units bounded by physics, whatever the sensor measures in them.
PHYSICAL_LIMITS: tuple[PhysicalLimit, ...] = (
    PhysicalLimit("°C", ABSOLUTE_ZERO_C, None, "no temperature is below absolute zero"),
    PhysicalLimit("%RH", 0.0, 100.0, "relative humidity is a share of saturation"),
    PhysicalLimit("wt%", 0.0, 100.0, "a mass fraction is a share of the whole"),
    PhysicalLimit("ppm", 0.0, 1e6, "parts per million of the whole"),
    PhysicalLimit("g/kg", 0.0, None, "a humidity ratio is a mass"),
    PhysicalLimit("particles/m³", 0.0, None, "a particle count"),
    PhysicalLimit("1/m²", 0.0, None, "a defect density is a count"),
    PhysicalLimit("Pa·s", 0.0, None, "viscosity"),
    PhysicalLimit("g/cm³", 0.0, None, "density"),
    PhysicalLimit("mg/cm²", 0.0, None, "areal loading is a mass"),
    PhysicalLimit("MΩ", 0.0, None, "resistance"),
    PhysicalLimit("mΩ", 0.0, None, "resistance"),
    PhysicalLimit("kWh", 0.0, None, "a cumulative energy counter starts at zero"),
)

LIMITS_BY_UNIT: dict[str, PhysicalLimit] = {limit.unit: limit for limit in PHYSICAL_LIMITS}


def limit_columns() -> tuple[list[str], list[float | None], list[float | None]]:
    """The table as three parallel lists (units, lower, upper), to bind as DuckDB list parameters."""
    return ([lim.unit for lim in PHYSICAL_LIMITS], [lim.lo for lim in PHYSICAL_LIMITS],
            [lim.hi for lim in PHYSICAL_LIMITS])


def limits_markdown() -> str:
    """The table for docs/batch.md, so the docs list exactly the limits the check applies."""
    rows = ["| unit | lower | upper | why |", "|---|---|---|---|"]
    for lim in PHYSICAL_LIMITS:
        lo = "" if lim.lo is None else f"{lim.lo:g}"
        hi = "" if lim.hi is None else f"{lim.hi:g}"
        rows.append(f"| {lim.unit} | {lo} | {hi} | {lim.why} |")
    return "\n".join(rows)
