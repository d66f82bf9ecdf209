"""The examples in docs/contracts.md and docs/topics.md are what the code accepts and refuses.

Every fenced example is marked by the HTML comment right above it:

- ``<!-- contract: NAME -->`` before a ``json`` block: a message of contract NAME; it must decode with
  that contract's decoder and pass the edge checks against the reference plant.
- ``<!-- rejected: NAME REASON -->`` before a ``text`` block: the exact bytes of a message sent as NAME;
  the decoder or the edge must refuse it with REASON.
- ``<!-- feature: TABLE -->`` before a ``json`` block: an illustrative feature record; every field must
  be a column of TABLE in ``schemas.tables``.

An unmarked ``json`` block fails, so no example escapes the checks and the docs cannot go stale.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ingestion.validation import EdgeValidator
from schemas import topics
from schemas.asset_model import load_plant
from schemas.contracts import (
    BRIDGE_REASONS,
    MAX_FRAME_READINGS,
    MAX_MESSAGE_BYTES,
    AssetEntry,
    ContractError,
    DeadLetter,
    DecodedFrame,
    ProductionEvent,
    Reading,
    Reason,
    decode_asset,
    decode_dead_letter,
    decode_event,
    decode_reading_message,
    parse_ts,
)
from schemas.tables import TABLES

DOCS = Path(__file__).resolve().parents[2] / "docs"
CONTRACTS_MD = DOCS / "contracts.md"
TOPICS_MD = DOCS / "topics.md"

DECODERS = {
    "reading": decode_reading_message,
    "reading_frame": decode_reading_message,
    "production_event": decode_event,
    "asset_entry": decode_asset,
    "dead_letter": decode_dead_letter,
}
DECODED_TYPE = {
    "reading": Reading,
    "reading_frame": DecodedFrame,
    "production_event": ProductionEvent,
    "asset_entry": AssetEntry,
    "dead_letter": DeadLetter,
}
CONTRACT_OF_TOPIC = {topics.READINGS: "reading", topics.EVENTS: "production_event", topics.ASSETS: "asset_entry"}
#: Reasons that need the asset model or a clock: the decoder accepts the message, the edge refuses it.
EDGE_REASONS = {Reason.UNKNOWN_SENSOR, Reason.UNIT_MISMATCH, Reason.TIMESTAMP_OUT_OF_RANGE}
#: The edge clock for the refused examples (their timestamps are on 2025-03-14).
EDGE_NOW = datetime(2025, 3, 14, 8, 16, tzinfo=UTC)

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!--\s*(?P<kind>[\w-]+):\s*(?P<args>[^>]*?)\s*-->\s*\Z")


@dataclass(frozen=True)
class Example:
    """One fenced block of a doc and the marker comment above it."""

    doc: str
    line: int
    lang: str
    kind: str | None
    args: tuple[str, ...]
    body: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def payload(self) -> bytes:
        return self.body.encode("utf-8")


def doc_examples(path: Path) -> list[Example]:
    """Every fenced block of a Markdown file with its marker (kind None when unmarked)."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        marker = _MARKER.search(text[: m.start()])
        body = m.group("body")
        found.append(Example(
            doc=path.name,
            line=text.count("\n", 0, m.start()) + 1,
            lang=m.group("lang"),
            kind=marker.group("kind") if marker else None,
            args=tuple(marker.group("args").split()) if marker else (),
            body=body[:-1] if body.endswith("\n") else body,
        ))
    return found


def all_examples() -> list[Example]:
    return doc_examples(CONTRACTS_MD) + doc_examples(TOPICS_MD)


def contract_examples() -> list[Example]:
    """The examples of valid messages, for this test and the JSON Schema one."""
    return [e for e in all_examples() if e.kind == "contract"]


def _ids(examples: list[Example]) -> list[str]:
    return [f"{e.where}-{'-'.join(e.args)}" for e in examples]


@cache
def _validator() -> EdgeValidator:
    return EdgeValidator(load_plant("reference").by_id)


def refusal(contract: str, payload: bytes, now: datetime) -> tuple[Reason, str] | None:
    """Why gigapulse refuses this message sent as ``contract`` (decoder, then edge), or None."""
    try:
        message = DECODERS[contract](payload)
    except ContractError as exc:
        return exc.reason, exc.detail
    try:
        if isinstance(message, Reading):
            _validator().check_reading(message, now)
        elif isinstance(message, DecodedFrame):
            _validator().check_frame(message, now)
        elif isinstance(message, ProductionEvent):
            _validator().check_event(message, now)
    except ContractError as exc:
        return exc.reason, exc.detail
    return None


def _event_time(contract: str, obj: dict[str, Any]) -> datetime:
    if contract == "reading_frame":
        return datetime.fromtimestamp(max(obj["ts_ms"]) / 1000, tz=UTC)
    return parse_ts(obj["ts"])


def test_docs_have_examples():
    kinds = {e.kind for e in all_examples()}
    assert {"contract", "rejected", "feature"} <= kinds
    assert {e.args[0] for e in contract_examples()} == set(DECODERS), "every contract needs an example"


