"""Data quality of the lake tables: Great Expectations 1.x suites over DuckDB aggregates, per UTC day.

``profiles`` (DuckDB reduces a day to small frames), ``limits`` (physical limits by unit), ``suites``
(the named checks as GX expectations, and their outcomes in words) and ``results`` (running a table's
day, landing ``dq_results``, the summary for the report). The Dagster asset checks that run them live
in ``orchestration/dq``. Import from the package.
"""

from transforms.batch.dq.limits import PHYSICAL_LIMITS, PhysicalLimit
from transforms.batch.dq.results import TableQuality, check_table_day, land_results, quality_summary
from transforms.batch.dq.suites import CHECKED_TABLES, CHECKS, Check, CheckOutcome, checks_of

__all__ = [
    "CHECKED_TABLES", "CHECKS", "PHYSICAL_LIMITS", "Check", "CheckOutcome", "PhysicalLimit", "TableQuality",
    "check_table_day", "checks_of", "land_results", "quality_summary",
]
