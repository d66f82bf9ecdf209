"""Feature rows as messages for the ``features.*.v1`` topics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa


def feature_messages(table: pa.Table, key_cols: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    """Feature rows as (key, JSON value) pairs for the features.*.v1 topics."""
    out = []
    for row in table.to_pylist():
        key = "/".join(str(row.get(c)) for c in key_cols).encode()
        out.append((key, orjson.dumps(row, default=_json_default, option=orjson.OPT_NON_STR_KEYS)))
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(type(obj).__name__)
