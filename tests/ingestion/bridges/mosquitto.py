"""The ``mosquitto`` fixture of the MQTT bridge tests: the project's own private Mosquitto
(:mod:`infra.mqtt_broker`), fresh per test (starting one takes a few milliseconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.mqtt_broker import MosquittoServer, running_mosquitto

__all__ = ["MosquittoServer", "mosquitto", "running_mosquitto"]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    with running_mosquitto(tmp_path) as server:
        yield server
