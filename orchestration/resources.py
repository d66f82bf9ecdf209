"""What every domain's assets share: the warehouse and Kafka resources, and the pool of DuckDB-file writers.

The resources resolve their values from the same settings as the stream workers
(:class:`transforms.settings.DataSettings`, ``GIGAPULSE_DATA_DIR``; ``GIGAPULSE_BOOTSTRAP_SERVERS``), so a
batch job reads the lake the workers write, and talks to the cluster they consume, without a second default.
:data:`defs` binds them under the keys every domain's assets ask for (``warehouse``, ``kafka``); the root
``orchestration.definitions`` merges it once, so domains do not bind (and conflict over) their own copies.
"""

# No ``from __future__ import annotations``: Dagster inspects resource annotations as real types.
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

#: The Kafka cluster's address, the variable the stream workers and the CLI read
#: (:class:`ingestion.settings.KafkaSettings`).
KAFKA_BOOTSTRAP = dg.EnvVar("GIGAPULSE_BOOTSTRAP_SERVERS")

#: Dagster pool of the assets that write the DuckDB catalog or the lake's maintenance state. DuckDB
#: allows one writer per file; the compose instance sets this pool's limit to 1 (infra/dagster/dagster.yaml).
DUCKDB_POOL = "gigapulse_duckdb_writer"


@dataclass(frozen=True)
class WarehousePaths:
    """Where the Parquet lake lives and which DuckDB file catalogs it."""

    lake_root: Path
    db_path: Path

    @property
    def report_dir(self) -> Path:
        """The plant reports, beside the warehouse file (``gigapulse report``'s default)."""
        return self.db_path.parent / "report"

    def report_link(self) -> dg.MetadataValue:
        """Asset metadata linking the plant reports (one ``<site>.html`` per plant)."""
        return dg.MetadataValue.path(str(self.report_dir))


class WarehouseResource(dg.ConfigurableResource):
    """The lake and the DuckDB file, shared by every asset that reads or catalogs the warehouse.

    Unset paths follow ``GIGAPULSE_DATA_DIR`` (``/data`` in docker-compose, ``var/`` of the checkout by
    default), read when a run asks for the paths rather than when the definitions are imported, so one
    code location serves every environment.
    """

    lake_root: str | None = None
    db_path: str | None = None

    def paths(self) -> WarehousePaths:
        """The resolved paths for this run."""
        from transforms.settings import DataSettings

        data = DataSettings()
        return WarehousePaths(
            lake_root=Path(self.lake_root) if self.lake_root else data.lake_root,
            db_path=Path(self.db_path) if self.db_path else data.db_path,
        )


@dataclass(frozen=True)
class KafkaConnection:
    """Where the Kafka cluster is, and how long to wait for it to answer."""

    bootstrap_servers: str
    connect_timeout_s: float


class KafkaResource(dg.ConfigurableResource):
    """The Kafka cluster the stream consumes, for assets that compare the lake with the topics.

    An unset ``bootstrap_servers`` is read from :data:`KAFKA_BOOTSTRAP` when a run asks for it, with
    the stream's default (``127.0.0.1:9092``) when the variable is unset too. Passing the ``EnvVar`` as
    the field's value instead would make every run that uses the resource fail on a laptop where the
    variable is not set (Dagster resolves an ``EnvVar`` field at launch and refuses an unset one).
    """

    bootstrap_servers: str | None = None
    connect_timeout_s: float | None = None

    def connection(self) -> KafkaConnection:
        """The resolved cluster address for this run (nothing connects here)."""
        from ingestion.settings import KafkaSettings

        defaults = KafkaSettings.model_fields
        servers = self.bootstrap_servers or KAFKA_BOOTSTRAP.get_value(defaults["bootstrap_servers"].default)
        timeout = self.connect_timeout_s if self.connect_timeout_s is not None else KafkaSettings().connect_timeout_s
        if not servers or not servers.strip():
            raise ValueError(f"{KAFKA_BOOTSTRAP.env_var_name} is empty: expected host:port[,host:port...]")
        return KafkaConnection(bootstrap_servers=servers.strip(), connect_timeout_s=timeout)


#: The shared resources, under the keys assets ask for; merged once by ``orchestration.definitions``.
defs = dg.Definitions(resources={"warehouse": WarehouseResource(), "kafka": KafkaResource()})
