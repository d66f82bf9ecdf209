"""Predictive-quality domain: each day's ``cell_features`` (:mod:`.features`), the gate models trained on
them, their promotion check and the champion alias (:mod:`.models`), and what the champion's gate is worth
(:mod:`.value`)."""

import dagster as dg

from orchestration.predictive.features import cell_features, cell_features_daily, cell_features_job
from orchestration.predictive.models import (
    PROMOTABLE,
    gate_champion,
    gate_model,
    gate_model_daily,
    gate_model_job,
    promotable,
)
from orchestration.predictive.value import (
    quality_gate_value,
    quality_gate_value_daily,
    quality_gate_value_job,
)

defs = dg.Definitions(assets=[cell_features, gate_model, gate_champion, quality_gate_value], asset_checks=[promotable],
                      jobs=[cell_features_job, gate_model_job, quality_gate_value_job],
                      schedules=[cell_features_daily, gate_model_daily, quality_gate_value_daily])

__all__ = ["PROMOTABLE", "cell_features", "cell_features_daily", "cell_features_job", "defs", "gate_champion",
           "gate_model", "gate_model_daily", "gate_model_job", "promotable", "quality_gate_value",
           "quality_gate_value_daily", "quality_gate_value_job"]
