"""Shared fixtures: one real Apache Kafka broker (KRaft) for the whole test session.

The broker is the project's own (``infra.broker``): fetched from Maven Central into the cache on
first use and started on free loopback ports in a temporary directory, so tests never touch a
developer's broker on 9092 and leave no process behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from infra import temporary
from infra.broker import BrokerSettings
from infra.temporary import temporary_broker

# Shared 2-core machines stall now and then: a per-example deadline would make property tests flaky.
hypothesis_settings.register_profile("gigapulse", deadline=None, print_blob=True)
hypothesis_settings.load_profile("gigapulse")


def free_port() -> int:
    """A TCP port that was free a moment ago on loopback."""
    return temporary.free_port()


@contextmanager
def running_broker(data_dir: Path) -> Iterator[BrokerSettings]:
    """The project's broker on free loopback ports in ``data_dir``, with the topic catalog applied."""
    with temporary_broker(data_dir) as settings:
        yield settings


@pytest.fixture(scope="session")
def kafka(tmp_path_factory) -> Iterator[BrokerSettings]:
    """A running broker with the topic catalog applied; stopped at the end of the session."""
    with running_broker(tmp_path_factory.mktemp("kafka")) as settings:
        yield settings


@pytest.fixture
def bootstrap(kafka: BrokerSettings) -> str:
    return kafka.bootstrap


@pytest.fixture
def unique_topic(kafka: BrokerSettings):
    """Factory of fresh topic names (created with the given partitions), so tests don't share data."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)

    def make(prefix: str = "test", partitions: int = 1) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:10]}"
        admin.create_topics([NewTopic(name, partitions, 1)], wait_for_metadata=True)
        return name

    yield make
    admin.close()


@pytest.fixture(scope="session")
def simulated_warehouse(tmp_path_factory) -> Path:
    """The warehouse file of a lake the simulator made (see ``tests/simulated_lake.py``); read-only use only."""
    from tests.simulated_lake import build_simulated_lake

    return build_simulated_lake(tmp_path_factory.mktemp("simulated"))


@pytest.fixture(scope="session")
def two_plant_warehouse(tmp_path_factory) -> Path:
    """The warehouse file of a lake holding the reference plant and the legacy plant side by side
    (source partitions 0 and 1), as the batch side's audits and scores compare them; read-only use only."""
    from tests.simulated_lake import build_simulated_lake

    return build_simulated_lake(tmp_path_factory.mktemp("two_plants"), plants=("reference", "legacy"))


@pytest.fixture(scope="session")
def corrupted_warehouse(simulated_warehouse, tmp_path_factory):
    """A copy of ``simulated_warehouse`` with the faults the data-quality checks exist to catch
    (``tests/corrupted_lake.py``): a :class:`tests.corrupted_lake.Corruption`; read-only use only."""
    from tests.corrupted_lake import corrupt

    return corrupt(simulated_warehouse, tmp_path_factory.mktemp("corrupted") / "warehouse")
