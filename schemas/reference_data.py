"""Reference data of the batch audits, kept as YAML beside the plant files and loaded into typed models.

Three files in ``schemas/reference/``:

* ``reference_profile.yaml``: what a modern station of each stage measures, per station kind (a
  cathode coater measures residual solvent, an anode coater residual moisture). It is **derived** from
  the reference plant's asset model by :func:`derive_reference_profile` and checked in; a test holds the
  file equal to the derivation. Kept as data rather than derived at run time so that the yardstick
  every audit is measured against is a reviewed file: an edit to the reference plant (a sensor added
  for a simulation experiment) fails that test instead of silently moving every plant's score, and a
  site can swap in its own engineering standard (``GIGAPULSE_AUDIT_REFERENCE_PROFILE``).
* ``retrofit_costs.yaml``: unit prices of sensors, meters, gateways and engineering hours.
* ``readiness.yaml``: band thresholds and weights of the readiness dimensions and the score limits of
  the acatech stages.

Regenerate the profile with
``python -c "from schemas.reference_data import write_reference_profile; write_reference_profile()"``.
"""

from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.asset_model import Plant, SensorTemplate
from schemas.contracts import SignalClass, Stage

REFERENCE_DIR = "reference"
_M = TypeVar("_M", bound=BaseModel)


