"""The warehouse query set: the eight questions a plant asks, one tested ``.sql`` file each.

Each file is one SELECT over the catalog's views with DuckDB named parameters (``$line``, ``$day``,
``$now`` ...), documented in its header comment. They are what analysts copy from and what
``gigapulse bench warehouse`` times; ``tests/transforms/warehouse/test_queries.py`` checks every
answer against a brute-force recomputation from the lake's raw rows. Parameters are passed bound,
never formatted into the text::

    from transforms.warehouse import queries
    q = queries.QUERIES["q1_last_value_per_sensor"]
    con.execute(q.sql, q.bind(line="L1"))

Times are TIMESTAMPTZ (pass timezone-aware datetimes), days are DATEs, both UTC; the catalog's
connections run with ``TimeZone = 'UTC'``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from importlib import resources
from typing import Any

#: Python types a parameter of each kind accepts.
_KINDS: dict[str, tuple[type, ...]] = {"VARCHAR": (str,), "DATE": (date,), "TIMESTAMPTZ": (datetime,)}
_PARAM = re.compile(r"\$([a-z_][a-z0-9_]*)")


@dataclass(frozen=True)
class Param:
    """One named parameter of a query: its DuckDB type and what it means."""

    name: str
    kind: str
    doc: str


@dataclass(frozen=True)
class Query:
    """One question of the set and the file that answers it."""

    name: str
    question: str
    params: tuple[Param, ...]

    @property
    def file(self) -> str:
        return f"{self.name}.sql"

    @cached_property
    def sql(self) -> str:
        """The file's text, header comment included (DuckDB ignores comments)."""
        return resources.files(__name__).joinpath(self.file).read_text(encoding="utf-8")

    def bind(self, **values: Any) -> dict[str, Any]:
        """The parameters as DuckDB takes them, checked: every one given, none unknown, types right."""
        names = {p.name for p in self.params}
        missing = sorted(names - set(values))
        unknown = sorted(set(values) - names)
        if missing or unknown:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(unknown)}"] if unknown else [])
            raise ValueError(f"{self.name}: {'; '.join(parts)} (takes {', '.join(sorted(names))})")
        for p in self.params:
            v = values[p.name]
            ok = isinstance(v, _KINDS[p.kind]) and not (p.kind == "DATE" and isinstance(v, datetime))
            if not ok:
                raise ValueError(f"{self.name}: ${p.name} must be a {p.kind}, got {type(v).__name__}")
            if p.kind == "TIMESTAMPTZ" and v.tzinfo is None:
                raise ValueError(f"{self.name}: ${p.name} must be timezone-aware")
        return dict(values)


def used_params(sql: str) -> set[str]:
    """The ``$names`` a statement uses outside its comments."""
    body = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return set(_PARAM.findall(body))


_LINE = Param("line", "VARCHAR", "production line, e.g. 'L1'")
_NOW = Param("now", "TIMESTAMPTZ", "end of the period (exclusive), UTC; a whole minute for whole windows")
_FIRST = Param("first_day", "DATE", "first UTC day")
_LAST = Param("last_day", "DATE", "last UTC day (inclusive)")

QUERIES: dict[str, Query] = {q.name: q for q in (
    Query("q1_last_value_per_sensor", "Last value of every sensor on a line", (_LINE,)),
    Query("q2_minute_stats_of_station", "1-minute mean and max per sensor of one station over one hour",
          (Param("station", "VARCHAR", "station, e.g. 'L1-coat-c'"),
           Param("hour", "TIMESTAMPTZ", "start of the hour, UTC"))),
    Query("q3_hourly_mean_per_parameter", "Hourly mean per parameter across all lines over one day",
          (Param("day", "DATE", "UTC day"),)),
    Query("q4_out_of_spec_last_24h", "Sensors outside their spec limits in the last 24 h, with counts", (_NOW,)),
    Query("q5_daily_scrap_and_energy_per_line", "Daily scrap rate and energy per good cell, per line, over 30 days",
          (_FIRST, _LAST)),
    Query("q6_below_a_cells_areal_loading", "For cells graded below A on a day, the areal-loading mean at their "
          "coating station while their electrode was coated",
          (Param("day", "DATE", "UTC day the cells were graded, e.g. yesterday"),)),
    Query("q7_sensor_gaps_last_day", "Sensors with gaps longer than ten times their nominal interval in the "
          "last day", (_NOW,)),
    Query("q8_daily_cpk_per_ctq_parameter", "Cpk per critical-to-quality parameter per line per day",
          (_FIRST, _LAST)),
)}


def load_query(name: str) -> str:
    """The SQL text of query ``name`` (a key of :data:`QUERIES`)."""
    try:
        return QUERIES[name].sql
    except KeyError:
        raise KeyError(f"no query {name!r}; the set: {', '.join(QUERIES)}") from None


__all__ = ["QUERIES", "Param", "Query", "load_query", "used_params"]
