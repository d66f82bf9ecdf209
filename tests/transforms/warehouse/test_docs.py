"""The documented example queries answer something on real data: a lake the simulator made."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from transforms.warehouse import TABLE_DOCS, query


def _numbers(rows: list[tuple]) -> list:
    return [v for row in rows for v in row
            if isinstance(v, int | float | Decimal) and not isinstance(v, bool)]


@pytest.mark.parametrize("name", sorted(TABLE_DOCS))
def test_every_documented_example_returns_rows_with_finite_numbers(name, two_plant_warehouse):
    """On both plants: the retrofit tables are empty for the reference plant, which has no gaps."""
    simulated_warehouse = two_plant_warehouse
    columns, rows = query(simulated_warehouse, TABLE_DOCS[name]["example"])
    if query(simulated_warehouse, "SELECT max(date) = current_date FROM readings")[1] != [(True,)]:
        pytest.skip("the UTC date changed since the lake was built: 'today' in the examples has no data yet")
    assert rows, f"the example of {name} returns no row on a simulated lake"
    numbers = _numbers(rows)
    assert numbers, f"the example of {name} returns no number: {columns} {rows[:3]}"
    assert all(math.isfinite(v) for v in numbers), f"the example of {name} returns {rows[:5]}"


def test_the_examples_use_no_fixed_date_or_made_up_id():
    for name, doc in TABLE_DOCS.items():
        example = doc["example"]
        assert "DATE '" not in example and "'cell-" not in example and "'roll-" not in example, name


def test_no_example_starts_with_a_comment():
    """``gigapulse sql '-- ...'`` would read the comment as an option: examples are pasted there."""
    for name, doc in TABLE_DOCS.items():
        assert not doc["example"].lstrip().startswith("-"), name
