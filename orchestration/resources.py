"""What every domain's assets share: the warehouse resource and the pool of DuckDB-file writers.

The resource resolves its paths from the same settings as the stream workers
(:class:`transforms.settings.DataSettings`, ``GIGAPULSE_DATA_DIR``), so a batch job reads the lake the
workers write without a second default.
"""

# No ``from __future__ import annotations``: Dagster inspects resource annotations as real types.
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

#: Dagster pool of the assets that write the DuckDB catalog or the lake's maintenance state. DuckDB
#: allows one writer per file; the compose instance sets this pool's limit to 1 (infra/dagster/dagster.yaml).
DUCKDB_POOL = "gigapulse_duckdb_writer"


@dataclass(frozen=True)
class WarehousePaths:
    """Where the Parquet lake lives and which DuckDB file catalogs it."""

    lake_root: Path
    db_path: Path


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
