"""docs/connectors.md keeps up with the code: every bridge setting in its table with its default; the Modbus example loads."""

from __future__ import annotations

import re
from pathlib import Path

from ingestion.bridges.settings import BridgeSettings

DOC = Path(__file__).resolve().parents[3] / "docs" / "connectors.md"


def test_the_settings_table_lists_every_setting_with_its_default():
    text = DOC.read_text()
    table = text[text.index("## Settings"):text.index("## Source addresses")]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", table, re.MULTILINE))
    assert set(rows) == set(BridgeSettings.model_fields)
    for name, field in BridgeSettings.model_fields.items():
        default = field.default
        if default is None or name == "buffer_dir":
            continue
        value = getattr(default, "value", default)
        shown = f"{value:g}" if isinstance(value, float) else str(value).lower()
        assert f"`{shown}`" in rows[name], (name, rows[name])


def test_the_modbus_example_is_a_valid_configuration():
    import yaml

    from ingestion.bridges.config import ModbusConfig

    text = DOC.read_text()
    section = text[text.index("## Modbus TCP"):]
    example = section[section.index("```yaml") + len("```yaml"):section.index("```", section.index("```yaml") + 3)]
    cfg = ModbusConfig.model_validate(yaml.safe_load(example))
    assert cfg.connections == 1 and cfg.endpoint(cfg.blocks[0]) == ("10.20.0.13", 502)
