"""What the quality gate is worth: per site, line and day, what pulling the flagged cells before formation
would have caught, cost and saved (the ``quality_gate_value`` table, issue #12).

The champion scores the day's gated cells (their ``cell_features`` rows); cells at or above the
threshold are *flagged*, the cells the gate would have pulled before formation. Their verdicts
(:func:`~transforms.predictive.dataset.read_labels`) say which pulls were right.

**Threshold** (:func:`choose_threshold`). The champion's score at which ``flag_share`` (setting
``GIGAPULSE_GATE_FLAG_SHARE``, 5% by default) of **its own test cells** is flagged, read from the flag
curve of its training record (interpolated between the curve's 0.5% steps). The threshold is fixed
before the day is seen, as a gate on the line would be; the share flagged on the day moves with the
day's risk. A champion whose record has no flag curve (trained before the record kept one) gets the
score at which that share of **the day's cells** is flagged, and the row says so (``threshold_rule``).

**Energy per cell** (:func:`energy_per_cell`). No meter measures one cell. A line's formation (or
aging and end-of-line) energy per cell is the kWh its stations of that stage drew that day
(``energy_features``) divided by the cells that **entered** them that day (``production_events``).
In steady state the cells entering a stage per day are its throughput, so this is the energy a
cell costs there; on a day the line ramps up or down it is off by the change in work in progress. A
stage without meter data on the line gives null, and adds nothing to a saving (said in the row).

**What a pull saves, and what it costs.**

* A **true pull** (flagged, later scrapped or graded C) saves the energy of the stages the cell would
  still have gone through: a cell scrapped at formation would have spent formation energy only, one
  scrapped at end of line or graded C formation and aging. That is ``kwh_saved``.
* Its **critical material** is not saved: a bad cell's material is lost whether it is pulled at the
  gate or scrapped after formation, both go to recycling as a filled cell. ``kg_saved`` is therefore 0
  (null without a bill of materials), and ``kg_in_true_pulls`` shows what the caught cells held.
* A **false pull** (flagged, later good) loses a good cell: its material (``kg_false_pulls``) and the
  value of everything upstream. The formation and aging energy it would not have spent is reported
  apart (``false_pull_kwh``), never netted against ``kwh_saved``: a plant does not count a thrown-away
  good cell as an energy saving.
* Flagged cells without a verdict yet are counted (``flagged_without_verdict``) and judged neither way.

Pure functions over Arrow tables and arrays; :func:`quality_gate_value_day` does the three reads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from schemas.batch import QUALITY_GATE_VALUE
from schemas.contracts import Stage
from transforms.batch.material import MaterialReference, unit_masses
from transforms.predictive.dataset import feature_matrix, is_bad, read_labels

#: The stages after the gate, in flow order: what a cell pulled at the gate does not go through.
POST_GATE_STAGES: tuple[str, ...] = (Stage.FORMATION.value, Stage.AGING_EOL.value)

RULE_RECORD = "champion_test_cells"
RULE_DAY = "day_scores"


@dataclass(frozen=True)
class Threshold:
    """The score at and above which the gate pulls a cell, and how it was chosen."""

    value: float | None
    flag_share: float
    #: ``champion_test_cells`` (the training record's flag curve) or ``day_scores`` (no curve stored).
    source: str
    #: The rule in words, for the row and the asset's metadata.
    rule: str


def choose_threshold(record: Mapping | None, day_scores: np.ndarray, flag_share: float) -> Threshold:
    """The threshold that flags ``flag_share`` of the champion's test cells (its record's flag curve);
    without a curve, the score that flags that share of ``day_scores`` (None on a day without cells)."""
    curves = (record or {}).get("test_curves") or {}
    flag = curves.get("flag")
    if flag:
        shares = np.array([p["share"] for p in flag], dtype=float)
        thresholds = np.array([p["threshold"] for p in flag], dtype=float)
        value = float(np.interp(flag_share, shares, thresholds))
        return Threshold(value, flag_share, RULE_RECORD,
                         f"score flagging {flag_share:.1%} of the champion's {curves.get('cells')} test cells "
                         "(its training record)")
    scores = np.sort(np.asarray(day_scores, dtype=float))[::-1]
    value = float(scores[max(1, int(round(flag_share * len(scores)))) - 1]) if len(scores) else None
    return Threshold(value, flag_share, RULE_DAY,
                     f"score flagging {flag_share:.1%} of the day's {len(scores)} cells: the champion's training "
                     "record has no flag curve (retrain it to fix the threshold before the day)")


def energy_per_cell(rows: list[dict]) -> dict[tuple[str, str], dict[str, float | None]]:
    """kWh per cell of each post-gate stage per (site, line), from :func:`read_stage_energy` rows.

    kWh of the stage's stations / cells that entered them; None without meter data or without cells.
    """
    out: dict[tuple[str, str], dict[str, float | None]] = defaultdict(dict)
    for r in rows:
        ok = r["kwh"] is not None and r["cells"]
        out[(r["site"], r["line"])][r["stage"]] = r["kwh"] / r["cells"] if ok else None
    return dict(out)


def stages_spent(scrap_stage: str | None) -> tuple[str, ...]:
    """The post-gate stages a bad cell went through: up to its scrap stage, all of them if it was graded."""
    if scrap_stage is None:
        return POST_GATE_STAGES
    if scrap_stage in POST_GATE_STAGES:
        return POST_GATE_STAGES[:POST_GATE_STAGES.index(scrap_stage) + 1]
    return ()


@dataclass
class _Line:
    gated: int = 0
    with_verdict: int = 0
    bad: int = 0
    flagged: int = 0
    true_pulls: int = 0
    false_pulls: int = 0
    no_verdict: int = 0
    #: Post-gate stage -> true pulls that would have gone through it.
    true_stage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POST_GATE_STAGES, 0))


def gate_value(features: pa.Table, scores: np.ndarray, labels: pa.Table, threshold: Threshold, model_version: str,
               energy: Mapping[tuple[str, str], Mapping[str, float | None]],
               kg_per_cell: Mapping[str, float | None]) -> list[dict]:
    """``quality_gate_value`` rows (without ``date``), one per site and line of ``features``.

    ``scores`` are the champion's, one per row of ``features``; ``labels`` are :func:`read_labels` rows
    (cells without a verdict may be missing); ``energy`` maps (site, line) to kWh per cell of each
    post-gate stage (:func:`energy_per_cell`); ``kg_per_cell`` maps a site to the critical material of
    one of its cells (None, or absent: no bill of materials for it).
    """
    verdicts = {r["cell_id"]: r for r in labels.to_pylist() if r["verdict_ts"] is not None}
    lines: dict[tuple[str, str], _Line] = {}
    cells = features.select(["cell_id", "site", "line"]).to_pylist()
    if len(cells) != len(scores):
        raise ValueError(f"{len(cells)} cells, {len(scores)} scores")
    for cell, score in zip(cells, scores, strict=True):
        acc = lines.setdefault((cell["site"], cell["line"]), _Line())
        acc.gated += 1
        verdict = verdicts.get(cell["cell_id"])
        bad = verdict is not None and is_bad(verdict)
        if verdict is not None:
            acc.with_verdict += 1
            acc.bad += bad
        if threshold.value is None or not score >= threshold.value:
            continue
        acc.flagged += 1
        if verdict is None:
            acc.no_verdict += 1
        elif bad:
            acc.true_pulls += 1
            for stage in stages_spent(verdict["scrap_stage"]):
                acc.true_stage[stage] += 1
        else:
            acc.false_pulls += 1
    rows = []
    for (site, line), acc in sorted(lines.items()):
        per_cell = energy.get((site, line), {})
        metered = {s: per_cell[s] for s in POST_GATE_STAGES if per_cell.get(s) is not None}
        kg = kg_per_cell.get(site)
        judged = acc.true_pulls + acc.false_pulls
        rows.append({
            "site": site, "line": line, "model_version": model_version, "threshold": threshold.value,
            "flag_share": threshold.flag_share, "threshold_source": threshold.source,
            "threshold_rule": threshold.rule,
            "cells_gated": acc.gated, "cells_with_verdict": acc.with_verdict, "cells_bad": acc.bad,
            "cells_flagged": acc.flagged, "true_pulls": acc.true_pulls, "false_pulls": acc.false_pulls,
            "flagged_without_verdict": acc.no_verdict,
            "bad_caught_share": acc.true_pulls / acc.bad if acc.bad else None,
            "precision": acc.true_pulls / judged if judged else None,
            "formation_kwh_per_cell": per_cell.get(Stage.FORMATION.value),
            "aging_kwh_per_cell": per_cell.get(Stage.AGING_EOL.value),
            "kwh_saved": sum(acc.true_stage[s] * v for s, v in metered.items()) if metered else None,
            "false_pull_kwh": acc.false_pulls * sum(metered.values()) if metered else None,
            "kg_per_cell": kg,
            "kg_in_true_pulls": None if kg is None else acc.true_pulls * kg,
            "kg_saved": None if kg is None else 0.0,
            "kg_false_pulls": None if kg is None else acc.false_pulls * kg,
        })
    return rows


# --------------------------------------------------------------------------- reads and the day

_GATED_SQL = "SELECT cell_id, site, line, gate_ts, features FROM cell_features WHERE date = $day ORDER BY cell_id"

_STAGE_ENERGY_SQL = """
WITH energy AS (
    SELECT site, line, stage, sum(kwh) AS kwh
    FROM energy_features
    WHERE date = $day AND list_contains($stages, stage) AND kwh IS NOT NULL
    GROUP BY ALL
), entered AS (
    SELECT site, line, stage, count(DISTINCT unit_id) AS cells
    FROM production_events
    WHERE date = $day AND unit_type = 'cell' AND kind = 'enter' AND list_contains($stages, stage)
    GROUP BY ALL
)
SELECT site, line, stage, energy.kwh, coalesce(entered.cells, 0) AS cells
FROM entered FULL JOIN energy USING (site, line, stage)
ORDER BY site, line, stage
"""


def read_stage_energy(con: duckdb.DuckDBPyConnection, day: date) -> list[dict]:
    """Per site, line and post-gate stage: kWh its stations drew on ``day`` and the cells that entered them."""
    table = con.sql(_STAGE_ENERGY_SQL, params={"day": day, "stages": list(POST_GATE_STAGES)}).to_arrow_table()
    return table.to_pylist()


def score_cells(features: pa.Table, model) -> np.ndarray:
    """The champion's score of each ``cell_features`` row (the live score's matrix: the model's columns)."""
    if not features.num_rows:
        return np.array([], dtype=float)
    X, _ = feature_matrix(features.column("features").to_pylist(), names=list(model.names))
    return model.score(X)


