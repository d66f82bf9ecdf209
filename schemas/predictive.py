"""Contracts of predictive quality (issue #12): the simulator's ground truth at the quality gate.

The gate is the moment a cell leaves electrolyte filling, before formation and aging, the longest
and most energy-hungry steps. ``CELL_TRUTH`` is what ``gigapulse simulate --truth-out FILE`` writes
(outside Kafka, for evaluation only): each cell's true probability of ending scrapped or graded C, as
computed by :mod:`ingestion.simulator.truth`, with its parts.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.batch import col

_REASON_MAP = pa.map_(pa.string(), pa.float64())

CELL_TRUTH = pa.schema([
    col("cell_id", pa.string(), "Serial of the cell (unit_id of its events).", nullable=False),
    col("site", pa.string(), "Site code.", nullable=False),
    col("line", pa.string(), "Cell line.", nullable=False),
    col("gate_ts", pa.timestamp("ms", tz="UTC"), "When the cell left filling (its leave event's ts), UTC.",
        nullable=False),
    col("p_bad", pa.float64(), "True probability, at the gate, that the cell ends scrapped or graded C (0-1).",
        nullable=False),
    col("p_formation_scrap", pa.float64(), "Probability that a scrap draw at formation fires (0-1).", nullable=False),
    col("p_eol_draw", pa.float64(), "Probability that an end-of-line scrap draw fires (0-1).", nullable=False),
    col("p_measured_bad", pa.float64(), "Probability that, no draw firing, the end-of-line measurements miss "
        "grade B (0-1).", nullable=False),
    col("reason_p", _REASON_MAP, "Per scrap reason drawn after the gate: the chance of that draw firing (0-1).",
        nullable=False),
    col("risk", _REASON_MAP, "Per scrap reason: the risk the cell carries at the gate (weight x out-of-spec "
        "share, summed over the stations its units visited).", nullable=False),
    col("electrode_risk", pa.float64(), "Risk inherited from the cell's electrode rolls, all reasons summed.",
        nullable=False),
    col("total_risk", pa.float64(), "All risk at the gate, all reasons summed.", nullable=False),
])