@pytest.mark.parametrize("example", [e for e in all_examples() if e.lang == "json"],
                         ids=_ids([e for e in all_examples() if e.lang == "json"]))
def test_every_json_example_is_marked(example):
    assert example.kind in ("contract", "feature"), (
        f"{example.where}: a json example needs <!-- contract: NAME --> or <!-- feature: TABLE --> above it")


@pytest.mark.parametrize("example", contract_examples(), ids=_ids(contract_examples()))
def test_contract_example_decodes(example):
    (contract,) = example.args
    assert contract in DECODERS, f"{example.where}: unknown contract {contract!r}"
    decoded = DECODERS[contract](example.payload)
    assert isinstance(decoded, DECODED_TYPE[contract]), f"{example.where}: decoded as {type(decoded).__name__}"
    if contract == "dead_letter":
        return
    # A valid example also passes the edge, with a plant clock in step with the message.
    obj = json.loads(example.payload)
    now = EDGE_NOW if contract == "asset_entry" else _event_time(contract, obj)
    found = refusal(contract, example.payload, now)
    assert found is None, f"{example.where}: refused: {found}"


@pytest.mark.parametrize("example", [e for e in contract_examples() if e.args == ("asset_entry",)],
                         ids=_ids([e for e in contract_examples() if e.args == ("asset_entry",)]))
def test_asset_example_matches_the_reference_plant(example):
    shown = decode_asset(example.payload)
    model = load_plant("reference").by_id[shown.sensor_id]
    assert shown == model, f"{example.where}: differs from schemas/plants/reference.yaml"


@pytest.mark.parametrize("example", [e for e in contract_examples() if e.args == ("dead_letter",)],
                         ids=_ids([e for e in contract_examples() if e.args == ("dead_letter",)]))
def test_dead_letter_example_wraps_a_message_refused_for_its_reason(example):
    letter = decode_dead_letter(example.payload)
    contract = CONTRACT_OF_TOPIC[letter.source_topic]
    assert refusal(contract, letter.payload(), now=letter.ts) == (letter.reason, letter.detail), example.where


def _rejected() -> list[Example]:
    return [e for e in all_examples() if e.kind == "rejected"]


@pytest.mark.parametrize("example", _rejected(), ids=_ids(_rejected()))
def test_rejected_example_is_refused_for_its_reason(example):
    assert example.lang == "text", f"{example.where}: show refused bytes in a ```text block"
    contract, reason = example.args
    found = refusal(contract, example.payload, EDGE_NOW)
    assert found is not None, f"{example.where}: accepted, but the doc says it is refused ({reason})"
    assert found[0] == Reason(reason), f"{example.where}: refused as {found[0]}: {found[1]}"
    if Reason(reason) in EDGE_REASONS:
        DECODERS[contract](example.payload)  # well formed: only the edge refuses it


def test_every_reason_is_documented_with_an_example():
    shown = {Reason(e.args[1]) for e in _rejected()}
    # Oversized needs a megabyte to show; the doc states the limits instead, checked here. An
    # internal error is the worker's bug, which no message shows, and a bridge's reasons describe a
    # plant protocol's bytes, not a Kafka message's.
    assert shown | {Reason.OVERSIZED, Reason.INTERNAL_ERROR} | BRIDGE_REASONS == set(Reason)
    text = CONTRACTS_MD.read_text(encoding="utf-8")
    assert f"{MAX_MESSAGE_BYTES:,} bytes" in text
    assert f"{MAX_FRAME_READINGS:,} readings" in text
    for reason in Reason:
        assert f"| `{reason.value}` |" in text, f"{reason.value} is missing from the reasons table"


def _features() -> list[Example]:
    return [e for e in all_examples() if e.kind == "feature"]


@pytest.mark.parametrize("example", _features(), ids=_ids(_features()))
def test_feature_example_fields_are_table_columns(example):
    (table,) = example.args
    obj = json.loads(example.body)
    assert isinstance(obj, dict)
    columns = set(TABLES[table].schema.names) - set(TABLES[table].partition_cols)
    assert set(obj) <= columns, f"{example.where}: not columns of {table}: {sorted(set(obj) - columns)}"


def _retention(ms: int) -> str:
    return "forever" if ms < 0 else f"{ms / 86_400_000:g} d"


def test_topics_doc_matches_the_catalog():
    text = TOPICS_MD.read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6:
            rows[cells[0].strip("`")] = cells[1:]
    assert set(rows) == set(topics.TOPICS_BY_NAME), "the summary table must list exactly the catalog"
    for spec in topics.TOPICS:
        partitions, cleanup, retention, key, value = rows[spec.name]
        assert (int(partitions), cleanup, retention, key) == (
            spec.partitions, spec.cleanup_policy, _retention(spec.retention_ms), spec.key), spec.name
        assert value.replace("`", "") == spec.value.removesuffix(" (JSON)"), spec.name
        assert re.search(rf"^#+ `{re.escape(spec.name)}`$", text, re.MULTILINE), f"no section for {spec.name}"
        for name, setting in spec.extra_config.items():
            assert f"`{name}={setting}`" in text, f"{spec.name}: {name} is not documented"
