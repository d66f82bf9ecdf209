"""The committed JSON Schemas are current, and every documented example satisfies its schema.

Producers in other languages validate against ``schemas/jsonschema/*.v1.json``; a file that lags the
contract classes would have them produce messages the stream refuses. Regenerate with
``gigapulse schemas export``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from schemas.contracts import json_schemas
from tests.schemas.test_docs_examples import Example, contract_examples

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"


def _committed(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.v1.json").read_text(encoding="utf-8"))


def test_exported_files_are_current():
    expected = json_schemas()
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == {f"{name}.v1.json" for name in expected}, "stale or missing files: run gigapulse schemas export"
    for name, schema in expected.items():
        assert _committed(name) == schema, f"{name}.v1.json is stale: run gigapulse schemas export"


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_schema_is_valid_draft_2020_12(name):
    schema = _committed(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("example", contract_examples(),
                         ids=[f"{e.where}-{e.args[0]}" for e in contract_examples()])
def test_docs_example_satisfies_its_schema(example: Example):
    (name,) = example.args
    validator = Draft202012Validator(_committed(name), format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(json.loads(example.body)), key=lambda e: list(e.path))
    assert not errors, f"{example.where}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