class ReferenceDataError(ValueError):
    """A reference file that cannot be loaded; the message names the file and the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- reference profile

class ProfileParameter(_Frozen):
    """One parameter a modern station of a kind measures, with how many sensors and how fast."""

    parameter: str
    sensors: int = Field(ge=1, description="Sensors of this parameter on one station.")
    rate_hz: float = Field(gt=0, description="Nominal sampling rate of those sensors.")
    signal_class: SignalClass
    ctq: bool = False
    energy_meter: bool = False


class StationProfile(_Frozen):
    """What one kind of station (a template id such as ``coat-c``) of a stage measures."""

    kind: str
    stage: Stage
    equipment: str
    parameters: list[ProfileParameter] = Field(min_length=1)

    @property
    def sensors(self) -> int:
        return sum(p.sensors for p in self.parameters)

    @property
    def metered(self) -> bool:
        return any(p.energy_meter for p in self.parameters)


class ReferenceProfile(_Frozen):
    """The reference profile: station kinds, each under its stage."""

    derived_from: str = Field(description="Plant the profile was derived from.")
    stations: list[StationProfile] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_kinds(self) -> ReferenceProfile:
        kinds = [s.kind for s in self.stations]
        if len(kinds) != len(set(kinds)):
            raise ValueError("station kinds must be unique")
        return self

    def for_station(self, stage: str, kind: str, parameters: set[str]) -> StationProfile | None:
        """The profile a plant's station is held against: its own kind if the profile has it, else the
        kind of its stage sharing the most parameters with it (ties: the first in file order); None
        for a stage the profile does not cover (site utilities)."""
        same_stage = [s for s in self.stations if s.stage.value == stage]
        for s in same_stage:
            if s.kind == kind:
                return s
        if not same_stage:
            return None
        return max(same_stage, key=lambda s: len(parameters & {p.parameter for p in s.parameters}))


def station_kind(station: str, line: str) -> str:
    """The template id of a station: ``L1-coat-c`` on line ``L1`` is ``coat-c``."""
    prefix = f"{line}-"
    return station[len(prefix):] if station.startswith(prefix) else station


def derive_reference_profile(plant: Plant) -> ReferenceProfile:
    """The profile of every station kind of ``plant`` (meant for the reference plant).

    Counts are per station: a kind repeated on every line contributes one station's sensors. Every
    sensor of a parameter on a station template shares its rate and flags, so the template's are used.
    """
    stations: list[StationProfile] = []
    for st in plant.template.stations:
        counts: Counter[str] = Counter()
        first: dict[str, SensorTemplate] = {}
        for sens in st.sensors:
            counts[sens.parameter] += sens.count
            first.setdefault(sens.parameter, sens)
        params = [ProfileParameter(parameter=name, sensors=n, rate_hz=first[name].rate_hz,
                                   signal_class=first[name].signal_class, ctq=first[name].ctq,
                                   energy_meter=first[name].energy_meter)
                  for name, n in counts.items()]
        stations.append(StationProfile(kind=st.id, stage=st.stage, equipment=st.equipment, parameters=params))
    return ReferenceProfile(derived_from=plant.name, stations=stations)


# --------------------------------------------------------------------------- retrofit costs

class RetrofitCosts(_Frozen):
    """Unit prices of a retrofit, EUR; every default is an assumption stated in docs/batch.md."""

    currency: Literal["EUR"] = "EUR"
    sensor_eur: dict[SignalClass, float] = Field(description="Installed hardware price of one sensor by signal class.")
    energy_meter_eur: float = Field(ge=0)
    gateway_eur: float = Field(ge=0, description="Edge gateway (OPC UA / MQTT) for one station without an open protocol.")
    engineering_hours_sensor: float = Field(ge=0)
    engineering_hours_meter: float = Field(ge=0)
    engineering_hours_gateway: float = Field(ge=0)
    engineering_rate_eur_h: float = Field(ge=0)
    open_protocols: list[str] = Field(description="Protocols that need no gateway to reach the platform.")

    @model_validator(mode="after")
    def _every_class_priced(self) -> RetrofitCosts:
        missing = sorted(c.value for c in SignalClass if c not in self.sensor_eur)
        if missing:
            raise ValueError(f"sensor_eur has no price for {', '.join(missing)}")
        return self


# --------------------------------------------------------------------------- readiness bands

class DimensionBands(_Frozen):
    """How one readiness dimension's measured figure maps to a 0-5 band.

    ``thresholds`` are the figures bands 1 to 5 require, in order; ``higher_is_better`` says whether a
    figure must reach (>=) or stay under (<=) them. The band is the number of thresholds met.
    """

    weight: float = Field(ge=0)
    higher_is_better: bool = True
    thresholds: list[float] = Field(min_length=5, max_length=5)

    @model_validator(mode="after")
    def _monotonic(self) -> DimensionBands:
        t = self.thresholds
        ordered = all(a <= b for a, b in zip(t, t[1:], strict=False)) if self.higher_is_better else \
            all(a >= b for a, b in zip(t, t[1:], strict=False))
        if not ordered:
            raise ValueError("thresholds must get stricter from band 1 to band 5")
        return self


class MaturityStage(_Frozen):
    """An acatech Industrie 4.0 maturity stage and the overall score it needs."""

    stage: int = Field(ge=1, le=6)
    label: str
    min_score: float = Field(ge=0, le=5)


class ReadinessConfig(_Frozen):
    """Bands and weights of every dimension, and the acatech stages by overall score."""

    dimensions: dict[str, DimensionBands] = Field(min_length=1)
    stages: list[MaturityStage] = Field(min_length=6, max_length=6)

    @model_validator(mode="after")
    def _stages_ordered(self) -> ReadinessConfig:
        if [s.stage for s in self.stages] != list(range(1, 7)):
            raise ValueError("stages must be listed 1 to 6")
        mins = [s.min_score for s in self.stages]
        if mins[0] != 0 or any(a > b for a, b in zip(mins, mins[1:], strict=False)):
            raise ValueError("stage min_score must start at 0 and not decrease")
        if sum(d.weight for d in self.dimensions.values()) <= 0:
            raise ValueError("at least one dimension needs a positive weight")
        return self


# --------------------------------------------------------------------------- loading

def reference_path(name: str) -> Path:
    """The shipped reference file ``name`` (e.g. ``retrofit_costs.yaml``)."""
    return Path(str(resources.files("schemas") / REFERENCE_DIR / name))


def _load(model: type[_M], path: Path) -> _M:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ReferenceDataError(f"reference file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ReferenceDataError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ReferenceDataError(f"{path}: {loc}: {err['msg']}") from None


def load_reference_profile(path: Path | None = None) -> ReferenceProfile:
    return _load(ReferenceProfile, path or reference_path("reference_profile.yaml"))


def load_retrofit_costs(path: Path | None = None) -> RetrofitCosts:
    return _load(RetrofitCosts, path or reference_path("retrofit_costs.yaml"))


def load_readiness_config(path: Path | None = None) -> ReadinessConfig:
    return _load(ReadinessConfig, path or reference_path("readiness.yaml"))


def profile_yaml(profile: ReferenceProfile) -> str:
    """The profile as the checked-in file writes it: one flow mapping per parameter."""
    lines = [
        "# Reference profile: what a modern station of each kind measures (sensors per station).",
        "# Generated from the reference plant's asset model by schemas.reference_data.derive_reference_profile;",
        "# tests/schemas/test_reference_data.py holds it equal to the derivation. Do not edit by hand.",
        f"derived_from: {profile.derived_from}",
        "stations:",
    ]
    for st in profile.stations:
        lines += [f"  - kind: {st.kind}", f"    stage: {st.stage.value}", f"    equipment: {st.equipment}",
                  "    parameters:"]
        for p in st.parameters:
            lines.append(f"      - {{parameter: {p.parameter}, sensors: {p.sensors}, rate_hz: {p.rate_hz:g}, "
                         f"signal_class: {p.signal_class.value}, ctq: {str(p.ctq).lower()}, "
                         f"energy_meter: {str(p.energy_meter).lower()}}}")
    return "\n".join(lines) + "\n"


def write_reference_profile(path: Path | None = None) -> Path:
    """Rewrite the shipped profile from the reference plant (after a deliberate change to it)."""
    from schemas.asset_model import load_plant

    path = path or reference_path("reference_profile.yaml")
    path.write_text(profile_yaml(derive_reference_profile(load_plant("reference"))))
    return path
