"""The shared resources resolve from the stream's settings when a run asks, with one default each."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.resources import KAFKA_BOOTSTRAP, KafkaConnection, KafkaResource, WarehouseResource, defs


def test_warehouse_paths_follow_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path))
    paths = WarehouseResource().paths()
    assert paths.lake_root == tmp_path / "lake"
    assert paths.db_path == tmp_path / "gigapulse.duckdb"

    monkeypatch.delenv("GIGAPULSE_DATA_DIR")
    paths = WarehouseResource().paths()
    # One default data directory with the stream workers: var/ of the checkout, wherever the run starts.
    from transforms.settings import DataSettings
    assert (paths.lake_root, paths.db_path) == (DataSettings().lake_root, DataSettings().db_path)
    assert paths.lake_root.is_absolute()

    explicit = WarehouseResource(lake_root="/l", db_path="/w.duckdb").paths()
    assert (explicit.lake_root, explicit.db_path) == (Path("/l"), Path("/w.duckdb"))


def test_kafka_defaults_to_the_streams_cluster_when_unset(monkeypatch):
    monkeypatch.delenv("GIGAPULSE_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("GIGAPULSE_CONNECT_TIMEOUT_S", raising=False)
    from ingestion.settings import KafkaSettings

    assert KafkaResource().connection() == KafkaConnection(KafkaSettings().bootstrap_servers,
                                                           KafkaSettings().connect_timeout_s)


def test_kafka_reads_the_env_var_when_a_run_asks(monkeypatch):
    resource = KafkaResource()  # built before the variable is set, as the definitions are
    monkeypatch.setenv(KAFKA_BOOTSTRAP.env_var_name, " kafka:9092,kafka-2:9092 ")
    monkeypatch.setenv("GIGAPULSE_CONNECT_TIMEOUT_S", "12")
    assert resource.connection() == KafkaConnection("kafka:9092,kafka-2:9092", 12.0)
    # Explicit values (a test, the launchpad) win over the environment.
    assert KafkaResource(bootstrap_servers="h:1", connect_timeout_s=1.5).connection() == KafkaConnection("h:1", 1.5)


def test_kafka_refuses_an_empty_address(monkeypatch):
    monkeypatch.setenv(KAFKA_BOOTSTRAP.env_var_name, "  ")
    with pytest.raises(ValueError, match="GIGAPULSE_BOOTSTRAP_SERVERS is empty"):
        KafkaResource().connection()


def test_shared_resources_are_bound_under_the_keys_assets_ask_for():
    assert isinstance(defs.resources["warehouse"], WarehouseResource)
    assert isinstance(defs.resources["kafka"], KafkaResource)
