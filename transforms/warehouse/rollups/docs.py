"""The column tables of ``docs/warehouse-rollups.md``, generated from the rollup contracts.

The prose around them is written by hand; a test checks that the file holds every table exactly as
generated here, so the docs cannot drift from ``schemas/rollups.py``.
"""

from __future__ import annotations

import duckdb

from transforms.warehouse.rollups.specs import ROLLUPS


def rollup_columns_markdown(name: str) -> str:
    """The grain line and the column table (name, DuckDB type, description with units) of one rollup."""
    spec = ROLLUPS[name]
    con = duckdb.connect()
    try:
        con.register("_empty", spec.schema.empty_table())
        types = dict((row[0], row[1]) for row in con.execute("DESCRIBE SELECT * FROM _empty").fetchall())
    finally:
        con.close()
    lines = [f"**Grain:** {spec.grain}. Sorted by {', '.join(spec.sort_key)}.", "",
             "| column | type | description |", "|---|---|---|"]
    lines += [f"| `{col}` | {types[col]} | {text.replace('|', '/')} |" for col, text in spec.column_docs().items()]
    return "\n".join(lines)
