"""Predictive-quality domain: each day's ``cell_features`` (:mod:`.features`), and the gate models trained on
them, their promotion check and the champion alias (:mod:`.models`)."""

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

defs = dg.Definitions(assets=[cell_features, gate_model, gate_champion], asset_checks=[promotable],
                      jobs=[cell_features_job, gate_model_job], schedules=[cell_features_daily, gate_model_daily])

__all__ = ["PROMOTABLE", "cell_features", "cell_features_daily", "cell_features_job", "defs", "gate_champion",
           "gate_model", "gate_model_daily", "gate_model_job", "promotable"]