def critical_kg_per_cell(reference: MaterialReference) -> dict[str, float | None]:
    """kg of critical raw material in one cell of each site (every element of its chemistry's bill of
    materials, as the material ledger books a scrapped cell); None for a site whose chemistry it lacks."""
    out: dict[str, float | None] = {}
    for site, product in reference.products.items():
        chem = reference.bom.chemistries.get(product.chemistry)
        out[site] = None if chem is None else float(sum(unit_masses(chem, product, "cell", None).values()))
    return out


@dataclass(frozen=True)
class GateValueDay:
    """One day of ``quality_gate_value`` and the threshold it was judged at."""

    rows: pa.Table
    threshold: Threshold


def quality_gate_value_day(con: duckdb.DuckDBPyConnection, day: date, model, record: Mapping | None,
                           flag_share: float, kg_per_cell: Mapping[str, float | None],
                           features: pa.Table | None = None) -> GateValueDay:
    """The day's rows: its gated cells scored by ``model`` (the champion, ``record`` its training record),
    their verdicts (those landed by now, as training reads them) and the post-gate stages' energy per cell.

    ``features`` are the day's ``cell_features`` rows when the caller holds them already (the test lake
    lands them before its catalog lists the table); by default they are read from the catalog.
    """
    if features is None:
        features = con.sql(_GATED_SQL, params={"day": day}).to_arrow_table()
    scores = score_cells(features, model)
    threshold = choose_threshold(record, scores, flag_share)
    since = datetime.combine(day, time(), UTC)
    cells = features.column("cell_id").to_pylist()
    labels = read_labels(con, cells, since, since + timedelta(days=1)) if cells else pa.table({"cell_id": []})
    rows = gate_value(features, scores, labels, threshold, model.version,
                      energy_per_cell(read_stage_energy(con, day)), kg_per_cell)
    return GateValueDay(pa.Table.from_pylist(rows, schema=QUALITY_GATE_VALUE.file_schema), threshold)
