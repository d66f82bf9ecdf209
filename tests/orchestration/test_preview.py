"""Markdown previews of batch rows for asset metadata: bounded, escaped, from Arrow tables or row dicts."""

from __future__ import annotations

import pyarrow as pa

from orchestration.preview import markdown_preview


def test_markdown_previews_are_bounded_tables_of_dicts_or_arrow():
    rows = [{"a": 1.23456, "b": "x|y"}, {"a": None, "b": "z"}, {"a": 3, "b": "w"}]
    for source in (rows, pa.Table.from_pylist(rows)):
        md = markdown_preview(source, ["a", "b"], limit=2)
        assert md.splitlines()[:4] == ["| a | b |", "|---|---|", "| 1.235 | x\\|y |", "|  | z |"]
        assert md.endswith("1 more rows")
