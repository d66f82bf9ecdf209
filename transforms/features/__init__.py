"""Feature math shared by the stream and the batch side: windows, SPC, quality, energy, sensor health.

Why numpy micro-batches: a stream worker has to keep up with ~300,000 readings/s, which a Python loop
per reading cannot do. Every class here takes a whole micro-batch as arrays, and a Python loop only
ever runs over sensors, windows or production events (hundreds per second), never over readings.

Why one module for stream and batch: a Dagster recomputation must produce the numbers the stream
produced. Each state class has a pure twin (``window_stats``, ``sensor_health``, ...) that runs the
same code over a complete batch, so there is one implementation to trust and to test.

Conventions shared by every class:

* Sensors are addressed by a dense int32 key into a :class:`SensorTable` the caller builds from the
  asset model. A frame lists each sensor id once, so ids are looked up once per frame
  (``table.keys_of(frame.sensors)[frame.idx]``) and the hot path never hashes a string.
* Windows are event-time tumbling windows ``[start, start + width)`` aligned to the Unix epoch.
* Watermark = largest event time seen minus ``allowed_lateness_ms``; a window closes, and is emitted
  once, when the watermark reaches its end. A micro-batch is judged against the watermark as it stood
  before the batch (the batch arrived at once), so disorder inside a batch is always tolerated.
  The watermark belongs to an instance (one per stream partition), shared by the sensors it sees: a
  sensor lagging behind its partition shows up as late readings instead of holding every window
  open, and a silent sensor cannot stall the others. Event times must be validated upstream (the
  contracts refuse out-of-range timestamps): one far-future reading would close every window.
* An item whose window has already closed is *late*: it is not folded into any window (that row has
  gone out), it is flagged in the ``late`` mask returned by ``push`` and counted, and the caller keeps
  it in the raw table. Nothing is dropped without being reported.
* State is bounded by sensors and open windows, never by readings.
* Results are dicts of equal-length numpy columns (:data:`Columns`); NaN in a float column means null
  (:func:`to_arrow` turns it into a real null).

One module per kind of feature, as Quix Streams lays out its windows: :mod:`.windows` (watermark
clock, open windows, result types), :mod:`.sensors` (the sensor table), :mod:`.stats`,
:mod:`.health`, :mod:`.spc`, :mod:`.quality` and :mod:`.energy`. Everything public is re-exported
here, so callers write ``from transforms import features as F``.

Every state class has ``snapshot()``, a frozen dataclass of plain numbers, strings, lists and numpy
arrays (JSON lists on disk), and a ``restore(snapshot, ...)`` classmethod that builds an instance
whose later output is the one the snapshotted instance would have produced: the stream's
checkpoints (:mod:`transforms.checkpoint`) store these, never the live objects.
"""

from transforms.features.energy import (
    ENERGY_COLUMNS,
    ENERGY_LINE_COLUMNS,
    EnergyWindows,
    EnergyWindowsSnapshot,
    cell_capacity_kwh,
    energy_intensity,
    energy_windows,
)
from transforms.features.health import (
    SENSOR_HEALTH_COLUMNS,
    SensorHealth,
    SensorHealthSnapshot,
    sensor_health,
)
from transforms.features.quality import (
    QUALITY_COLUMNS,
    QualityWindows,
    QualityWindowsSnapshot,
    quality_windows,
)
from transforms.features.sensors import SensorTable, SensorTableSnapshot
from transforms.features.spc import (
    D2_MOVING_RANGE,
    SPC_COLUMNS,
    SpcState,
    SpcStateSnapshot,
    capability_indices,
    cusum_series,
    ewma_halfwidth,
    ewma_series,
    moving_range_sigma,
    process_capability,
    western_electric,
)
from transforms.features.stats import WINDOW_STATS_COLUMNS, WindowStats, WindowStatsSnapshot, window_stats
from transforms.features.windows import (
    DEFAULT_LATENESS_MS,
    DEFAULT_WIDTH_MS,
    ClockSnapshot,
    Columns,
    Emitted,
    EnergyEmitted,
    OpenWindowsSnapshot,
    to_arrow,
)

__all__ = [
    "Columns", "DEFAULT_WIDTH_MS", "DEFAULT_LATENESS_MS", "D2_MOVING_RANGE", "SensorTable", "Emitted",
    "EnergyEmitted", "to_arrow", "WINDOW_STATS_COLUMNS", "WindowStats", "window_stats", "SENSOR_HEALTH_COLUMNS",
    "SensorHealth", "sensor_health", "ewma_halfwidth", "ewma_series", "cusum_series", "western_electric",
    "moving_range_sigma", "capability_indices", "process_capability", "SPC_COLUMNS", "SpcState",
    "QUALITY_COLUMNS", "QualityWindows", "quality_windows", "ENERGY_COLUMNS", "ENERGY_LINE_COLUMNS",
    "EnergyWindows", "energy_windows", "cell_capacity_kwh", "energy_intensity",
    # snapshots of the state classes, for checkpoints (restore with the class's ``restore``)
    "ClockSnapshot", "OpenWindowsSnapshot", "SensorTableSnapshot", "WindowStatsSnapshot", "SensorHealthSnapshot",
    "SpcStateSnapshot", "QualityWindowsSnapshot", "EnergyWindowsSnapshot",
]
