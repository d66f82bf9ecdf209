"""Deterministic digital twin of a cell plant: sensor frames and production events from a plant file.

Ingest benchmarks, stream tests and the demo need a plant that behaves like one (drifting dryers,
dew-point excursions, scrap that follows out-of-spec process data) and that replays bit for bit
from a seed. The simulator is driven only by a loaded :class:`schemas.asset_model.Plant`: sensors,
their rates and spec limits come from the asset model, their dynamics from the opaque ``sim:``
blocks that only this package interprets.

Speed and memory: readings are generated per tick for all sensors at once with numpy (no Python
loop per reading); state is a handful of arrays sized by the number of sensors, plus the units in
flight, so memory does not grow with the simulated duration.

Time compression: slurry batches take hours, formation and aging take days to weeks. The plant's
``sim.timing_s`` compresses them into simulated seconds (defaults: a 120 s slurry batch, a 30 s
roll, 40 s of formation and 40 s of aging), and the line starts with a few electrode rolls from
stock (``...-STOCKnn``, without history), so the first graded cells appear after about 90 simulated seconds and the electrode
genealogy of every cell made from the line's own rolls is complete after about 5 minutes. The flow
rate (cells per hour) is the plant's real one, so energy per cell and scrap rates are realistic.

Sensor ``sim`` keys (all optional):

* ``base``: value when the template has no target; ``noise``: gaussian sigma (default: a twelfth
  of the spec width, i.e. Cp 2); ``drift`` / ``drift_tau_s``: stationary sigma and time constant
  of a mean-reverting random walk; ``wave`` / ``wave_period_s``: sinusoid amplitude and period.
* ``setpoint_step`` / ``setpoint_every_s``: occasional setpoint changes of up to +-step.
* ``fault`` / ``fault_every_s`` / ``fault_s`` / ``fault_sign``: step faults of about ``fault``
  (signed; ``fault_sign: both`` picks a random sign), mean duration ``fault_s`` (at most three times).
* ``couple``: ``[{source: parameter, gain: g}]`` adds g times the mean deviation from target of that
  parameter on the same station (dryer temperature -> residual moisture, line load -> density).
  Sources contribute their own dynamics only; couplings do not chain.
* ``min`` / ``max``: physical bounds the value is clipped to.
* ``scrap``: ``{reason, weight, during}``: while a unit is at this sensor's station (or, with
  ``during``, at any station of those stages, e.g. the dry room during filling), the share of this
  sensor's samples outside its spec limits times ``weight`` adds to the unit's scrap probability for
  ``reason``.
* energy meters: ``power_kw`` (mean power of what the meter measures), ``power_noise`` (relative).

Plant ``sim`` keys: ``timing_s``, ``routes`` (station ids of each electrode and of the cell route),
``scrap`` (reason -> detection stage and base probability), ``unit_measures`` (parameter -> noise of
the per-unit measure event), ``cell_model`` (overrides of :class:`CellModel`), ``noise_scale``,
``drift_scale``, ``fault_rate_scale``, and the legacy traits ``polling_gaps``, ``stuck``,
``clock_skew``, ``late``, ``manual_quality`` and ``quality_flags``.

Unit ids are serials that carry the run's start and seed, so no two runs share one; the format is
in ``serials``.

The package follows those parts: ``config`` (the typed plant ``sim`` settings), ``output`` (frames,
ticks, summary), ``signals`` (sensor dynamics and sampling), ``edge`` (legacy edge effects),
``units`` (unit flow, genealogy, scrap and grading), ``serials`` (unit ids) and ``tick``
(:class:`PlantSimulator`, the loop that drives them). Import from the package, not from its modules.
"""

from ingestion.simulator.config import DEFAULT_START, CellModel, SimulatorConfigError
from ingestion.simulator.output import FrameBatch, SimSummary, SimTick
from ingestion.simulator.serials import UnitSerial, run_code
from ingestion.simulator.tick import PlantSimulator

__all__ = [
    "DEFAULT_START", "CellModel", "FrameBatch", "PlantSimulator", "SimSummary", "SimTick",
    "SimulatorConfigError", "UnitSerial", "run_code",
]
