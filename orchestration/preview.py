"""Markdown previews of a batch table for an asset's metadata (what the Dagster UI shows beside a run)."""

from __future__ import annotations

import pyarrow as pa


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):  # a MAP column: [(key, value), ...]
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value)
    return str(value).replace("|", "\\|")


def markdown_preview(table: pa.Table | list[dict], columns: list[str], limit: int = 20) -> str:
    """The first ``limit`` rows of ``columns`` (of an Arrow table or of row dicts) as a Markdown table,
    with a line saying how many were left out."""
    if isinstance(table, pa.Table):
        total, rows = table.num_rows, table.select(columns).slice(0, limit).to_pylist()
    else:
        total, rows = len(table), table[:limit]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    if total > limit:
        lines.append(f"\n{total - limit} more rows")
    return "\n".join(lines)
