"""Daily rollups: quality per line and stage, energy per station (day and shift), statistics and
capability per sensor, sensor health, kept in ``<lake>/rollups/<name>/date=YYYY-MM-DD/<name>.parquet``.

* :mod:`.specs`: what each rollup is (contract in ``schemas/rollups.py``, sources, the SQL of a day);
* :mod:`.build`: building a day, source fingerprints, the incremental plan and refresh;
* :mod:`.docs`: the column tables of ``docs/warehouse-rollups.md``.

A scheduled step (``gigapulse rollup``, later a Dagster asset) calls :func:`refresh_rollups`, which
rebuilds the days whose sources changed; ``docs/warehouse-rollups.md`` has the formulas.
"""

from transforms.warehouse.rollups.build import (
    RECORD_KEY,
    ROLLUPS_DIR,
    HiveIndex,
    RefreshReport,
    RollupResult,
    RollupTask,
    SourceIndex,
    build_rollup_day,
    day_inputs,
    days_to_rebuild,
    lake_sources,
    plan_rollups,
    read_record,
    refresh_rollups,
    rollup_days,
    rollup_path,
    rollup_view_sql,
)
from transforms.warehouse.rollups.specs import (
    ROLLUPS,
    RollupSpec,
    Shift,
    SourceDep,
    rollup_specs,
    shifts_of_day,
)

__all__ = ["RECORD_KEY", "ROLLUPS", "ROLLUPS_DIR", "HiveIndex", "RefreshReport", "RollupResult", "RollupSpec",
           "RollupTask", "Shift", "SourceDep", "SourceIndex", "build_rollup_day", "day_inputs", "days_to_rebuild",
           "lake_sources", "plan_rollups", "read_record", "refresh_rollups", "rollup_days", "rollup_path",
           "rollup_specs", "rollup_view_sql", "shifts_of_day"]
